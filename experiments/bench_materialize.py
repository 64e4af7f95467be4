"""How long materialize() takes: ResNet-56 and MobileNetV2 (CIFAR), several candidates.

Prints median and spread (min..max) over repetitions of: graph tracing, the
identity candidate (a deep copy plus checks), uniform half width (pruning only),
and random candidates of the shipped space (all transforms). Timings are wall
clock on whatever machine runs this; interleaved so drift hits every row alike.

    python experiments/bench_materialize.py --reps 5 --seed 0
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import numpy as np
import torch

from autocompress.compress import materialize
from autocompress.graph import ModelGraph
from autocompress.models import create_model, model_info
from autocompress.space import SearchSpace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet56", "mobilenetv2_cifar"])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    setups = {}
    for name in args.models:
        model = create_model(name).eval()
        graph = ModelGraph.from_model(model, (3, 32, 32))
        space = SearchSpace.from_yaml(graph, model_info(name).family)
        setups[name] = (model, space)

    rng = np.random.default_rng(args.seed)
    timings: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.reps):
        for name, (model, space) in setups.items():
            jobs = {
                "trace graph": partial(ModelGraph.from_model, model, (3, 32, 32)),
                "identity": partial(materialize, model, space.identity(), space),
                "uniform keep 0.5": partial(materialize, model, space.uniform(keep=0.5), space),
                "random candidate": partial(materialize, model, space.sample(rng), space),
            }
            for job, fn in jobs.items():
                start = time.perf_counter()
                fn()
                timings.setdefault((name, job), []).append(time.perf_counter() - start)

    print(f"materialize timings, {args.reps} reps, {args.threads} thread(s), torch {torch.__version__}")
    print(f"{'model':20s} {'job':18s} {'median s':>9s} {'min s':>8s} {'max s':>8s}")
    for (name, job), values in timings.items():
        print(f"{name:20s} {job:18s} {statistics.median(values):9.3f} {min(values):8.3f} {max(values):8.3f}")


if __name__ == "__main__":
    main()
