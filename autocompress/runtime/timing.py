"""Runtime-independent timing harness: interleaved rounds of seeded random order.

Every callable is timed in every round, and the order the callables are
visited in is reshuffled each round from a seeded generator, so a slow burst of
the machine (frequency changes, a noisy neighbour on a shared VM) lands on
different callables in different rounds instead of on one callable's whole
measurement. Each round records the median of its ``reps`` timed calls; the
reported value (:attr:`Timing.value_ms`) is the minimum of those round medians,
which rejects a round that a multi-second slow burst covered entirely, where a
pooled median (or a median of 3 rounds) would not.

A whole model is a different case. This VM's speed wanders by +-10% over
seconds (per-second medians of one ResNet-20 candidate run back to back for
30 s: 0.85 to 1.05 ms), so round medians of a model taken seconds apart
scatter: the sessions of one model spread 1.47x max/min, and which session was
slow in one pass did not predict the next pass (correlation ~0). Two models
called alternately, call by call, track each other: their per-second ratio
stayed within 1.00 +- 0.02 over the same 30 s. Given a ``reference`` callable,
the timed calls therefore take turns with timed calls of the reference, and
each round records median(callable) / median(reference) of the same moments
(:attr:`Timing.ratio`): the same 20 ResNet-20 candidates measured twice that
way agreed within 1.3% (median), against 4.1% for medians of min-of-round
values. The reference must be of the callable's size: a 12 us layer as the
reference of a 1 ms model is disturbed by the cache the model leaves behind
(135% apart between two passes).

They take turns in blocks of ``BLOCK`` calls, not call by call: each call
of one model evicts the other's weights from the core's cache (here 1 MiB
of L2), so alternating call by call timed every model with cold weights, a
VGG-like model (13 MB of float weights) at 1.02 ms against 0.58 ms run back
to back, while a table times each layer warm. A block still spans
milliseconds (the drift is over seconds). Each block is preceded by
``SETTLE`` untimed calls: the first calls after the other model's block still
run with its weights, code and buffers in the cache. In blocks of 5 with no
such calls, random candidates of that VGG-like model came out 7-22% slower
than run back to back (the latency as validation computes it: the ratio to
the reference times the reference's median) and ResNet-56's 3-19%, by how
busy the machine was; in blocks of 10 after 4 untimed calls, 1-6% and 0-2%
(``experiments/results/interleaving.md``). A deployed model runs back to
back: that, like a table's warm layers, is what a prediction is checked on.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

#: calls of a callable, then as many of its reference, in turn (see the module's docstring)
BLOCK = 10
#: untimed calls before each block, after the other callable's block (see the module's docstring)
SETTLE = 4


@dataclass(frozen=True)
class Timing:
    """Latency of one callable over ``count`` timed calls, in milliseconds.

    ``median_ms``, ``mean_ms`` and ``std_ms`` pool every timed call of every round;
    ``round_medians_ms`` holds each round's median, in round order. Timed beside
    a reference, ``round_ratios`` holds each round's median / the reference's
    median over the same visit, and ``reference_ms`` the median of every
    reference call paired with this callable.
    """

    median_ms: float
    mean_ms: float
    std_ms: float
    count: int
    round_medians_ms: tuple[float, ...]
    round_ratios: tuple[float, ...] = ()
    reference_ms: float | None = None

    @property
    def value_ms(self) -> float:
        """The figure to report: the minimum of the round medians (rejects rounds hit by a slow burst)."""
        return min(self.round_medians_ms)

    @property
    def ratio(self) -> float:
        """Latency relative to the reference timed in the same moments: the median of the round ratios."""
        if not self.round_ratios:
            raise ValueError("this timing has no reference: pass reference= to time_callables")
        return float(np.median(self.round_ratios))


def block_sizes(reps: int, block: int = BLOCK) -> list[int]:
    """The timed calls of each block of a visit beside a reference: ``block`` each, the last one what is left."""
    return [min(block, reps - first) for first in range(0, reps, block)]


def reference_timed_calls(reps: int, warmup: int, block: int = BLOCK, settle: int = SETTLE) -> list[int]:
    """Which of a reference's calls in one visit of :func:`time_callables` are timed, counting from 0: the others
    warm it up or settle it after the callable's block (a per-node profile of the reference keeps only these)."""
    timed, index = [], warmup
    for count in block_sizes(reps, block):
        index += settle
        timed.extend(range(index, index + count))
        index += count
    return timed


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
    before it. Opened model by model, a model's sessions would sit side by side
    and models opened later (the held-out ones, say) in another stretch of
    memory; mixed, every model's sessions sample the placements the run has.
    A precaution: re-timing the same sessions of ResNet-20 candidates, which
    session was slow did not carry over (the drift in time dominates).
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
    reference: Callable[[], object] | None = None,
    block: int = BLOCK,
    settle: int = SETTLE,
) -> dict[str, Timing]:
    """Time every callable in ``fns`` (name -> zero-argument callable), interleaved.

    Each of ``rounds`` rounds visits every callable once, in a fresh random order
    drawn from a generator seeded with ``seed``; a visit runs ``warmup`` untimed
    calls and then ``reps`` calls timed one by one with ``time.perf_counter_ns``.
    ``progress(done, total)`` is called after each visit (``total = rounds * len(fns)``).
    With a ``reference``, the warm-up calls are followed by as many of the
    reference, and the timed calls go in blocks of ``block``, each followed by
    as many calls of the reference (timed too), every block after ``settle``
    untimed calls of its callable; the timings carry ratios to it.
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
    _check_count("block", block, 1)
    _check_count("settle", settle, 0)
    for label, value in (("progress", progress), ("reference", reference)):
        if value is not None and not callable(value):
            raise TypeError(f"{label} must be callable or None, got {type(value).__name__}")

    names = list(fns)
    rng = np.random.default_rng(seed)
    samples_ns: dict[str, list[int]] = {name: [] for name in names}
    round_medians: dict[str, list[float]] = {name: [] for name in names}
    ratios: dict[str, list[float]] = {name: [] for name in names}
    reference_ns: dict[str, list[int]] = {name: [] for name in names}
    total, done = rounds * len(names), 0
    clock = time.perf_counter_ns
    for _ in range(rounds):
        for index in rng.permutation(len(names)):
            name = names[int(index)]
            fn = fns[name]
            for _ in range(warmup):
                fn()
            if reference is not None:
                for _ in range(warmup):
                    reference()
            times, reference_times = [], []
            for count in block_sizes(reps, block if reference is not None else reps):  # alone: one block
                if reference is not None:
                    for _ in range(settle):
                        fn()
                for _ in range(count):
                    start = clock()
                    fn()
                    times.append(clock() - start)
                if reference is not None:
                    for _ in range(settle):
                        reference()
                    for _ in range(count):
                        start = clock()
                        reference()
                        reference_times.append(clock() - start)
            samples_ns[name].extend(times)
            round_medians[name].append(statistics.median(times) / 1e6)
            if reference is not None:
                reference_ns[name].extend(reference_times)
                ratios[name].append(statistics.median(times) / statistics.median(reference_times))
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
            round_ratios=tuple(float(r) for r in ratios[name]),
            reference_ms=float(np.median(reference_ns[name])) / 1e6 if reference is not None else None,
        )
    return result


def merge_rounds(parts: Sequence[Timing]) -> Timing:
    """One :class:`Timing` from one callable's timings taken apart (each of one round or more), as if timed in one
    call: round figures are kept in order; ``median_ms`` and ``reference_ms`` become medians of the parts' figures
    (their calls are not kept); ``mean_ms`` and ``std_ms`` pool the parts (each part's spread and its mean's
    distance from the whole's)."""
    if not parts:
        raise ValueError("no timings to merge")
    counts = np.array([t.count for t in parts], dtype=np.float64)
    means = np.array([t.mean_ms for t in parts])
    mean = float(np.average(means, weights=counts))
    variance = np.average(np.array([t.std_ms for t in parts]) ** 2 + (means - mean) ** 2, weights=counts)
    references = [t.reference_ms for t in parts if t.reference_ms is not None]
    return Timing(
        median_ms=float(np.median([t.median_ms for t in parts])),
        mean_ms=mean,
        std_ms=float(np.sqrt(variance)),
        count=int(counts.sum()),
        round_medians_ms=tuple(m for t in parts for m in t.round_medians_ms),
        round_ratios=tuple(r for t in parts for r in t.round_ratios),
        reference_ms=float(np.median(references)) if references else None,
    )


def time_in_passes(
    openers: Mapping[str, Callable[[], Callable[[], object]]],
    reference: Callable[[], object],
    *,
    passes: int,
    sessions: int,
    rounds: int,
    reps: int,
    seed: int,
    progress: Callable[[int, int], None] | None = None,
    first_pass: Callable[[dict[str, Callable[[], object]]], None] | None = None,
) -> list[dict[str, Timing]]:
    """Per pass, ``"<label>#<session>"`` -> :class:`Timing` beside ``reference``: each pass opens ``sessions``
    fresh sessions of every opener in a new order (:func:`open_sessions`) and times them together.

    One run of seconds can catch a shared machine in a spell that slows small or int8 models more than their
    reference; several runs, each with fresh sessions, give the machine's typical figure. ``first_pass`` gets the
    first pass's sessions once they are timed (the export reads energy on them); ``progress(done, total)`` counts
    visits over every pass. A pass's sessions are let go before the next pass opens its own.
    """
    _check_count("passes", passes, 1)
    runs: list[dict[str, Timing]] = []
    per_pass = rounds * len(openers) * sessions
    for pass_ in range(passes):
        fns = open_sessions(openers, sessions, seed + pass_)
        report = None if progress is None else (
            lambda done, _, offset=pass_ * per_pass: progress(offset + done, passes * per_pass))
        runs.append(time_callables(fns, rounds=rounds, reps=reps, seed=seed + pass_, reference=reference,
                                   progress=report))
        if pass_ == 0 and first_pass is not None:
            first_pass(fns)
        del fns
    return runs


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``threads`` for a measurement and restored after it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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
