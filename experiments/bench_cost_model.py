"""CostModel throughput: candidates priced per second, without building any model.

Prices random candidates of a zoo model's shipped space on a profile, both as
rows of the space's encoding (the vectorized path the strategies use) and as
Candidate objects (encode + price). Prints median and spread over repetitions.

    python experiments/bench_cost_model.py --model resnet56 --profile hw_profiles/cpu-onnxruntime-1t.json
"""

from __future__ import annotations

import argparse
import statistics
import time

from autocompress.graph import ModelGraph
from autocompress.hardware import (
    HOROWITZ_45NM,
    CostModel,
    HardwareProfile,
    analytic_profile,
)
from autocompress.models import create_model, model_info
from autocompress.space import SearchSpace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet56")
    parser.add_argument("--profile", default=None, help="profile JSON; default: an analytic roofline profile")
    parser.add_argument("--n", type=int, default=100_000, help="candidates per batch")
    parser.add_argument("--objects", type=int, default=2_000, help="Candidate objects for the object path")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    model = create_model(args.model).eval()
    space = SearchSpace.from_yaml(ModelGraph.from_model(model, (3, 32, 32)), model_info(args.model).family)
    if args.profile:
        profile = HardwareProfile.load(args.profile)
    else:
        profile = analytic_profile(name="roofline", device="bench",
                                   peak_macs_per_s={"fp32": 1e11, "int8": 4e11}, bandwidth_bytes_per_s=2.5e10,
                                   energy_table=HOROWITZ_45NM)
    start = time.perf_counter()
    costs = CostModel(profile, space)
    build_s = time.perf_counter() - start
    indices = space.encoding.random(args.n, rng=args.seed)
    candidates = [space.sample(args.seed + i) for i in range(args.objects)]

    vectorized, objects = [], []
    for _ in range(args.reps):
        start = time.perf_counter()
        costs.predict_batch(indices)
        vectorized.append(args.n / (time.perf_counter() - start))
        start = time.perf_counter()
        costs.predict_batch(space.encoding.encode(candidates))
        objects.append(args.objects / (time.perf_counter() - start))

    print(f"{args.model}: {len(space.graph.units)} units, space 10^{space.log10_size():.1f}, "
          f"profile {profile.name} ({len(profile.entries)} entries); tables built in {build_s:.1f} s")
    for label, values in (("encoded arrays", vectorized), ("Candidate objects", objects)):
        print(f"{label:18s} median {statistics.median(values):>12,.0f} candidates/s "
              f"(min {min(values):,.0f}, max {max(values):,.0f}, {args.reps} reps)")


if __name__ == "__main__":
    main()
