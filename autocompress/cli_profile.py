"""``autocompress profile measure | validate | fit-predictor | analytic | import | show | diff``: make, check and describe
hardware profiles.

Each verb is its own subcommand with only its own options; the models a
profile is measured for or validated on are untrained zoo models, so nothing
here needs data.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from autocompress.hardware.importers import FORMATS as TABLE_FORMATS
from autocompress.hardware.profile import ProfileError
from autocompress.progress import progress_bar
from autocompress.space import SpaceError
from autocompress.versions import versions


def _suites(args: argparse.Namespace) -> list:
    """(model, space) pairs a profile is measured for or validated on, untrained weights."""
    from autocompress.graph import ModelGraph
    from autocompress.models import create_model, model_info
    from autocompress.runtime.validate import Suite
    from autocompress.space import SearchSpace

    parts = args.input_shape.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise SpaceError(f"--input-shape {args.input_shape!r}: expected CxHxW with positive integers, e.g. 3x32x32")
    shape = tuple(int(p) for p in parts)
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
    """A progress display and the ``progress(done, total[, eta_s])`` callback the profiler and validation call."""
    bar = progress_bar(desc=desc)
    started: list[bool] = []

    def update(done: int, total: int, eta_s: float | None = None) -> None:
        if not started:  # the clock starts at the first step done, not with the set-up before it (minutes of
            started.append(True)  # exports before a validation times anything read as an ETA of hours)
            bar.reset(total=total)
        bar.total = total
        bar.n = done
        if eta_s is not None:
            bar.set_postfix_str(f"ETA {eta_s / 60:.1f} min", refresh=False)
        bar.refresh()
    return bar, update


def _timing_options(args: argparse.Namespace) -> dict[str, int]:
    """The timing flags given; the rest keep the defaults of what runs (layers and whole models differ)."""
    return {name: getattr(args, name) for name in ("rounds", "reps", "sessions") if getattr(args, name) is not None}


def _command() -> str:
    """How this run was invoked, for a profile's provenance."""
    return "autocompress " + " ".join(sys.argv[1:]) if sys.argv else "autocompress profile"


def cmd_profile_show(args: argparse.Namespace) -> int:
    from autocompress.hardware.profile import find_profile

    print(describe_profile(find_profile(args.profile)))
    return 0


def cmd_profile_diff(args: argparse.Namespace) -> int:
    from autocompress.hardware.profile import find_profile
    from autocompress.hardware.profile_diff import diff_profiles, plot_diff

    diff = diff_profiles(find_profile(args.a), find_profile(args.b))
    print(diff.table())
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(diff.to_dict(), indent=1))
        plot_diff(diff, out.with_suffix(".png"))
        print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")
    return 0


