"""How a layer slows down once the weights of its graph no longer fit in the core's cache.

A table times each layer alone, its weights warm in L2. In a whole model every
layer's weights were evicted by the layers run since, once the model's
weights outgrow the cache. Chains of identical 3x3 convolutions (each
followed by a ReLU, as ONNX Runtime fuses them) of growing length are timed
with ONNX Runtime's per-node profiler, one thread: per layer, the median
kernel time against the total weights in the chain.

    python experiments/generalization/weight_chains.py
    python experiments/generalization/weight_chains.py --chains 128,8,2 128,8,32   # channels,size,copies
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from autocompress.runtime.graph_ops import LAYER_NODES, node_times
from autocompress.runtime.onnx_export import export_onnx

DEFAULT = ("128,8,2", "128,8,4", "128,8,8", "128,8,16", "128,8,32", "64,8,8", "64,8,16", "64,8,32", "64,8,64",
           "64,8,128", "256,4,2", "256,4,4", "256,4,8")


def chain(channels: int, copies: int) -> nn.Module:
    layers: list[nn.Module] = []
    for _ in range(copies):
        layers += [nn.Conv2d(channels, channels, 3, 1, 1), nn.ReLU()]
    return nn.Sequential(*layers).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chains", nargs="+", default=list(DEFAULT), help="channels,size,copies of each chain")
    parser.add_argument("--runs", type=int, default=300, help="profiled calls per session")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    print("| channels | size | copies | weights per layer (MB) | weights in chain (MB) | per layer (us) |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="autocompress-chains-") as tmp:
        for spec in args.chains:
            channels, size, copies = (int(v) for v in spec.split(","))
            shape = (channels, size, size)
            path = export_onnx(chain(channels, copies), shape, Path(tmp) / f"{spec}.onnx")
            times, overhead, _ = node_times(path, shape, runs=args.runs, sessions=2, seed=args.seed)
            per_layer = [ms - overhead for (_, op), ms in times.items() if op in LAYER_NODES]
            mb = channels * channels * 9 * 4 / 1e6
            print(f"| {channels} | {size}x{size} | {copies} | {mb:.2f} | {mb * copies:.1f} | "
                  f"{np.median(per_layer) * 1e3:.1f} |", flush=True)


if __name__ == "__main__":
    main()
