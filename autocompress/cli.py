"""``autocompress`` command line: a thin layer over the Python API.

Each command prints for people and writes JSON for programs; a run directory
records the resolved configuration and library versions so it can be re-run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from autocompress.cli_profile import add_profile_parser
from autocompress.data import DataError
from autocompress.export.manifest import ExportError
from autocompress.graph import GraphError
from autocompress.hardware.profile import ProfileError
from autocompress.models import ModelError
from autocompress.progress import progress_bar
from autocompress.search.api import ConfigError
from autocompress.search.budget import BudgetError
from autocompress.search.strategies import DEFAULT_STRATEGY, strategy_names
from autocompress.search.study import StudyError
from autocompress.space import CandidateError, SpaceError
from autocompress.space.spec import finite
from autocompress.train.device import DeviceError
from autocompress.versions import versions

USER_ERRORS = (DataError, GraphError, ModelError, SpaceError, CandidateError, ProfileError, BudgetError, StudyError,
               ConfigError, DeviceError, ExportError, FileNotFoundError)
DEVICE_HELP = "where models train and are evaluated: cpu | cuda | cuda:N (latency is still priced for the profile)"
DEFAULT_CACHE = Path(os.environ.get("AUTOCOMPRESS_CACHE", Path.home() / ".cache" / "autocompress"))


def write_run_dir(out: Path, config: dict[str, Any], result: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps({"config": config, "versions": versions(),
                                                 "argv": sys.argv}, indent=2, default=str))
    (out / "result.json").write_text(json.dumps(result, indent=2, default=str))


def cmd_demo(args: argparse.Namespace) -> int:
    from autocompress.demo import format_report, run_demo

    config = {k: getattr(args, k) for k in ("model", "data", "space", "candidate", "weights", "seed",
                                            "base_epochs", "finetune_epochs", "max_train", "device")}
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
    from autocompress.data import probe_data
    from autocompress.graph import ModelGraph
    from autocompress.models import model_info
    from autocompress.space import SearchSpace

    data = probe_data(args.data, cache_dir=args.cache_dir)  # the shape and classes are all the model needs
    model = build_model(args.model, data).eval()
    graph = ModelGraph.from_model(model, data.input_shape)
    print(graph.summary())
    print(SearchSpace.from_yaml(graph, args.space or model_info(args.model).family).describe())
    return 0


def load_experiment(path: str | None, overrides: dict[str, Any]):
    """An experiment YAML merged with command-line flags (flags win) into a SearchConfig."""
    from autocompress.search import SearchConfig
    from autocompress.space.spec import load_yaml

    data: dict[str, Any] = {}
    if path:
        source = Path(path)
        if not source.exists():
            raise FileNotFoundError(f"{source}: no such experiment file")
        data = load_yaml(source, SpaceError)  # not UTF-8, not YAML, nested too deeply: one line naming the file
        if data is None:  # an empty file would otherwise run the quickstart's defaults, unasked
            raise SpaceError(f"{source}: empty experiment file; expected a mapping of search options "
                             f"(some of {SearchConfig.fields()})")
        if not isinstance(data, dict):
            raise SpaceError(f"{source}: expected a mapping of search options at the top level")
        unknown = sorted(set(data) - set(SearchConfig.fields()), key=str)  # YAML keys may be numbers too
        if unknown:
            raise SpaceError(f"{source}: unknown field(s) {unknown}; expected some of {SearchConfig.fields()}")
        if isinstance(data.get("budgets"), str):
            data["budgets"] = [data["budgets"]]
    data.update({k: v for k, v in overrides.items() if v is not None})
    data.setdefault("cache_dir", str(DEFAULT_CACHE))  # neither the flag nor the file chose one
    return search_config(data, path or "options")


def search_config(data: dict[str, Any], source: str):
    """``data`` (an experiment's fields, or a study's stored configuration) as a SearchConfig; a field of
    another type than the config's, or out of its range, is a SpaceError naming ``source`` and the field."""
    import dataclasses

    from autocompress.search import SearchConfig

    types = {f.name: str(f.type) for f in dataclasses.fields(SearchConfig)}
    for key, value in data.items():
        if not _fits(value, types[key]):
            raise SpaceError(f"{source}: field {key}: expected {types[key]}, got {value!r}")
    try:
        return SearchConfig(**data)
    except (TypeError, ValueError) as exc:
        raise SpaceError(f"{source}: {exc}") from None


