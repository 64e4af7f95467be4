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
from autocompress.export.exporter import ExportError
from autocompress.graph import GraphError
from autocompress.hardware.profile import ProfileError
from autocompress.models import ModelError
from autocompress.search.budget import BudgetError
from autocompress.search.study import StudyError
from autocompress.space import CandidateError, SpaceError

USER_ERRORS = (DataError, GraphError, ModelError, SpaceError, CandidateError, ProfileError, BudgetError, StudyError,
               ExportError, FileNotFoundError)
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


def _suites(args: argparse.Namespace) -> list:
    """(model, space) pairs a profile is measured for or validated on, untrained weights."""
    from autocompress.graph import ModelGraph
    from autocompress.models import create_model, model_info
    from autocompress.runtime.validate import Suite
    from autocompress.space import SearchSpace

    shape = tuple(int(x) for x in args.input_shape.lower().split("x"))
    if len(shape) != 3:
        raise SpaceError(f"--input-shape {args.input_shape!r}: expected CxHxW, e.g. 3x32x32")
    spaces = args.spaces or [None] * len(args.models)
    if len(spaces) != len(args.models):
        raise SpaceError("--spaces: give one space per model, or none for the models' default spaces")
    suites = []
    for name, space in zip(args.models, spaces, strict=True):
        model = create_model(name, in_channels=shape[0], num_classes=args.num_classes).eval()
        graph = ModelGraph.from_model(model, shape)
        suites.append(Suite(name, model, SearchSpace.from_yaml(graph, space or model_info(name).family)))
    return suites


def _bar(desc: str):
    from tqdm import tqdm

    bar = tqdm(desc=desc, dynamic_ncols=True)

    def update(done: int, total: int, eta_s: float | None = None) -> None:
        bar.total = total
        bar.n = done
        if eta_s is not None:
            bar.set_postfix_str(f"ETA {eta_s / 60:.1f} min")
        bar.refresh()
    return bar, update


def _timing_options(args: argparse.Namespace) -> dict[str, int]:
    """The timing flags given; the rest keep the defaults of what runs (layers and whole models differ)."""
    return {name: getattr(args, name) for name in ("rounds", "reps", "sessions") if getattr(args, name) is not None}