def cmd_profile_validate(args: argparse.Namespace) -> int:
    from autocompress.hardware import HardwareProfile
    from autocompress.runtime.validate import validate_profile

    command = _command()
    unknown = sorted(set(args.hold_out) - set(args.models))
    if unknown:
        raise ProfileError(f"--hold-out {' '.join(unknown)}: not among --models {' '.join(args.models)}")
    profile = HardwareProfile.load(args.profile)
    if args.from_report:  # recalibrate on the timings of an earlier run instead of measuring again
        from autocompress.runtime.validate import samples_from_report, score_samples

        suites = _suites(args)
        earlier = json.loads(Path(args.from_report).read_text())
        samples = samples_from_report(profile, suites, earlier)
        profile = profile.model_copy(update={"validation": []})
        profile, report = score_samples(profile, suites, samples, sorted({s.subset for s in samples}),
                                        command=command, anchor_ratio=earlier.get("anchor_ratio"),
                                        reference_ms=earlier.get("reference_ms"), hold_out=args.hold_out)
    else:
        from autocompress.runtime.machine_check import Settler, check_machine, in_slow_spell

        # a second: the validation times this machine, not the profile's; in a slow spell, wait for it to pass,
        # before the first round and between rounds, from one budget of --settle-wait seconds
        settler = Settler(profile, within_pct=args.settle, wait_s=args.settle_wait if args.settle else 0.0,
                          seed=args.seed)
        machine = settler("start")
        print(machine.summary())
        if not machine.matches:
            print(f"warning: {machine.warning(' '.join(args.models))}", file=sys.stderr)
        elif args.settle and in_slow_spell(machine, args.settle):
            print(f"warning: the anchors still run at {machine.speed_ratio:.2f}x their table after up to "
                  f"{args.settle_wait:g} s of waiting (--settle {args.settle:g}%): this validation times the machine "
                  "in a slow spell, and models whose weights leave the cache drift most from their prediction",
                  file=sys.stderr)
        if machine.memory_off:
            print(f"warning: {machine.memory_warning()}", file=sys.stderr)
        bar, update = _bar("timing whole models")
        with bar:
            profile, report = validate_profile(profile, _suites(args), n_validate=args.n,
                                               n_calibrate=args.calibrate, seed=args.seed, command=command,
                                               hold_out=args.hold_out, noise_bound_pct=args.noise_bound,
                                               max_rounds=args.max_rounds, progress=update,
                                               before_round=(lambda done: settler(f"round {done + 1}"))
                                               if args.settle and machine.matches else None,
                                               **_timing_options(args))
        slow = [check["stage"] for check in settler.checks[1:] if check["slow"]]
        if slow:
            print(f"warning: the anchors ran more than {args.settle:g}% off their table before {', '.join(slow)} "
                  f"with the {args.settle_wait:g} s of --settle-wait spent: those rounds timed a slow spell",
                  file=sys.stderr)
        # memory's pace moves over minutes on a shared machine: what it was at both ends of the timing
        after = check_machine(profile, seed=args.seed)
        print(after.summary())
        report["machine_check"] = {"before": machine.to_dict(), "after": after.to_dict(), "settle": settler.checks}
    out = Path(args.out or args.profile)
    profile.save(out)
    report_path = out.with_name(out.stem + ".validation.json")
    report_path.write_text(json.dumps(report, indent=1))
    print(describe_profile(profile))
    print(f"wrote {out} and {report_path}")
    return 0


def cmd_profile_fit_predictor(args: argparse.Namespace) -> int:
    import datetime

    from autocompress.hardware.predictor import fit_predictor
    from autocompress.hardware.profile import find_profile

    profile = find_profile(args.profile)
    if not profile.entries:
        raise ProfileError(f"{args.profile}: profile {profile.name!r} has no layer entries to fit a predictor on "
                           f"(a {profile.kind} profile; fit one on a measured profile)")
    if args.folds < 2:
        raise ProfileError(f"--folds {args.folds}: expected at least 2")
    out = Path(args.out) if args.out else Path(args.profile)
    if not args.out and not out.exists():
        raise ProfileError(f"{args.profile!r} is a shipped profile name: give --out PATH to write the profile with "
                           "its predictor")
    if args.trees < 1:
        raise ProfileError(f"--trees {args.trees}: expected at least 1")
    bar, update = _bar("fitting operator types")
    with bar:
        try:
            predictor = fit_predictor(profile, folds=args.folds, seed=args.seed, trees=args.trees,
                                      date=datetime.date.today().isoformat(), command=_command(), progress=update)
        except ValueError as exc:  # too few entries of every operator type
            raise ProfileError(f"{args.profile}: {exc}") from None
    profile = profile.model_copy(update={"predictor": predictor})
    profile.save(out)
    print(f"{profile.name}: predictor for unseen signatures, held-out error ({args.folds}-fold, seed {args.seed}) "
          "of log-latency regressions per operator type and precision:")
    print(predictor.summary())
    print(f"wrote {out}")
    return 0


def _model_params(items: list[str]) -> dict[str, object]:
    """``--param NAME=VALUE`` pairs: numbers where they parse as numbers, words otherwise."""
    params: dict[str, object] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name.strip() or not text.strip():
            raise ProfileError(f"--param {item!r}: expected NAME=VALUE, e.g. clock_hz=4e8")
        value: object = text.strip()
        for kind in (int, float):
            try:
                value = kind(text)
                break
            except ValueError:
                continue
        params[name.strip()] = value
    return params


