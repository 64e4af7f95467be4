"""Does a profile get *relative* budgets right? Predicted vs measured latency as a fraction of the reference.

A budget such as ``latency<=0.5x`` compares a candidate with the uncompressed
model, and the budget is tightest at the cheapest corners of the space: every
layer at its most compressed width, rank and precision. Random validation
candidates rarely go there, nor to the uncompressed model itself. This script
measures both ends: the reference, the cheapest rows the layer-wise strategies
start from (uniform corners and what coordinate descent reaches), and a few
random candidates, each timed against the reference in turns, and prints
measured and predicted fractions of the reference side by side.

Compare runs, not rows: on this VM the fractions move between processes
(ResNet-20 at 3x32x32, three runs: median error of random candidates +10%,
+10%, +24%; at 1x28x28: +5%, -4%, -4%), while one process agrees with itself.

    python experiments/relative_fidelity.py --model resnet20 --input-shape 3x32x32
    python experiments/relative_fidelity.py --model resnet20 --input-shape 1x28x28
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from autocompress.graph import ModelGraph
from autocompress.hardware import CostModel
from autocompress.hardware.profile import find_profile
from autocompress.models import create_model, model_info
from autocompress.runtime import create_runtime
from autocompress.runtime.timing import time_callables
from autocompress.runtime.validate import candidate_opener
from autocompress.search.budget import parse_budgets
from autocompress.search.layerwise import Layerwise
from autocompress.space import SearchSpace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--input-shape", default="3x32x32")
    parser.add_argument("--profile", default="cpu-onnxruntime-1t")
    parser.add_argument("--random", type=int, default=8, help="random candidates beside the corners")
    parser.add_argument("--sessions", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    shape = tuple(int(d) for d in args.input_shape.split("x"))
    model = create_model(args.model, in_channels=shape[0]).eval()
    space = SearchSpace.from_yaml(ModelGraph.from_model(model, shape), model_info(args.model).family)
    profile = find_profile(args.profile)
    costs = CostModel(profile, space, model=args.model)
    reference = costs.reference()
    corners = np.unique(Layerwise(costs, parse_budgets(["latency<=100x"], reference.to_dict())).completions, axis=0)
    rows = np.vstack([corners, space.encoding.random(args.random, rng=args.seed)])
    kinds = ["corner"] * len(corners) + ["random"] * args.random
    predicted = costs.predict_batch(rows)["latency_ms"] / reference.latency_ms

    runtime = create_runtime(profile.runtime, threads=profile.threads)
    with tempfile.TemporaryDirectory(prefix="autocompress-relative-") as tmp:
        def opener(candidate, name):
            return candidate_opener(runtime, model, space, candidate, Path(tmp) / f"{name}.onnx", args.seed)

        openers = {"reference": opener(space.identity(), "reference")}
        openers.update({str(i): opener(space.encoding.decode(row), str(i)) for i, row in enumerate(rows)})
        fns = {f"{label}#{k}": op() for label, op in openers.items() for k in range(args.sessions)}
        with runtime.measuring():
            timings = time_callables(fns, rounds=args.rounds, reps=10, seed=args.seed,
                                     reference=openers["reference"]())

    def ratio(label: str) -> float:
        return float(np.median([timings[f"{label}#{k}"].ratio for k in range(args.sessions)]))

    base = ratio("reference")
    print(f"{args.model} at {args.input_shape} on {profile.name} ({costs.calibration.form} calibration): "
          f"reference predicted {reference.latency_ms:.3f} ms")
    print(f"{'kind':8s} {'measured x':>10s} {'predicted x':>11s} {'error':>7s}")
    errors = {"corner": [], "random": []}
    for i, kind in enumerate(kinds):
        measured = ratio(str(i)) / base
        errors[kind].append(predicted[i] / measured - 1)
        print(f"{kind:8s} {measured:10.3f} {predicted[i]:11.3f} {100 * errors[kind][-1]:+6.1f}%")
    for kind, errs in errors.items():
        if errs:
            print(f"{kind}: median error {100 * np.median(errs):+.1f}%, largest |error| "
                  f"{100 * np.max(np.abs(errs)):.1f}% over {len(errs)}")


if __name__ == "__main__":
    main()
