"""How timing a model in turns with its reference changes the figure, against running it back to back.

Validation, export and the search's latency check time every model in blocks
of calls taking turns with blocks of its uncompressed reference, so that the
machine's drift over seconds cancels in their ratio. The other model's block
leaves its weights in the cache. This script times random float candidates of
one model three ways, the ways taken in a random order visit after visit so
that drift lands on all of them alike:

- back to back (``time_callables`` with no reference), as a deployed model runs;
- in turns with the reference, in blocks of ``--block`` calls (the harness's ``BLOCK``), no untimed calls
  before a block;
- the same, ``--settle`` untimed calls before each block (the harness's ``SETTLE``).

and prints, per candidate, each way's median over the back-to-back one, for
the candidate, for the reference, and for the latency as validation computes
it (the ratio to the reference times the reference's median).

    PYTHONPATH=experiments/generalization python experiments/generalization/interleaving.py \\
        --model user_models:vgg_head --candidates 6 --visits 60
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from autocompress.cli_profile import _suites
from autocompress.runtime.base import create_runtime
from autocompress.runtime.timing import BLOCK, SETTLE, time_callables
from autocompress.runtime.validate import candidate_opener, draw_candidates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="user_models:vgg_head")
    parser.add_argument("--candidates", type=int, default=6, help="random float candidates of the model's space")
    parser.add_argument("--visits", type=int, default=60, help="visits per candidate, each timing every way")
    parser.add_argument("--reps", type=int, default=10, help="timed calls per way and visit")
    parser.add_argument("--block", type=int, default=BLOCK, help="timed calls per block, in turns")
    parser.add_argument("--settle", type=int, default=SETTLE, help="untimed calls before a block, the third way")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    ways = ("back to back", "in turns, settle 0", f"in turns, settle {args.settle}")
    suite = _suites(argparse.Namespace(input_shape="3x32x32", spaces=None, models=[args.model], num_classes=10))[0]
    runtime = create_runtime("onnxruntime", threads=1)
    rng = np.random.default_rng(args.seed)
    candidates = draw_candidates(suite.space, args.candidates, "fp32-only", rng)
    with tempfile.TemporaryDirectory(prefix="autocompress-interleaving-") as tmp, runtime.measuring():
        reference = candidate_opener(runtime, suite.model, suite.space, suite.space.uniform(keep=1.0),
                                     Path(tmp) / "reference.onnx", args.seed)()
        fns = [candidate_opener(runtime, suite.model, suite.space, c, Path(tmp) / f"c{i}.onnx", args.seed)()
               for i, c in enumerate(candidates)]
        # per candidate and way: candidate medians, reference medians, the validation's latency (ratio x reference)
        found = {(i, way): ([], [], []) for i in range(len(fns)) for way in ways}
        for visit in range(args.visits):
            for i in rng.permutation(len(fns)):
                for w in rng.permutation(len(ways)):
                    way, seed = ways[w], int(rng.integers(1 << 31))
                    mine, theirs, latency = found[(int(i), way)]
                    if way == ways[0]:
                        timed = time_callables({"c": fns[i], "r": reference}, rounds=1, reps=args.reps, seed=seed)
                        mine.append(timed["c"].median_ms)
                        theirs.append(timed["r"].median_ms)
                        latency.append(timed["c"].median_ms)
                        continue
                    t = time_callables({"c": fns[i]}, rounds=1, reps=args.reps, seed=seed, reference=reference,
                                       block=args.block, settle=0 if way == ways[1] else args.settle)["c"]
                    mine.append(t.median_ms)
                    theirs.append(t.reference_ms)
                    latency.append(t.ratio)  # scaled below by the reference's median over the run, as validation does
            print(f"visit {visit + 1}/{args.visits}", end="\r", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    header = " | ".join(f"{way}: candidate, reference, latency" for way in ways[1:])
    print(f"| {args.model} candidate | back to back (ms) | {header} |")
    print("|---|---|" + "---|" * (len(ways) - 1))
    for i in range(len(fns)):
        alone, ref_alone = (float(np.median(v)) for v in found[(i, ways[0])][:2])
        cells = []
        for way in ways[1:]:
            mine, theirs, ratios = found[(i, way)]
            ref_ms = float(np.median(theirs))
            cells.append(f"{np.median(mine) / alone:.2f}x, {ref_ms / ref_alone:.2f}x, "
                         f"{np.median(ratios) * ref_ms / alone:.2f}x")
        print(f"| {i} | {alone:.3f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