def cmd_profile_analytic(args: argparse.Namespace) -> int:
    from autocompress.hardware import (
        HOROWITZ_45NM,
        accelerator_model,
        accelerator_profile,
        analytic_profile,
    )

    name = args.name or Path(args.out).stem
    if args.model != "roofline":  # a named accelerator model: its defaults, some overridden by --param
        given = [flag for flag, value in (("--peak-gmacs", args.peak_gmacs), ("--bandwidth-gbs", args.bandwidth_gbs),
                                          ("--layer-overhead-us", args.layer_overhead_us)) if value is not None]
        if given:
            raise ProfileError(f"{', '.join(given)}: roofline options; set a {args.model} model's parameters with "
                               f"--param NAME=VALUE (see `autocompress profile show` of its profile)")
        model = accelerator_model(args.model, **_model_params(args.param))
        profile = accelerator_profile(model, name=name, device=args.device, command=_command())
        profile.save(args.out)
        print(describe_profile(profile))
        return 0
    if args.param:
        raise ProfileError("--param: parameters of a named model (--model bitfusion | eyeriss); a roofline takes "
                           "--peak-gmacs, --bandwidth-gbs and --layer-overhead-us")
    peak_gmacs = args.peak_gmacs if args.peak_gmacs is not None else "fp32=100,int8=400"
    rates = {}
    for item in peak_gmacs.split(","):
        precision, _, value = item.partition("=")
        try:
            rates[precision.strip()] = float(value) * 1e9
        except ValueError:
            raise SpaceError(f"--peak-gmacs {peak_gmacs!r}: expected PRECISION=GMACS,... "
                             "e.g. fp32=100,int8=400") from None
    bandwidth_gbs = args.bandwidth_gbs if args.bandwidth_gbs is not None else 25.0
    overhead_us = args.layer_overhead_us if args.layer_overhead_us is not None else 2.0
    profile = analytic_profile(name=name, device=args.device or "analytic accelerator",
                               peak_macs_per_s=rates, bandwidth_bytes_per_s=bandwidth_gbs * 1e9,
                               energy_table=HOROWITZ_45NM, layer_overhead_ms=overhead_us / 1e3,
                               command=_command())
    profile.save(args.out)
    print(describe_profile(profile))
    return 0


def cmd_profile_measure(args: argparse.Namespace) -> int:
    from autocompress.hardware import HardwareProfile, required_signatures
    from autocompress.runtime import create_runtime
    from autocompress.runtime.profiler import ProfileSettings, build_profile, measure_signatures

    precisions = args.precisions or list(create_runtime(args.runtime, threads=args.threads).precisions)
    suites = _suites(args)
    command = _command()
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
    ops_to_measure = _graph_ops_to_measure(existing, suites, settings.runtime, remeasure=args.remeasure)
    if existing is not None and not keys:  # every signature is there: at most the graph operations are new
        missing_probe = existing.kind == "measured" and existing.memory_probe_ms is None
        return _add_graph_ops(args.out, ops_to_measure, command) if ops_to_measure or missing_probe else 0
    bar, update = _bar("measuring layers")
    if existing is not None and existing.entries and not existing.anchors:
        logging.getLogger(__name__).warning("%s has no anchor signatures: new entries cannot be put on the scale "
                                            "of its old ones", args.out)
    with bar:
        measured = measure_signatures(keys, args.out, settings, anchors=existing.anchors if existing else None,
                                      progress=update)
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
    return _add_graph_ops(args.out, ops_to_measure, command)


def _graph_ops_to_measure(existing, suites: list, runtime: str, *, remeasure: bool) -> list:
    """The suites whose operations between layers the profile lacks (ONNX Runtime profiles only)."""
    from autocompress.hardware.profile import calibration_key

    if runtime != "onnxruntime":
        return []
    have = {} if existing is None or remeasure else existing.graph_ops
    return [s for s in suites if calibration_key(s.name, s.space.graph.input_shape) not in have]


