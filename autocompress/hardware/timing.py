"""Runtime-independent timing harness: interleaved rounds of seeded random order.

Every callable is timed in every round, and the order the callables are
visited in is reshuffled each round from a seeded generator, so a slow burst of
the machine (frequency changes, a noisy neighbour on a shared VM) lands on
different callables in different rounds instead of on one callable's whole
measurement. Each round records the median of its ``reps`` timed calls; the
reported value (:attr:`Timing.value_ms`) is the minimum of those round medians,
which rejects a round that a multi-second slow burst covered entirely, where a
pooled median (or a median of 3 rounds) would not.

A whole model is a different case: two runtime sessions of the same model in
the same process can differ by 25% (median max/min over 8 ONNX Runtime
sessions of ResNet-20 candidates; 1.6x at the 90th percentile) for their whole
life, while isolated layers differ by ~9%. The runtime places its buffers anew
in every session; that placement, not the moment, decides. A whole model is
therefore timed in several sessions and reported by :func:`across_sessions`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Timing:
    """Latency of one callable over ``count`` timed calls, in milliseconds.

    ``median_ms``, ``mean_ms`` and ``std_ms`` pool every timed call of every round;
    ``round_medians_ms`` holds each round's median, in round order.
    """

    median_ms: float
    mean_ms: float
    std_ms: float
    count: int
    round_medians_ms: tuple[float, ...]

    @property
    def value_ms(self) -> float:
        """The figure to report: the minimum of the round medians (rejects rounds hit by a slow burst)."""
        return min(self.round_medians_ms)


def across_sessions(values_ms: Sequence[float]) -> float:
    """One figure for a model timed in several sessions: their median.

    The median is what a deployment meets in a typical session; the minimum
    (the old rule) keeps a lucky session, and which candidates got one is
    random, so minima of 2 sessions of the same models moved by 9% between
    two measurements against 3% for medians of 4.
    """
    if not len(values_ms):
        raise ValueError("no session timings to aggregate")
    return float(np.median(np.asarray(values_ms, dtype=np.float64)))


def open_sessions(openers: Mapping[str, Callable[[], Callable[[], object]]], sessions: int,
                  seed: int = 0) -> dict[str, Callable[[], object]]:
    """``sessions`` sessions of every opener, keyed ``"<label>#<k>"``, opened in a seeded random order.

    Where a session's buffers land depends on what the process allocated
    before it. Opened model by model, a model's sessions sit side by side and
    share their luck, and models opened later (the held-out ones, say) share
    another; mixed, every model's sessions sample the placements the run has.
    """
    _check_count("sessions", sessions, 1)
    order = [(label, k) for label in openers for k in range(sessions)]
    opened = {}
    for index in np.random.default_rng(seed).permutation(len(order)):
        label, k = order[int(index)]
        opened[f"{label}#{k}"] = openers[label]()
    return {f"{label}#{k}": opened[f"{label}#{k}"] for label, k in order}


def _check_count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def time_callables(
    fns: Mapping[str, Callable[[], object]],
    *,
    rounds: int = 5,
    reps: int = 20,
    warmup: int = 3,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Timing]:
    """Time every callable in ``fns`` (name -> zero-argument callable), interleaved.

    Each of ``rounds`` rounds visits every callable once, in a fresh random order
    drawn from a generator seeded with ``seed``; a visit runs ``warmup`` untimed
    calls and then ``reps`` calls timed one by one with ``time.perf_counter_ns``.
    ``progress(done, total)`` is called after each visit (``total = rounds * len(fns)``).
    Returns name -> :class:`Timing`, in the order of ``fns``.
    """
    if not isinstance(fns, Mapping):
        raise TypeError(f"fns must be a mapping of name -> callable, got {type(fns).__name__}")
    if not fns:
        raise ValueError("fns is empty: give at least one callable to time")
    for name, fn in fns.items():
        if not callable(fn):
            raise TypeError(f"fns[{name!r}] is not callable (got {type(fn).__name__})")
    _check_count("rounds", rounds, 1)
    _check_count("reps", reps, 1)
    _check_count("warmup", warmup, 0)
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be callable or None, got {type(progress).__name__}")

    names = list(fns)
    rng = np.random.default_rng(seed)
    samples_ns: dict[str, list[int]] = {name: [] for name in names}
    round_medians: dict[str, list[float]] = {name: [] for name in names}
    total, done = rounds * len(names), 0
    clock = time.perf_counter_ns
    for _ in range(rounds):
        for index in rng.permutation(len(names)):
            name = names[int(index)]
            fn = fns[name]
            for _ in range(warmup):
                fn()
            times = []
            for _ in range(reps):
                start = clock()
                fn()
                times.append(clock() - start)
            samples_ns[name].extend(times)
            round_medians[name].append(statistics.median(times) / 1e6)
            done += 1
            if progress is not None:
                progress(done, total)

    result = {}
    for name in names:
        ms = np.asarray(samples_ns[name], dtype=np.float64) / 1e6
        result[name] = Timing(
            median_ms=float(np.median(ms)),
            mean_ms=float(ms.mean()),
            std_ms=float(ms.std(ddof=1)) if ms.size > 1 else 0.0,
            count=int(ms.size),
            round_medians_ms=tuple(float(m) for m in round_medians[name]),
        )
    return result


def torch_callable(model, input_shape: tuple[int, ...], *, seed: int = 0) -> Callable[[], object]:
    """A zero-argument callable running ``model`` (switched to eval mode) on one seeded batch-1 input.

    The call runs under ``torch.inference_mode()``. Thread count is whatever
    ``torch.get_num_threads()`` is when it runs: the caller sets it.
    """
    import torch

    shape = tuple(input_shape)
    if not shape or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
        raise ValueError(f"input_shape must be a tuple of positive ints (without the batch dim), got {input_shape!r}")
    model.eval()
    x = torch.randn((1, *shape), generator=torch.Generator().manual_seed(seed))

    def run() -> object:
        with torch.inference_mode():
            return model(x)

    return run