def cmd_profile(args: argparse.Namespace) -> int:
    from autocompress.hardware import HardwareProfile, required_signatures

    command = "autocompress " + " ".join(sys.argv[1:]) if sys.argv else "autocompress profile"
    if args.action == "show":
        profile = HardwareProfile.load(args.profile)
        print(describe_profile(profile))
        return 0
    if args.action == "validate":
        from autocompress.runtime.validate import validate_profile

        profile = HardwareProfile.load(args.profile)
        if args.from_report:  # recalibrate on the timings of an earlier run instead of measuring again
            from autocompress.runtime.validate import samples_from_report, score_samples

            suites = _suites(args)
            earlier = json.loads(Path(args.from_report).read_text())
            samples = samples_from_report(profile, suites, earlier)
            profile = profile.model_copy(update={"validation": []})
            profile, report = score_samples(profile, suites, samples, sorted({s.subset for s in samples}),
                                            command=command, anchor_ratio=earlier.get("anchor_ratio"))
        else:
            bar, update = _bar("timing whole models")
            profile, report = validate_profile(profile, _suites(args), n_validate=args.n,
                                               n_calibrate=args.calibrate, seed=args.seed, command=command,
                                               progress=update, **_timing_options(args))
            bar.close()
        out = Path(args.out or args.profile)
        profile.save(out)
        report_path = out.with_name(out.stem + ".validation.json")
        report_path.write_text(json.dumps(report, indent=1))
        print(describe_profile(profile))
        print(f"wrote {out} and {report_path}")
        return 0
    if not args.out:
        raise SpaceError("--out: where to write the profile JSON is required")
    if args.action == "analytic":
        from autocompress.hardware import HOROWITZ_45NM, analytic_profile

        rates = {}
        for item in args.peak_gmacs.split(","):
            precision, _, value = item.partition("=")
            rates[precision.strip()] = float(value) * 1e9
        profile = analytic_profile(name=args.name or Path(args.out).stem,
                                   device=args.device or "analytic accelerator",
                                   peak_macs_per_s=rates, bandwidth_bytes_per_s=args.bandwidth_gbs * 1e9,
                                   energy_table=HOROWITZ_45NM, layer_overhead_ms=args.layer_overhead_us / 1e3,
                                   command=command)
        profile.save(args.out)
        print(describe_profile(profile))
        return 0

    from autocompress.runtime.profiler import (
        RUNTIMES,
        ProfileSettings,
        build_profile,
        measure_signatures,
    )

    if args.runtime not in RUNTIMES:
        raise SpaceError(f"--runtime {args.runtime!r}: expected one of {sorted(RUNTIMES)}")
    precisions = args.precisions or list(RUNTIMES[args.runtime]["precisions"])
    suites = _suites(args)
    settings = ProfileSettings(runtime=args.runtime, threads=args.threads, passes=args.passes, warmup=args.warmup,
                               chunk=args.chunk, anchors=args.anchors, seed=args.seed, **_timing_options(args))
    keys = sorted({k for s in suites for k in required_signatures(s.space, precisions)})
    existing = HardwareProfile.load(args.out) if Path(args.out).exists() else None
    if existing is not None:  # extend a profile: measure only what it lacks, keep its calibration
        if (existing.runtime, existing.threads) != (settings.runtime, settings.threads):
            raise ProfileError(f"{args.out}: measured with {existing.runtime}/{existing.threads} thread(s); "
                               f"cannot extend it with {settings.runtime}/{settings.threads}")
        if not args.remeasure:
            keys = [k for k in keys if k not in existing.entries]
    print(f"{len(keys)} layer signatures to measure for {', '.join(args.models)} ({', '.join(precisions)})")
    bar, update = _bar("measuring layers")
    if existing is not None and existing.entries and not existing.anchors:
        logging.getLogger(__name__).warning("%s has no anchor signatures: new entries cannot be put on the scale "
                                            "of its old ones", args.out)
    measured = measure_signatures(keys, args.out, settings, anchors=existing.anchors if existing else None,
                                  progress=update)
    bar.close()
    if measured.chunk_ratios:
        import numpy as np

        low, high = np.percentile(measured.chunk_ratios, [10, 90])
        print(f"anchors: this run's timings x {measured.scale:.3f} to the profile's reference scale "
              f"(single chunks: {low:.3f} .. {high:.3f}, 10th-90th percentile)")
    if existing is not None:
        provenance = existing.provenance.model_copy(
            update={"command": existing.provenance.command + " ; extended by: " + command})
        profile = existing.model_copy(update={"entries": {**existing.entries, **measured.entries},
                                              "anchors": existing.anchors or measured.anchors,
                                              "provenance": provenance})
    else:
        profile = build_profile(args.name or Path(args.out).stem, measured, settings, command=command,
                                versions=versions(), device=args.device)
    profile.save(args.out)
    from autocompress.runtime.profiler import partial_path

    partial_path(Path(args.out)).unlink(missing_ok=True)
    print(describe_profile(profile))
    return 0