def _fits(value: Any, annotation: str) -> bool:
    """Whether a YAML or JSON value has the type a SearchConfig annotation names (``float | None``,
    ``list[str]``); a bool is no number, and a number must be finite."""
    for kind in annotation.split(" | "):
        base = kind.partition("[")[0]
        if value is None or isinstance(value, bool):
            fits = base == ("None" if value is None else "bool")
        elif base in ("int", "float"):
            fits = isinstance(value, int) if base == "int" else isinstance(value, int | float) and finite(value)
        elif base == "list":
            fits = isinstance(value, list) and all(isinstance(v, str) for v in value)
        elif base == "dict":
            fits = isinstance(value, dict) and all(isinstance(k, str) for k in value)
        else:
            fits = base == "str" and isinstance(value, str)
        if fits:
            return True
    return False


def _in_file(exc: Exception, experiment: str | None, flags: dict[str, Any]) -> Exception:
    """``exc`` prefixed with the experiment file when the field it names (``budgets: ...``) was not set by a flag."""
    field = str(exc).partition(": ")[0]
    if experiment is None or flags.get(field) is not None:
        return exc
    return type(exc)(f"{experiment}: {exc}")


def cmd_search(args: argparse.Namespace) -> int:
    overrides = {k: getattr(args, k) for k in ("model", "data", "space", "profile", "calibration", "objective", "strategy",
                                               "seed", "study", "storage", "out", "weights", "base_epochs",
                                               "proxy_epochs", "final_epochs", "max_train", "cache_dir",
                                               "timeout_s", "device", "workers", "backend", "address",
                                               "cpus_per_trial", "gpus_per_trial", "budget_margin",
                                               "latency_check")}
    overrides["budgets"] = args.budget
    overrides["objective_costs"] = args.objective_costs
    overrides["n_trials"] = args.trials
    config = load_experiment(args.experiment, overrides)
    out = Path(config.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file of that name, a folder it may not write
        raise _in_file(ConfigError(f"out: {out}: cannot make the run folder: {exc.strerror or exc}"),
                       args.experiment, overrides) from None
    handler = logging.FileHandler(out / "search.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("autocompress")
    logger.addHandler(handler)
    try:
        write_run_dir(out, config.to_dict(), {})
        return _search(args, config, overrides, out)
    finally:
        logger.removeHandler(handler)
        handler.close()


def _search(args: argparse.Namespace, config, overrides: dict[str, Any], out: Path) -> int:
    from autocompress.search import prepare, search

    try:  # checks everything in seconds, then trains (or loads) the reference
        setup = prepare(config, progress=not args.quiet)
    except USER_ERRORS as exc:
        raise _in_file(exc, args.experiment, overrides) from exc

    # made after the reference's training; its clock restarts at the first trial (below), so a strategy's set-up
    # (the evolution strategy's sensitivity table: minutes) does not count in the rate and ETA of the trials
    bar = progress_bar(total=config.n_trials, desc="search", unit="trial", enabled=not args.quiet)
    first = [True]

    def on_trial(progress, record) -> None:
        if first[0]:
            first[0] = False
            bar.start_t = time.time() - (record.seconds or 0.0)
        bar.initial = progress.evaluated - progress.evaluated_this_run  # a resumed study's trials are not this run's
        bar.n = progress.evaluated
        best = "-" if progress.best_accuracy is None else f"{progress.best_accuracy:.4f}"
        counts = progress.proposals
        ratio = "-" if counts.priced_per_feasible is None else f"{counts.priced_per_feasible:.1f}"
        bar.set_postfix_str(f"best {best}, front {progress.front_size}, priced {counts.priced} ({ratio} per "
                            f"feasible), duplicates {counts.duplicates}")

    with bar:  # closed on an error too
        result = search(config, setup=setup, on_trial=on_trial, progress=not args.quiet)
    summary = {"study": result.study_name, "storage": result.storage, "budgets": result.budgets,
               "reference": result.reference, "base_model": result.base_info,
               "proposals": result.proposals.to_dict(),
               "front": [{"trial": t.number, "accuracy": t.accuracy, "costs": t.costs} for t in result.front]}
    (out / "front.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"study {result.study_name!r} in {result.storage}: {len(result.front)} Pareto member(s) under "
          f"{', '.join(result.budgets)}")
    print(f"  {result.proposals.summary()}")
    ref = result.reference
    print(f"  reference: latency {ref['latency_ms']:.3f} ms, energy {ref['energy_mj']:.4f} mJ ({ref['energy_method']}), "
          f"size {ref['size_bytes'] / 1024:.1f} KB, val accuracy {result.base_info.get('val_accuracy', float('nan')):.4f}")
    for t in result.front:
        c = t.costs
        print(f"  trial {t.number:4d}: accuracy {t.accuracy:.4f}, latency {c['latency_ms']:.3f} ms, "
              f"energy {c['energy_mj']:.4f} mJ, size {c['size_bytes'] / 1024:.1f} KB")
    if not args.no_export and result.front:
        from autocompress.search import load_study

        _export(setup, load_study(result.storage, result.study_name), out / "export", progress=not args.quiet)
    return 0


def _export(setup, study, out: Path, **options: Any) -> None:
    """Export the front (or chosen trials) and print the manifest."""
    from autocompress.export import (
        export_front,  # matplotlib, onnx, scipy: imported only when exporting
    )

    print_manifest(export_front(setup, study, out, **options), out)


def print_manifest(manifest: Any, out: Path) -> None:
    """``manifest``: the ``autocompress.export.Manifest`` an export returned."""
    print(f"exported {len(manifest.members)} model(s) to {out}:")
    if manifest.screening is not None:
        print(f"  chosen: {manifest.screening.note}")
    ref = manifest.reference
    print(f"  reference : test accuracy {ref.accuracy_test:.4f} "
          f"({ref.accuracy_test_same_fine_tune:.4f} after the members' final fine-tune), latency "
          f"{_ms(ref.predicted.get('latency_ms'))} predicted / {_ms(ref.measured.get('latency_ms'))} measured")
    for m in manifest.members:
        missed = [b.text for b in m.budgets if b.met_measured is False]
        print(f"  trial {m.trial:4d}: test accuracy {m.accuracy_test:.4f}, latency "
              f"{_ms(m.predicted.get('latency_ms'))} predicted / {_ms(m.measured.get('latency_ms'))} measured, "
              + (f"MISSED on measurement: {', '.join(missed)}" if missed else "budgets met"))
    print(f"  manifest: {out / 'manifest.json'}; plots: {out / 'front.png'}, {out / 'policy.png'}")


def _ms(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.3f} ms"


def cmd_export(args: argparse.Namespace) -> int:
    from autocompress.search import SearchConfig, load_study, prepare
    from autocompress.search.study import is_url, study_names

    storage = args.study if is_url(args.study) else Path(args.study)  # Path() would fold sqlite:/// to sqlite:/
    if isinstance(storage, Path) and storage.is_dir():
        storage = storage / "study.journal"
    names = study_names(storage, read_only=True)  # an export reads: it repairs, creates and changes nothing
    name = args.study_name or (names[0] if len(names) == 1 else None)
    if name is None:
        raise SpaceError(f"{storage}: holds studies {names}; choose one with --study-name")
    study = load_study(storage, name, read_only=True)
    stored = study.user_attrs.get("config")
    if not isinstance(stored, dict):
        raise StudyError(f"{storage}: study {name!r} holds no search configuration (not an autocompress study)")
    overrides = {"device": args.device, "seed": args.seed}
    config = search_config({k: v for k, v in stored.items() if k in SearchConfig.fields()}
                           | {k: v for k, v in overrides.items() if v is not None}, f"{storage}: study {name!r}")
    _export(prepare(config, progress=not args.quiet), study, Path(args.out), trials=args.trial,
            final_epochs=args.final_epochs, screen=args.screen, progress=not args.quiet)
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
        p.add_argument("--cache-dir", default=str(DEFAULT_CACHE), help="decoded data and trained base models")

    demo = sub.add_parser("demo", help="compress one candidate end to end and compare it with the reference")
    common(demo)
    demo.add_argument("--candidate", default="uniform:keep=0.5,w_bits=8,a_bits=8",
                      help="identity | random | uniform:keep=0.5,w_bits=8,... | candidate JSON file")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--weights", default=None, help="trained base-model state_dict (loaded with weights_only=True)")
    demo.add_argument("--base-epochs", type=float, default=15.0)
    demo.add_argument("--finetune-epochs", type=float, default=2.0)
    demo.add_argument("--max-train", type=int, default=None, help="subsample the train split")
    demo.add_argument("--device", default="cpu", help=DEVICE_HELP)
    demo.add_argument("--out", default="runs/demo", help="run directory for config.json and result.json")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=cmd_demo)

    models = sub.add_parser("models", help="list the model zoo")
    models.set_defaults(func=cmd_models)

    space = sub.add_parser("space", help="show a model's units, prune groups and joint space")
    common(space)
    space.set_defaults(func=cmd_space)

    add_profile_parser(sub)

    srch = sub.add_parser("search", help="search for the best models under a device budget, then export the front")
    srch.add_argument("experiment", nargs="?", help="experiment YAML (flags override its fields)")
    srch.add_argument("--model", default=None)
    srch.add_argument("--data", default=None)
    srch.add_argument("--space", default=None)
    srch.add_argument("--profile", default=None, help="shipped profile name or JSON path")
    srch.add_argument("--calibration", default=None,
                      help="the profile's model calibration to price with (default: the model's own, else pooled)")
    srch.add_argument("--budget", action="append", default=None,
                      help="e.g. latency<=0.5x, latency_ms<=2.5, energy_mj<=1, size_kb<=200 (repeatable)")
    srch.add_argument("--budget-margin", type=float, default=None,
                      help="search latency and energy budgets this fraction under their limit, e.g. 0.05 for timing "
                           "noise of a few percent (default 0); the export checks the true limit")
    srch.add_argument("--latency-check", action=argparse.BooleanOptionalAction, default=None,
                      help="before searching, time candidates the cost model puts just under the latency budget "
                           "(seconds; on the profile's device only) and aim the budget at what they measured")
    srch.add_argument("--objective", default=None, help="pareto | constrained")
    srch.add_argument("--objective-costs", nargs="+", default=None, help="costs a Pareto search trades against")
    srch.add_argument("--strategy", default=None,
                      help=" | ".join(strategy_names()) + f" (default: {DEFAULT_STRATEGY})")
    srch.add_argument("--trials", type=int, default=None, help="evaluated trials in total (a resumed study continues)")
    srch.add_argument("--timeout-s", type=float, default=None)
    srch.add_argument("--seed", type=int, default=None)
    srch.add_argument("--study", default=None, help="study name")
    srch.add_argument("--storage", default=None, help="journal file or database URL (default <out>/study.journal)")
    srch.add_argument("--out", default=None, help="run directory (default runs/search)")
    srch.add_argument("--weights", default=None, help="trained reference weights (weights_only=True)")
    srch.add_argument("--base-epochs", type=float, default=None)
    srch.add_argument("--proxy-epochs", type=float, default=None)
    srch.add_argument("--final-epochs", type=float, default=None)
    srch.add_argument("--max-train", type=int, default=None)
    srch.add_argument("--device", default=None, help=DEVICE_HELP + " (default cpu)")
    srch.add_argument("--cache-dir", default=None,
                      help=f"decoded data and trained base models (default: the experiment's cache_dir, else "
                           f"{DEFAULT_CACHE})")
    srch.add_argument("--workers", type=int, default=None,
                      help="trials trained at once (default 1): processes of this machine sharing the study, or Ray "
                           "workers with --backend ray; --trials still counts the study's total")
    srch.add_argument("--backend", default=None, choices=("local", "ray"),
                      help="local (default): this machine's processes; ray: trials run as Ray Tune trials")
    srch.add_argument("--address", default=None,
                      help="--backend ray: a running Ray cluster to join ('auto' or ray://HOST:10001); default: "
                           "start a local Ray runtime")
    srch.add_argument("--cpus-per-trial", type=float, default=None, help="--backend ray: CPUs a trial reserves (1)")
    srch.add_argument("--gpus-per-trial", type=float, default=None, help="--backend ray: GPUs a trial reserves (0)")
    srch.add_argument("--no-export", action="store_true", help="stop after the search")
    srch.add_argument("--quiet", action="store_true")
    srch.set_defaults(func=cmd_search)

    exp = sub.add_parser("export", help="export a study's feasible Pareto front (or chosen trials)")
    exp.add_argument("study", help="run directory or study storage (journal file / database URL)")
    exp.add_argument("--study-name", default=None)
    exp.add_argument("--out", required=True)
    exp.add_argument("--trial", type=int, action="append", default=None, help="export this trial (repeatable)")
    exp.add_argument("--final-epochs", type=float, default=None)
    exp.add_argument("--screen", action=argparse.BooleanOptionalAction, default=None,
                     help="time the trained trials as built beside the reference and fine-tune the front chosen on "
                          "that measurement (default: where this machine is the profile's device; --screen also on "
                          "another machine, taken as the target; --no-screen: the front as priced)")
    exp.add_argument("--device", default=None, help=DEVICE_HELP + " (default: the search's)")
    exp.add_argument("--seed", type=int, default=None,
                     help="the final fine-tune's seed: its data order and the validation split carved from the "
                          "training data (default: the search's); another seed replicates a member's fine-tune")
    exp.add_argument("--quiet", action="store_true")
    exp.set_defaults(func=cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("autocompress").setLevel(level)  # also where logging was set up before (an embedding app)
    try:
        return args.func(args)
    except USER_ERRORS as exc:  # one line, whatever line breaks a file name or a library's message holds
        print("autocompress: error: " + "\\n".join(str(exc).splitlines()), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