def _add_graph_ops(path: str, suites: list, command: str) -> int:
    """Time each suite's operations between layers in its own graph, on the table's scale, in passes over every
    suite (each node at its fastest pass, :func:`~autocompress.runtime.graph_ops.fastest`), and store them; keep
    the memory probe in a measured profile that lacks one (later machine checks compare memory's pace against
    compute with it). One machine check, timed now, serves both."""
    from autocompress.compress import materialize
    from autocompress.hardware import HardwareProfile
    from autocompress.hardware.cost_model import CostModel
    from autocompress.hardware.profile import calibration_key
    from autocompress.runtime.graph_ops import GRAPH_OPS_PASSES, fastest, measure_graph_ops
    from autocompress.runtime.machine_check import check_machine, with_memory_probe

    profile = HardwareProfile.load(path)
    missing_probe = profile.kind == "measured" and profile.memory_probe_ms is None
    check = check_machine(profile) if suites or missing_probe else None
    if missing_probe:
        profile = with_memory_probe(profile, check)
        if profile.memory_probe_ms is not None:
            print(f"memory probe: {profile.memory_probe_ms:.3f} ms on the table's scale")
    if suites:
        ratio = check.speed_ratio  # this run's speed against the table's scale
        plans = []
        for suite in suites:
            # the float build, the all-int8 one with int8 kernels, and the narrowest uniform float build (so a
            # node's fixed cost is not scaled away), priced together
            builds = {"fp32": suite.space.identity()}
            if "int8" in profile.precisions:
                builds["int8"] = suite.space.uniform(w_bits=8, a_bits=8)
            keeps = suite.space.choice_values("keep")
            slim = suite.space.uniform(keep=keeps[0]) if keeps and keeps[0] < 1.0 else None
            candidates = [*builds.values(), *([slim] if slim is not None else [])]
            priced = CostModel(profile, suite.space).predict_batch(suite.space.encoding.encode(candidates))
            table_ms = {p: float(priced["latency_sum_ms"][i]) for i, p in enumerate(builds)}
            narrow = (None if slim is None else
                      (materialize(suite.model, slim, suite.space).eval(), float(priced["mact_float"][-1])))
            plans.append((calibration_key(suite.name, suite.space.graph.input_shape), suite,
                          float(priced["mact_float"][0]), table_ms, narrow))
        found: dict[str, list] = {}
        # passes over every model one after another: a pass that lands in a slow spell does not count
        for key, suite, mact, table_ms, narrow in [plan for _ in range(GRAPH_OPS_PASSES) for plan in plans]:
            found.setdefault(key, []).append(measure_graph_ops(
                suite.model, suite.space.graph.input_shape, mact, table_ms, narrow=narrow, threads=profile.threads,
                scale=1.0 / ratio if ratio else 1.0, command=command))
        profile = profile.model_copy(update={"graph_ops": {**profile.graph_ops,
                                                           **{key: fastest(ops) for key, ops in found.items()}}})
    if check is not None:
        profile.save(path)
    print(describe_profile(profile))
    return 0


def cmd_profile_import(args: argparse.Namespace) -> int:
    from autocompress.hardware.importers import import_table

    source = Path(args.table)
    out = Path(args.out) if args.out else Path("hw_profiles") / f"{args.name or source.stem}.json"
    profile = import_table(source, args.format, name=args.name or out.stem, device=args.device,
                           runtime=args.runtime, obtained=args.obtained, command=_command())
    profile.save(out)
    print(describe_profile(profile))
    print(f"wrote {out}")
    return 0