def describe_profile(profile) -> str:
    lines = [f"{profile.name}: {profile.kind} profile, {profile.runtime}, {profile.threads} thread(s), "
             f"batch {profile.batch_size}, {len(profile.entries)} layer signatures",
             f"  device: {profile.device.name} ({profile.device.cpu or profile.device.gpu or profile.device.notes})",
             "  precisions: " + "; ".join(f"{k}: {v}" for k, v in profile.precisions.items()),
             f"  energy: {profile.energy.method}" + (f" ({profile.energy.notes})" if profile.energy.notes else "")]
    for name, cal in {"pooled": profile.calibration, **profile.model_calibrations}.items():
        terms = " ".join(f"{c:+.4g}*{f}" for f, c in cal.coefficients.items())
        lines.append(f"  calibration[{name}]: {terms} {cal.offset_ms:+.4f} ms "
                     f"({cal.form}, fitted on {cal.fitted_on} models)")
    if profile.validation:
        lines.append(f"  {'models':44s} {'subset':16s} {'n':>4s} {'spearman':>9s} {'med err%':>9s} "
                     f"{'p90 err%':>9s} {'<=10%':>7s} {'noise%':>7s}")
        for v in profile.validation:
            lines.append(f"  {'+'.join(v.models):44s} {v.subset:16s} {v.n_candidates:4d} {v.spearman:9.3f} "
                         f"{v.median_abs_pct_error:9.2f} {v.p90_abs_pct_error:9.2f} {v.within_10pct:7.0%} "
                         f"{v.noise_floor_pct:7.2f}")
        ratios = {v.date: v.anchor_ratio for v in profile.validation if v.anchor_ratio is not None}
        for date, ratio in ratios.items():
            lines.append(f"  validation of {date}: anchors ran at {ratio:.3f}x their table latency "
                         "(the machine's speed then, against when the table was measured)")
    return "\n".join(lines)


