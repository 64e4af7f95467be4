"""``autocompress`` command line: a thin layer over the Python API.

Each command prints for people and writes JSON for programs; a run directory
records the resolved configuration and library versions so it can be re-run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from autocompress.data import DataError
from autocompress.graph import GraphError
from autocompress.models import ModelError
from autocompress.space import CandidateError, SpaceError

USER_ERRORS = (DataError, GraphError, ModelError, SpaceError, CandidateError, FileNotFoundError)
DEFAULT_CACHE = Path(os.environ.get("AUTOCOMPRESS_CACHE", Path.home() / ".cache" / "autocompress"))


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("autocompress", "torch", "torch-pruning", "fvcore", "optuna", "onnxruntime", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def write_run_dir(out: Path, config: dict[str, Any], result: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps({"config": config, "versions": versions(),
                                                 "argv": sys.argv}, indent=2, default=str))
    (out / "result.json").write_text(json.dumps(result, indent=2, default=str))


def cmd_demo(args: argparse.Namespace) -> int:
    from autocompress.demo import format_report, run_demo

    config = {k: getattr(args, k) for k in ("model", "data", "space", "candidate", "weights", "seed",
                                            "base_epochs", "finetune_epochs", "max_train")}
    report = run_demo(**config, cache_dir=args.cache_dir, progress=not args.quiet)
    write_run_dir(Path(args.out), config, report)
    print(format_report(report))
    print(f"wrote {Path(args.out) / 'result.json'}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from autocompress.models import list_models, model_info

    for name in list_models():
        info = model_info(name)
        print(f"{name:24s} space: {info.family:14s} options: {info.default_kwargs}")
    print("or any 'package.module:callable' that returns an nn.Module (space: generic)")
    return 0


def cmd_space(args: argparse.Namespace) -> int:
    from autocompress.base_model import build_model
    from autocompress.data import load_data
    from autocompress.graph import ModelGraph
    from autocompress.models import model_info
    from autocompress.space import SearchSpace

    data = load_data(args.data, seed=args.seed, cache_dir=args.cache_dir)
    model = build_model(args.model, data).eval()
    graph = ModelGraph.from_model(model, data.input_shape)
    print(graph.summary())
    print(SearchSpace.from_yaml(graph, args.space or model_info(args.model).family).describe())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autocompress", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", default="lenet5", help="zoo name (see `autocompress models`) or package.module:callable")
        p.add_argument("--data", default="mnist5k",
                       help="mnist5k | digits | imagefolder:PATH | cifar10:PATH | npz:PATH")
        p.add_argument("--space", default=None, help="search-space YAML path or shipped name (default: the model's family)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--cache-dir", default=str(DEFAULT_CACHE), help="decoded data and trained base models")

    demo = sub.add_parser("demo", help="compress one candidate end to end and compare it with the reference")
    common(demo)
    demo.add_argument("--candidate", default="uniform:keep=0.5,w_bits=8,a_bits=8",
                      help="identity | random | uniform:keep=0.5,w_bits=8,... | candidate JSON file")
    demo.add_argument("--weights", default=None, help="trained base-model state_dict (loaded with weights_only=True)")
    demo.add_argument("--base-epochs", type=float, default=15.0)
    demo.add_argument("--finetune-epochs", type=float, default=2.0)
    demo.add_argument("--max-train", type=int, default=None, help="subsample the train split")
    demo.add_argument("--out", default="runs/demo", help="run directory for config.json and result.json")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=cmd_demo)

    models = sub.add_parser("models", help="list the model zoo")
    models.set_defaults(func=cmd_models)

    space = sub.add_parser("space", help="show a model's units, prune groups and joint space")
    common(space)
    space.set_defaults(func=cmd_space)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except USER_ERRORS as exc:
        print(f"autocompress: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
