"""Progress that suits where it goes: a live bar on a terminal, a log line now and then elsewhere.

A bar redrawn on every step is what a person at a terminal wants, but sent to
a file it is megabytes of frames (``\\r``-separated, unreadable). So every
progress display in autocompress comes from :func:`progress_bar`: a tqdm bar
when stderr is a terminal (or a notebook), else a tqdm whose display is a
logged line each time another ``every_pct`` percent is done or ``every_s``
seconds have passed, and once at the end. Both take the same tqdm API
(``update``, ``n``, ``total``, ``initial``, ``set_postfix_str``, ``close``),
so callers never ask where the output goes.
"""

from __future__ import annotations

import io
import logging
import sys
import time
from typing import Any

from tqdm.auto import tqdm as auto_tqdm
from tqdm.std import tqdm

log = logging.getLogger(__name__)


def live_output() -> bool:
    """Whether bars can be redrawn in place: stderr is a terminal, or tqdm.auto chose its notebook frontend."""
    in_notebook = any(cls.__module__ == "tqdm.notebook" for cls in auto_tqdm.__mro__)
    return in_notebook or sys.stderr.isatty()


class LoggedProgress(tqdm):
    """A tqdm that logs a plain line every ``every_pct`` percent or ``every_s`` seconds instead of redrawing."""

    def __init__(self, *args: Any, every_pct: float = 10.0, every_s: float = 60.0, **kwargs: Any) -> None:
        self._every_pct = every_pct
        self._every_s = every_s
        self._logged_n: float = 0
        self._logged_pct = 0.0
        self._logged_t = time.monotonic()
        kwargs.update(file=io.StringIO(), ncols=0, dynamic_ncols=False)  # ncols=0: statistics, no bar drawing
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if msg is not None or self.n == self._logged_n:  # msg="": tqdm clearing a transient bar
            return True
        now = time.monotonic()
        pct = 100.0 * self.n / self.total if self.total else None
        finished = pct is not None and pct >= 100.0
        next_step = pct is not None and pct >= self._logged_pct + self._every_pct
        if finished or next_step or now - self._logged_t >= self._every_s:
            log.info("%s", self.format_meter(**self.format_dict))
            self._logged_n, self._logged_t = self.n, now
            if pct is not None:
                self._logged_pct = pct - pct % self._every_pct
        return True

    def close(self) -> None:
        """Log where it stopped (an interrupted or early-finished run) unless that line was just logged."""
        if not self.disable and self.n != self._logged_n:
            log.info("%s", self.format_meter(**self.format_dict))
            self._logged_n = self.n
        super().close()


def progress_bar(*, total: float | None = None, desc: str = "", unit: str = "it", enabled: bool = True,
                 leave: bool = True, **kwargs: Any) -> tqdm:
    """A progress display for where the output goes; ``enabled=False`` shows nothing.

    The rate and ETA are averages since the bar was made (``smoothing=0``): make
    the bar when the work it measures starts, and set ``initial`` to what was
    already done (a resumed run) so it does not count as this run's speed.
    """
    options = {"total": total, "desc": desc, "unit": unit, "disable": not enabled, "smoothing": 0, **kwargs}
    if live_output():
        return auto_tqdm(leave=leave, dynamic_ncols=True, **options)
    return LoggedProgress(leave=leave, **options)