def load_experiment(path: str | None, overrides: dict[str, Any]):
    """An experiment YAML merged with command-line flags (flags win) into a SearchConfig."""
    import dataclasses

    import yaml

    from autocompress.search import SearchConfig

    data: dict[str, Any] = {}
    if path:
        source = Path(path)
        if not source.exists():
            raise FileNotFoundError(f"{source}: no such experiment file")
        try:
            data = yaml.safe_load(source.read_text()) or {}
        except yaml.YAMLError as exc:
            raise SpaceError(f"{source}: not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise SpaceError(f"{source}: expected a mapping of search options at the top level")
        unknown = sorted(set(data) - set(SearchConfig.fields()))
        if unknown:
            raise SpaceError(f"{source}: unknown field(s) {unknown}; expected some of {SearchConfig.fields()}")
        if isinstance(data.get("budgets"), str):
            data["budgets"] = [data["budgets"]]
    data.update({k: v for k, v in overrides.items() if v is not None})
    types = {f.name: f.type for f in dataclasses.fields(SearchConfig)}
    for key, value in data.items():
        want = str(types[key])
        if ("list" in want and not isinstance(value, list)) or (want.startswith("int") and isinstance(value, bool)):
            raise SpaceError(f"{path or 'options'}: field {key}: expected {want}, got {value!r}")
    try:
        return SearchConfig(**data)
    except (TypeError, ValueError) as exc:
        raise SpaceError(f"{path or 'options'}: {exc}") from None


def cmd_search(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from autocompress.search import search

    overrides = {k: getattr(args, k) for k in ("model", "data", "space", "profile", "objective", "strategy",
                                               "seed", "study", "storage", "out", "weights", "base_epochs",
                                               "proxy_epochs", "final_epochs", "max_train", "cache_dir",
                                               "timeout_s")}
    overrides["budgets"] = args.budget
    overrides["objective_costs"] = args.objective_costs
    overrides["n_trials"] = args.trials
    config = load_experiment(args.experiment, overrides)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out / "search.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("autocompress").addHandler(handler)
    write_run_dir(out, config.to_dict(), {})

    bar = tqdm(total=config.n_trials, desc="search", unit="trial", dynamic_ncols=True, disable=args.quiet)

    def on_trial(progress, record) -> None:
        bar.n = progress.evaluated
        best = "-" if progress.best_accuracy is None else f"{progress.best_accuracy:.4f}"
        eta = "-" if progress.eta_s is None else f"{progress.eta_s / 60:.1f} min"
        bar.set_postfix_str(f"best {best}, front {progress.front_size}, filtered {progress.filtered}, ETA {eta}")

    result = search(config, on_trial=on_trial, progress=not args.quiet)
    bar.close()
    summary = {"study": result.study_name, "storage": result.storage, "budgets": result.budgets,
               "reference": result.reference, "base_model": result.base_info,
               "front": [{"trial": t.number, "accuracy": t.accuracy, "costs": t.costs} for t in result.front]}
    (out / "front.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"study {result.study_name!r} in {result.storage}: {len(result.front)} Pareto member(s) under "
          f"{', '.join(result.budgets)}")
    ref = result.reference
    print(f"  reference: latency {ref['latency_ms']:.3f} ms, energy {ref['energy_mj']:.4f} mJ (modelled), "
          f"size {ref['size_bytes'] / 1024:.1f} KB, val accuracy {result.base_info.get('val_accuracy', float('nan')):.4f}")
    for t in result.front:
        c = t.costs
        print(f"  trial {t.number:4d}: accuracy {t.accuracy:.4f}, latency {c['latency_ms']:.3f} ms, "
              f"energy {c['energy_mj']:.4f} mJ, size {c['size_bytes'] / 1024:.1f} KB")
    if not args.no_export and result.front:
        from autocompress.export import export_front
        from autocompress.search import load_study, prepare

        manifest = export_front(prepare(config, progress=not args.quiet), load_study(result.storage, result.study_name),
                                out / "export", progress=not args.quiet)
        print_manifest(manifest, out / "export")
    return 0


def print_manifest(manifest: dict[str, Any], out: Path) -> None:
    print(f"exported {len(manifest['members'])} model(s) to {out}:")
    ref = manifest["reference"]
    print(f"  reference : test accuracy {ref['accuracy_test']:.4f} "
          f"({ref['accuracy_test_same_fine_tune']:.4f} after the members' final fine-tune), latency "
          f"{_ms(ref['predicted'].get('latency_ms'))} predicted / {_ms(ref['measured'].get('latency_ms'))} measured")
    for m in manifest["members"]:
        missed = [b["text"] for b in m["budgets"] if b.get("met_measured") is False]
        print(f"  trial {m['trial']:4d}: test accuracy {m['accuracy_test']:.4f}, latency "
              f"{_ms(m['predicted'].get('latency_ms'))} predicted / {_ms(m['measured'].get('latency_ms'))} measured, "
              + (f"MISSED on measurement: {', '.join(missed)}" if missed else "budgets met"))
    print(f"  manifest: {out / 'manifest.json'}; plots: {out / 'front.png'}, {out / 'policy.png'}")


def _ms(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.3f} ms"


def cmd_export(args: argparse.Namespace) -> int:
    from autocompress.export import export_front
    from autocompress.search import SearchConfig, load_study, prepare
    from autocompress.search.study import study_names

    storage = Path(args.study)
    if storage.is_dir():
        storage = storage / "study.journal"
    names = study_names(storage)
    name = args.study_name or (names[0] if len(names) == 1 else None)
    if name is None:
        raise SpaceError(f"{storage}: holds studies {names}; choose one with --study-name")
    study = load_study(storage, name)
    config = SearchConfig(**{k: v for k, v in study.user_attrs["config"].items() if k in SearchConfig.fields()})
    manifest = export_front(prepare(config, progress=not args.quiet), study, Path(args.out), trials=args.trial,
                            final_epochs=args.final_epochs, progress=not args.quiet)
    print_manifest(manifest, Path(args.out))
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

    prof = sub.add_parser("profile", help="measure, validate, model or show a hardware profile")
    prof.add_argument("action", nargs="?", default="measure", choices=["measure", "validate", "analytic", "show"])
    prof.add_argument("profile", nargs="?", help="profile JSON (validate, show)")
    prof.add_argument("--models", nargs="+", default=["resnet20", "mobilenetv2_cifar"])
    prof.add_argument("--spaces", nargs="+", default=None, help="one space per model (default: the family's)")
    prof.add_argument("--input-shape", default="3x32x32")
    prof.add_argument("--num-classes", type=int, default=10)
    prof.add_argument("--runtime", default="onnxruntime", help="onnxruntime | torch-eager")
    prof.add_argument("--threads", type=int, default=1)
    prof.add_argument("--precisions", nargs="+", default=None, help="kernel precisions to measure (default: all the runtime has)")
    prof.add_argument("--passes", type=int, default=2,
                      help="measure: passes over the whole table, the fastest counts (damps drift)")
    prof.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default: 3)")
    prof.add_argument("--reps", type=int, default=None, help="timed runs per round (default: measure 20, validate 10)")
    prof.add_argument("--warmup", type=int, default=3)
    prof.add_argument("--chunk", type=int, default=48, help="signatures per resumable chunk")
    prof.add_argument("--sessions", type=int, default=None,
                      help="runtime sessions per timed model (default: measure 2 per layer, the fastest counts; "
                           "validate 3 per whole model and set, each timed against the uncompressed model)")
    prof.add_argument("--anchors", type=int, default=4,
                      help="measure: anchor signatures timed in every chunk to correct drift (0: none)")
    prof.add_argument("--remeasure", action="store_true",
                      help="measure: re-measure these models' signatures even where the profile has them")
    prof.add_argument("--n", type=int, default=50, help="validate: held-out candidates per model")
    prof.add_argument("--calibrate", type=int, default=20, help="validate: calibration candidates per model")
    prof.add_argument("--from-report", default=None,
                      help="validate: recalibrate on the measured timings of an earlier validation report")
    prof.add_argument("--seed", type=int, default=0)
    prof.add_argument("--name", default=None)
    prof.add_argument("--out", default=None, help="profile JSON to write (validate: default in place)")
    prof.add_argument("--device", default=None, help="a name for the device (default: this host's name)")
    prof.add_argument("--peak-gmacs", default="fp32=100,int8=400", help="analytic: peak GMAC/s per precision")
    prof.add_argument("--bandwidth-gbs", type=float, default=25.0, help="analytic: memory bandwidth, GB/s")
    prof.add_argument("--layer-overhead-us", type=float, default=2.0, help="analytic: fixed cost per layer")
    prof.set_defaults(func=cmd_profile)

    srch = sub.add_parser("search", help="search for the best models under a device budget, then export the front")
    srch.add_argument("experiment", nargs="?", help="experiment YAML (flags override its fields)")
    srch.add_argument("--model", default=None)
    srch.add_argument("--data", default=None)
    srch.add_argument("--space", default=None)
    srch.add_argument("--profile", default=None, help="shipped profile name or JSON path")
    srch.add_argument("--budget", action="append", default=None,
                      help="e.g. latency<=0.5x, latency_ms<=2.5, energy_mj<=1, size_kb<=200 (repeatable)")
    srch.add_argument("--objective", default=None, help="pareto | constrained")
    srch.add_argument("--objective-costs", nargs="+", default=None, help="costs a Pareto search trades against")
    srch.add_argument("--strategy", default=None, help="tpe | nsga2 | random | qmc | ddpg | netadapt")
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
    srch.add_argument("--cache-dir", default=str(DEFAULT_CACHE))
    srch.add_argument("--no-export", action="store_true", help="stop after the search")
    srch.add_argument("--quiet", action="store_true")
    srch.set_defaults(func=cmd_search)

    exp = sub.add_parser("export", help="export a study's feasible Pareto front (or chosen trials)")
    exp.add_argument("study", help="run directory or study storage (journal file / database URL)")
    exp.add_argument("--study-name", default=None)
    exp.add_argument("--out", required=True)
    exp.add_argument("--trial", type=int, action="append", default=None, help="export this trial (repeatable)")
    exp.add_argument("--final-epochs", type=float, default=None)
    exp.add_argument("--quiet", action="store_true")
    exp.set_defaults(func=cmd_export)
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