def describe_imported(profile) -> str:
    """An imported profile's summary: what the table is, where it came from, and its entries per type."""
    table = profile.imported
    counts = ", ".join(f"{n} {name}" for name, n in sorted(table.counts().items()))
    units = ", ".join(f"{k} in {v}" for k, v in table.units.items())
    lines = [f"{profile.name}: imported profile ({table.format} table), {table.obtained}, batch {profile.batch_size}",
             f"  device: {profile.device.name}" + (f" ({profile.device.notes})" if profile.device.notes else "")
             + f"; runtime: {profile.runtime}",
             f"  source: {table.source_file} (sha256 {table.sha256[:16]}...); {profile.provenance.source}",
             f"  entries: {len(table.blocks) + len(table.layers) + len(table.parts)} ({counts})",
             f"  units: {units}"]
    if table.input_resolution is not None:
        lines.append(f"  input resolution: {table.input_resolution}")
    pairs = sorted({(e.w_bits, e.a_bits) for e in table.layers})
    if pairs:
        lines.append("  bit-widths (W/A): " + " ".join(f"W{w}A{a}" for w, a in pairs))
    if table.notes:
        lines.append(f"  notes: {table.notes}")
    lines.append("  (block and per-bit-width tables are kept as imported; the cost model does not price them yet)")
    return "\n".join(lines)


def describe_profile(profile) -> str:
    if profile.imported is not None:
        return describe_imported(profile)
    lines = [f"{profile.name}: {profile.kind} profile, {profile.runtime}, {profile.threads} thread(s), "
             f"batch {profile.batch_size}, {len(profile.entries)} layer signatures",
             f"  device: {profile.device.name} ({profile.device.cpu or profile.device.gpu or profile.device.notes})",
             "  precisions: " + "; ".join(f"{k}: {v}" for k, v in profile.precisions.items()),
             f"  energy: {profile.energy.method}" + (f" ({profile.energy.notes})" if profile.energy.notes else "")]
    if profile.memory_probe_ms is not None:
        lines.append(f"  memory probe: {profile.memory_probe_ms:.4f} ms on the table's scale (16 MB of weights; the "
                     "machine check compares memory's pace against compute with it)")
    if profile.accelerator is not None:
        model = profile.accelerator
        lines.append(f"  accelerator model: {model.model} (modelled, not measured); parameters:")
        params = model.model_dump(exclude={"model"})
        width = max(len(k) for k in params)
        lines.extend(f"    {k:{width}s} = {v:g}" if isinstance(v, float) else f"    {k:{width}s} = {v}"
                     for k, v in params.items())
    for name, cal in {"pooled": profile.calibration, **profile.model_calibrations}.items():
        terms = " ".join(f"{c:+.4g}*{f}" for f, c in cal.coefficients.items())
        lines.append(f"  calibration[{name}]: {terms} {cal.offset_ms:+.4f} ms "
                     f"({cal.form}, fitted on {cal.fitted_on} models)")
    for name, ops in profile.graph_ops.items():
        top = ", ".join(f"{op} {ms * 1e3:.0f} us" for op, ms in list(ops.by_op.get("fp32", {}).items())[:3])
        narrow = (f"; narrowest uniform build {ops.narrow_float_ms:.4f} / {ops.narrow_quant_ms or 0.0:.4f} ms"
                  if ops.narrow_mact is not None else "")
        lines.append(f"  between layers[{name}]: {ops.float_ms:.4f} ms float, {ops.quant_ms:.4f} ms int8, timed in "
                     f"its own graph ({top}){narrow}")
        if ops.layers_ms:
            lines.append(f"  layers in context[{name}]: " + ", ".join(
                f"{p} {ops.layers_ms[p]:.4f} ms in the graph / {ops.table_ms[p]:.4f} ms alone = "
                f"{ops.layer_factor(p):.3f}x" for p in ops.layers_ms))
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
    if profile.predictor is not None:
        fitted = sum(g.fitted_on for g in profile.predictor.groups.values())
        lines.append(f"  predictor for signatures the table lacks: fitted {profile.predictor.date} on {fitted} "
                     "entries; held-out error of predicted latency:")
        lines.append(profile.predictor.summary())
    return "\n".join(lines)


