"""NNI 2.10.1's AMC pruner on a trained CIFAR-10 reference: the per-layer widths its DDPG agent chooses.

Runs in its own environment, never the project's (NNI pins old libraries;
its AMC pickles models with ``torch.load``, hence the environment variable)::

    python -m venv /tmp/nni-env
    /tmp/nni-env/bin/pip install -c constraints.txt torch==2.13.0 nni==2.10.1 tensorboard
    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 PYTHONPATH=. /tmp/nni-env/bin/python \\
        experiments/cifar10/amc_nni.py --model resnet20 --episodes 120 --flops 0.5

AMC as its paper ran ResNets: only the first convolution of every residual
block is pruned (its output channels are internal to the block), the
L1-norm channel criterion, a FLOPs target over those layers (``--flops 0.5``:
half their FLOPs, AMC's 2x setting), and the reward the pruned model's
accuracy without fine-tuning on a fixed subset of the search's validation
split (the same seeded split, never the test images). The best episode's
widths go to ``<runs>/<model>-amc-<flops>/amc.json``; ``baselines.py --only amc``
then gives them the members' final fine-tune, fp32 and with every layer w8a8.

Memory: NNI 2.10.1's AMC keeps about 200 MB more per episode (23 GB resident
after 110 ResNet-20 episodes), so on a 24 GB machine keep ``--episodes`` at
100 or fewer.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from common import DATA_SPEC, RUNS, reference_weights
from torch import nn

from autocompress.data.dataset import load_data
from autocompress.models import create_model
from autocompress.train import evaluate


def block_convs(model: nn.Module) -> list[str]:
    """The first convolution of every residual block: the layers AMC prunes in a ResNet."""
    return [name for name, m in model.named_modules() if name.endswith(".conv1") and isinstance(m, nn.Conv2d)]


def conv_widths(model: nn.Module) -> dict[str, int]:
    return {name: int(m.out_channels) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def prune_each_layer_once() -> None:
    """Make NNI 2.10.1's AMC prune every layer once, as its paper's environment does.

    Its task generator gives the last layer's step the whole episode's config
    list (every earlier layer's sparsity), and AMCPruner always speeds the
    model up between steps, so that list is applied to the already compacted
    model: every earlier layer is pruned twice (ResNet-20 episodes came out at
    0.33-0.38x FLOPs against a 0.5 target, layers at 1-2 of 16 channels past
    the 0.8 per-layer cap, every reward near chance). Here the last step's
    file is rewritten to its own layer only.
    """
    import json_tricks
    from nni.algorithms.compression.v2.pytorch.pruning import amc_pruner

    class OncePerLayer(amc_pruner.AMCTaskGenerator):
        def generate_tasks(self, task_result):
            tasks = super().generate_tasks(task_result)
            if tasks and self.env.is_final_layer() and not self.env.is_first_layer():
                own = [{"op_names": [self.env.current_op_name], "total_sparsity": self.action}]
                with Path(tasks[0].config_list_path).open("w") as f:
                    json_tricks.dump(own, f, indent=4)
            return tasks

    amc_pruner.AMCTaskGenerator = OncePerLayer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--episodes", type=int, default=100,
                        help="AMC episodes (its paper: 400 on CIFAR; about 200 MB of memory each here)")
    parser.add_argument("--warmup", type=int, default=None, help="random episodes first (default: a quarter)")
    parser.add_argument("--flops", type=float, default=0.5, help="share of the pruned layers' FLOPs to remove")
    parser.add_argument("--max-sparsity", type=float, default=0.8, help="per layer, as AMC's ResNet setting")
    parser.add_argument("--eval-images", type=int, default=1000, help="validation images the reward scores")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD") != "1":
        sys.exit("NNI's AMC reloads its own pickled models: run with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1, in NNI's own "
                 "environment (see this file's docstring)")
    import nni  # NNI's environment only
    from nni.compression.pytorch.pruning import AMCPruner
    from nni.compression.pytorch.utils import count_flops_params

    prune_each_layer_once()

    torch.manual_seed(args.seed)  # the agent's warm-up actions and noise draw from numpy and random too
    np.random.seed(args.seed)
    random.seed(args.seed)
    torch.set_num_threads(2)
    out = args.out or RUNS / f"{args.model}-amc-{args.flops:g}"
    out.mkdir(parents=True, exist_ok=True)
    data = load_data(DATA_SPEC, seed=args.seed)
    model = create_model(args.model, in_channels=data.input_shape[0], num_classes=data.num_classes)
    model.load_state_dict(torch.load(reference_weights(args.model), map_location="cpu", weights_only=True))
    model.eval()
    loader = data.loader("val", batch_size=250, shuffle=False, augment=False, limit=args.eval_images)
    dummy = torch.zeros(1, *data.input_shape)
    ops = block_convs(model)
    config = [{"op_names": ops, "total_sparsity": args.flops, "max_sparsity_per_layer": args.max_sparsity}]
    flops0, params0, _ = count_flops_params(model, dummy, verbose=False)
    episodes: list[dict[str, float]] = []
    t0 = time.perf_counter()

    def reward(pruned: nn.Module) -> float:
        acc = float(evaluate(pruned.eval(), loader, device="cpu"))
        flops = count_flops_params(pruned, dummy, verbose=False)[0] / flops0
        episodes.append({"reward": acc, "flops_ratio": flops, "widths": conv_widths(pruned)})
        best = max(e["reward"] for e in episodes)
        spent = time.perf_counter() - t0
        print(f"episode {len(episodes)}/{args.episodes}: val accuracy {acc:.4f} at {flops:.3f}x FLOPs (best {best:.4f}), "
              f"{spent:.0f} s, ETA {spent / len(episodes) * (args.episodes - len(episodes)):.0f} s", flush=True)
        return acc

    warmup = args.warmup if args.warmup is not None else args.episodes // 4
    pruner = AMCPruner(args.episodes, model, config, dummy, reward, pruning_algorithm="l1",
                       log_dir=str(out / "nni"), target="flops", ddpg_params={"warmup": warmup})
    pruner.compress()
    _, best, _, score, _ = pruner.get_best_result()
    flops1, params1, _ = count_flops_params(best, dummy, verbose=False)
    widths, full = conv_widths(best), conv_widths(model)
    result = {
        "method": "NNI AMCPruner (DDPG agent, l1 channel criterion, FLOPs target)", "nni_version": nni.__version__,
        "model": args.model, "weights": str(reference_weights(args.model)), "data": DATA_SPEC, "seed": args.seed,
        "episodes": args.episodes, "warmup": warmup, "pruned_layers": ops, "flops_target": args.flops,
        "max_sparsity_per_layer": args.max_sparsity, "reward": f"val accuracy on {args.eval_images} images, no "
        "fine-tune", "best_reward": float(score), "episodes_run": episodes,
        "widths": {name: widths[name] for name in ops}, "full_widths": {name: full[name] for name in ops},
        "flops_ratio": flops1 / flops0, "params_ratio": params1 / params0,
        "seconds": round(time.perf_counter() - t0, 1),
        "command": " ".join(["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 PYTHONPATH=. <NNI environment>/bin/python",
                             "experiments/cifar10/amc_nni.py", *sys.argv[1:]]),
    }
    path = out / "amc.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"best reward {score:.4f}; FLOPs {flops1 / flops0:.3f}x of the reference; widths {result['widths']}; "
          f"wrote {path}")


if __name__ == "__main__":
    main()