def add_profile_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``profile`` and its six verbs to the command parsers ``sub``."""
    prof = sub.add_parser("profile", help="measure, validate, model, import or show a hardware profile")
    verbs = prof.add_subparsers(dest="action", required=True,
                                metavar="{measure,validate,fit-predictor,analytic,import,show,diff}")
    suites = argparse.ArgumentParser(add_help=False)  # the models a profile is measured for or validated on
    suites.add_argument("--models", nargs="+", default=["resnet20", "mobilenetv2_cifar"])
    suites.add_argument("--spaces", nargs="+", default=None, help="one space per model (default: the family's)")
    suites.add_argument("--input-shape", default="3x32x32")
    suites.add_argument("--num-classes", type=int, default=10)
    suites.add_argument("--seed", type=int, default=0)
    timing = argparse.ArgumentParser(add_help=False)
    timing.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default: 3)")

    measure = verbs.add_parser("measure", parents=[suites, timing],
                               help="time every layer signature the models' spaces can produce, on this machine")
    measure.add_argument("--reps", type=int, default=None, help="timed runs per round (default: 20)")
    measure.add_argument("--sessions", type=int, default=None,
                         help="runtime sessions per layer (default: 2, the fastest counts)")
    measure.add_argument("--out", required=True, help="profile JSON to write, or to extend when it exists")
    measure.add_argument("--runtime", default="onnxruntime", help="onnxruntime | torch-eager")
    measure.add_argument("--threads", type=int, default=1)
    measure.add_argument("--precisions", nargs="+", default=None,
                         help="kernel precisions to measure (default: all the runtime has)")
    measure.add_argument("--passes", type=int, default=2,
                         help="passes over the whole table, the fastest counts (damps drift)")
    measure.add_argument("--warmup", type=int, default=3)
    measure.add_argument("--chunk", type=int, default=48, help="signatures per resumable chunk")
    measure.add_argument("--anchors", type=int, default=4,
                         help="anchor signatures timed in every chunk to correct drift (0: none)")
    measure.add_argument("--remeasure", action="store_true",
                         help="re-measure these models' signatures even where the profile has them")
    measure.add_argument("--name", default=None, help="the profile's name (default: the file's stem)")
    measure.add_argument("--device", default=None, help="a name for the device (default: this host's name)")
    measure.set_defaults(func=cmd_profile_measure)

    validate = verbs.add_parser("validate", parents=[suites, timing],
                                help="calibrate and validate a profile on held-out whole models")
    validate.add_argument("profile", help="profile JSON")
    validate.add_argument("--reps", type=int, default=None, help="timed runs per round (default: 10)")
    validate.add_argument("--sessions", type=int, default=None,
                          help="runtime sessions per whole model and set (default: 3, each timed against the "
                               "uncompressed model)")
    validate.add_argument("--n", type=int, default=50, help="held-out candidates per model")
    validate.add_argument("--calibrate", type=int, default=20,
                          help="calibration candidates per model; 0: price the models with the calibration the "
                               "profile holds (checks it on models it was never fitted on)")
    validate.add_argument("--hold-out", nargs="+", default=[], metavar="MODEL",
                          help="models of --models timed in the same run but never calibrated on: priced with the "
                               "calibration this run fits on the others (how a profile does on models it never saw)")
    validate.add_argument("--noise-bound", type=float, default=3.0, metavar="PCT",
                          help="after --rounds, give every model whose noise floor (how far its two session sets "
                               "disagree) is above PCT%% another round, up to --max-rounds (default: 3; 0: never)")
    validate.add_argument("--max-rounds", type=int, default=None,
                          help="most rounds a noisy model gets (default: twice --rounds)")
    validate.add_argument("--settle", type=float, default=10.0, metavar="PCT",
                          help="before timing and between its rounds, wait while the profile's anchors run more "
                               "than PCT%% off their table (a slow spell on a shared machine), up to --settle-wait in "
                               "all (default: 10; 0: never wait)")
    validate.add_argument("--settle-wait", type=float, default=300.0, metavar="SECONDS",
                          help="the most --settle waits in all; past it the timing goes on, with a warning "
                               "(default: 300)")
    validate.add_argument("--from-report", default=None,
                          help="recalibrate on the measured timings of an earlier validation report")
    validate.add_argument("--out", default=None, help="profile JSON to write (default: in place)")
    validate.set_defaults(func=cmd_profile_validate)

    fit = verbs.add_parser("fit-predictor", help="fit regressions on a profile's entries that price the layer "
                                                 "signatures it lacks, and print their held-out error")
    fit.add_argument("profile", help="profile JSON or shipped name")
    fit.add_argument("--out", default=None, help="profile JSON to write (default: in place)")
    fit.add_argument("--folds", type=int, default=5, help="cross-validation folds for the held-out error")
    fit.add_argument("--seed", type=int, default=0, help="shuffles the folds and seeds the trees")
    fit.add_argument("--trees", type=int, default=150, help="boosted trees per regression")
    fit.set_defaults(func=cmd_profile_fit_predictor)

    analytic = verbs.add_parser("analytic", help="describe an accelerator: a roofline, or a named model "
                                                 "(bitfusion, eyeriss) that prices every bit-width")
    analytic.add_argument("--out", required=True, help="profile JSON to write")
    analytic.add_argument("--name", default=None, help="the profile's name (default: the file's stem)")
    analytic.add_argument("--device", default=None, help="a name for the device")
    analytic.add_argument("--model", default="roofline", choices=("roofline", "bitfusion", "eyeriss"),
                          help="roofline: peak rates per precision (below 8 bits runs as int8); bitfusion: a "
                               "bit-flexible array, w2..w8 x a2..a8 priced apart; eyeriss: a row-stationary array "
                               "priced by data movement")
    analytic.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                          help="a bitfusion / eyeriss model parameter, repeatable, e.g. --param clock_hz=4e8 "
                               "(names and defaults: `autocompress profile show` of a profile)")
    analytic.add_argument("--peak-gmacs", default=None, help="roofline: peak GMAC/s per precision "
                                                             "(default fp32=100,int8=400)")
    analytic.add_argument("--bandwidth-gbs", type=float, default=None, help="roofline: memory bandwidth, GB/s "
                                                                            "(default 25)")
    analytic.add_argument("--layer-overhead-us", type=float, default=None,
                          help="roofline: fixed cost per layer, microseconds (default 2)")
    analytic.set_defaults(func=cmd_profile_analytic)

    imp = verbs.add_parser("import", help="import a published lookup table (ProxylessNAS, Once-for-All, APQ, "
                                          "or a generic CSV/JSON table) as a profile")
    imp.add_argument("table", help="the table file")
    imp.add_argument("--format", required=True, choices=TABLE_FORMATS,
                     help="proxyless | ofa (per-block YAML), apq (per-layer JSON at W/A bit-widths), "
                          "generic (CSV or JSON rows, see the README)")
    imp.add_argument("--out", default=None, help="profile JSON to write (default hw_profiles/NAME.json)")
    imp.add_argument("--name", default=None, help="the profile's name (default: the output's or table's stem)")
    imp.add_argument("--device", default=None, help="the device the table is for (default: the format's known one)")
    imp.add_argument("--runtime", default=None, help="the runtime it was measured with (default: as known)")
    imp.add_argument("--obtained", default=None, choices=("measured", "simulated", "unknown"),
                     help="how the figures were obtained (default: as known for the format; generic: unknown)")
    imp.set_defaults(func=cmd_profile_import)

    show = verbs.add_parser("show", help="describe a profile: device, calibration, validation")
    show.add_argument("profile", help="profile JSON or shipped name")
    show.set_defaults(func=cmd_profile_show)

    diff = verbs.add_parser("diff", help="how two profiles differ: latency ratios B / A per operator type, precision "
                                         "and layer size, and a plot")
    diff.add_argument("a", help="profile JSON or shipped name (the one you move from)")
    diff.add_argument("b", help="profile JSON or shipped name (the one you move to)")
    diff.add_argument("--out", default=None, help="write OUT.json (the ratios) and OUT.png (the plot)")
    diff.set_defaults(func=cmd_profile_diff)
