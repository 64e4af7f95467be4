"""Baselines at a latency or size budget, each given exactly the final fine-tune the exporter gives search members.

    python experiments/cifar10/baselines.py --model resnet20 --budget 0.5              # all, reference first
    python experiments/cifar10/baselines.py --model resnet20 --budget 0.5 --only tp-global
    python experiments/cifar10/baselines.py --model resnet20 --metric size --budget 0.1   # size<=0.1x

Every baseline is built from the same reference weights, data split, space and
profile as ``autocompress search --weights <reference> --budget <metric><=<budget>x``
(the same :class:`~autocompress.search.SearchConfig`, so ``prepare`` rebuilds
the same setup), then fine-tuned, saved, exported and counted by the exporter's
own code. Baselines (``--only`` names one; repeatable):

- ``reference``: the uncompressed model given the members' final fine-tune
  (the exporter's own reference step), so every delta compares like with like;
- ``l1-uniform``: ``space.uniform(keep=k)`` (L1 group-magnitude channel pruning,
  fp32) with the largest ``k`` whose **measured** latency meets the budget;
- ``int8-uniform``: every layer w8a8 at keep 1.0 (kept, and marked, when over budget);
- ``l1-uniform-int8``: uniform keep + w8a8, the largest keep whose **measured** latency meets the budget;
- ``compound-uniform``: the space's scalings (compound phi < 0; in a space with
  explicit scaling, every combination of its depth, width and resolution below
  the trained model's) plus a uniform keep where needed: the combinations ordered by predicted latency, bisected
  for the largest whose **measured** latency meets the budget;
- ``compound-uniform-int8``: the same combinations with every layer w8a8, the
  largest whose **measured** latency meets the budget (the search's anchors of
  that kind are exactly these candidates; its int8 files are calibrated on the
  export's training images before they are timed, as the export's screening does);
- ``tp-global``: Torch-Pruning's global ranking (MetaPruner, ``global_pruning=True``,
  L1 group magnitude, the classifier ignored, ``round_to`` Torch-Pruning's default
  of none unless ``--tp-round-to`` sets it), its pruning ratio
  found by bisection on the **measured** ONNX Runtime latency ratio to the
  reference (timed interleaved with it, the profile's runtime and threads);
- ``amc`` / ``amc-int8``: the per-layer widths NNI's AMC pruner chose
  (``amc_nni.py``, run in NNI's own environment; ``--amc`` names its
  ``amc.json``), each snapped to the nearest keep ratio of the space, fp32 /
  with every layer w8a8. AMC aims at FLOPs, not latency: the record says
  where its measured latency lands, over the budget included.

At a size budget (``--metric size``: the packed weights, bits x nonzero weights
plus a bitmask where sparse, counted exactly) nothing is timed to choose: every
baseline is the option with the most MACs whose size meets the budget (tp-global:
its ratio bisected on the counted size), and two more join them, because below
8 bits a weight costs no latency on a CPU but does save storage:

- ``w4-uniform``: uniform keep + 4-bit weights, 8-bit activations (the stem and
  classifier at their lowest allowed width, 8 bits), the largest keep that fits;
- ``sparse-w4-uniform``: the same plus 50% unstructured magnitude sparsity in
  every layer the space lets be sparse (Deep Compression's prune-and-quantize).

Writes ``<runs>/<cell>/baselines/<name>/record.json`` (``common.cell_name``) beside the
artifacts: ``weights.pt`` + ``plan.json`` for candidates of the space (rebuilt by
``autocompress.export.rebuild``), ``weights.pt`` + the group widths in the record
for ``tp-global`` (rebuilt by :func:`load_tp_global`), ``model.onnx`` and, for
int8 baselines, ``model.int8.onnx`` (QDQ). ``--final-epochs`` must be the
export's (``autocompress search --final-epochs``, default 4): ``table.py`` checks.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch_pruning as tp
from common import CACHE, DATA_SPEC, METRICS, budget_text, reference_weights, run_dir
from torch import nn

from autocompress.base_model import builder_kwargs
from autocompress.cli import load_experiment
from autocompress.compress import materialize
from autocompress.compress.pruning import prune_channels
from autocompress.counting import count_model
from autocompress.export.calibration import export_deployed
from autocompress.export.exporter import (  # the exporter's own fine-tune, member and reference steps
    build_member,
    export_front,
    export_reference,
    feed_metadata,
    feed_of,
    final_evaluator,
    probe_images,
    scoring_batches,
)
from autocompress.export.manifest import plain
from autocompress.export.measure import REFERENCE, artifact_accuracy, counted, measure_latency
from autocompress.export.rebuild import INFO_NAME, PROBE_NAME, WEIGHTS_NAME, save_probe
from autocompress.files import read_json, write_json
from autocompress.graph import ModelGraph, kept_channels
from autocompress.hardware import CostModel
from autocompress.models import create_model
from autocompress.runtime.onnx_export import export_onnx
from autocompress.search import SearchConfig, prepare
from autocompress.search.api import SearchSetup
from autocompress.search.budget import feasible, parse_budget
from autocompress.search.study import TrialRecord
from autocompress.space import IDENTITY_SCALING, Candidate, SearchSpace
from autocompress.train import Evaluator, evaluate
from autocompress.versions import versions

log = logging.getLogger("baselines")

BASELINES = ("reference", "l1-uniform", "int8-uniform", "l1-uniform-int8", "compound-uniform", "compound-uniform-int8",
             "tp-global", "amc", "amc-int8", "w4-uniform", "sparse-w4-uniform")
#: baselines built from another tool's run (``--amc``): only when that run is given
EXTERNAL = ("amc", "amc-int8")
#: baselines that only a size budget tells apart: below 8 bits a CPU runs int8 kernels (no latency to win)
SIZE_ONLY = ("w4-uniform", "sparse-w4-uniform")
#: uniform baselines chosen on measured latency at a latency budget (timed as built; int8 files calibrated first)
MEASURED = ("l1-uniform", "compound-uniform", "l1-uniform-int8", "compound-uniform-int8")
RECORD_NAME = "record.json"
#: the seed export_front draws int8 calibration images, test subsets and timing orders from (its default)
EXPORT_SEED = inspect.signature(export_front).parameters["seed"].default


# -- the setup and the exporter's final fine-tune ------------------------------------------------------


def search_config(args: argparse.Namespace) -> SearchConfig:
    """The search's config: its experiment file (``--experiment``) with the flags given on top, else the config
    ``autocompress search`` builds from the README's flags (its defaults elsewhere)."""
    flags = {"model": args.model, "data": args.data, "seed": args.seed, "final_epochs": args.final_epochs,
             "device": args.device, "weights": None if args.weights is None else str(args.weights)}
    if args.experiment is not None:
        config = load_experiment(str(args.experiment), {**flags, "cache_dir": str(CACHE)})
        unit = {k: 1.0 for k in ("latency_ms", "energy_mj", "size_bytes", "macs", "bitops")}  # to compare texts only
        wanted = budget_text(args.budget, args.metric)
        if [vars(parse_budget(b, unit)) | {"text": ""} for b in config.budgets] != [
                vars(parse_budget(wanted, unit)) | {"text": ""}]:
            raise SystemExit(f"{args.experiment}: budgets {config.budgets}, but --metric {args.metric} --budget "
                             f"{args.budget:g} means [{wanted!r}]: the baselines are sized to the search's one budget")
    else:
        model = args.model or SearchConfig.model
        config = SearchConfig(
            model=model, data=args.data or DATA_SPEC, budgets=[budget_text(args.budget, args.metric)],
            seed=SearchConfig.seed if args.seed is None else args.seed,
            final_epochs=SearchConfig.final_epochs if args.final_epochs is None else args.final_epochs,
            device=args.device or SearchConfig.device, weights=flags["weights"] or str(reference_weights(model)),
            cache_dir=str(CACHE), out=str(run_dir(model, args.budget, args.runs, args.metric) / "search"))
    if config.weights is None or not Path(config.weights).expanduser().is_file():
        raise SystemExit(f"weights: {config.weights}: no such file (train it with experiments/cifar10/reference.py "
                         f"--model {config.model}, or give --weights)")
    return config


def fine_tune_info(evaluator: Evaluator) -> dict[str, Any]:
    return {"epochs": evaluator.fit.epochs, "lr": evaluator.fit.lr, "seed": evaluator.fit.seed,
            "distillation": "from the reference model", "fidelity": evaluator.fidelity,
            "evaluator": evaluator.get_params(), "same_as": "autocompress.export.exporter.export_front"}


# -- choosing uniform candidates on the cost model ---------------------------------------------------------


def _price(setup: SearchSetup, candidates: list[Candidate]) -> list[dict[str, Any]]:
    """Predicted latency and size ratios to the reference and whether every budget holds, per candidate."""
    priced = setup.costs.predict_batch(setup.space.encoding.encode(candidates))
    ok = feasible(setup.budgets, priced)
    ref = setup.reference
    return [{"predicted_latency_ms": float(priced["latency_ms"][i]), "macs": float(priced["macs"][i]),
             "predicted_latency_ratio": float(priced["latency_ms"][i] / ref["latency_ms"]),
             "size_ratio": float(priced["size_bytes"][i] / ref["size_bytes"]), "meets_budget_predicted": bool(ok[i])}
            for i in range(len(candidates))]


def choose_candidate(setup: SearchSetup, name: str, args: argparse.Namespace,
                     out: Path) -> tuple[Candidate, dict[str, Any]]:
    """The baseline's candidate and how it was chosen (every option priced; at a latency budget fp32 ones measured).

    At a latency budget the uniform baselines (:data:`MEASURED`) are chosen on
    measured latency, like ``tp-global`` and like the export chooses and judges
    the search's members: the options ordered by predicted latency, largest
    first, bisected for the first whose measured ratio to the reference meets
    the budget. A profile measured on another machine, or calibrated when the
    machine ran int8 at another pace, would otherwise leave the baseline far
    under (or over) the budget it is compared at. At a size budget the size is
    exact: every baseline is the option with the most MACs that fits.
    """
    space = setup.space
    keeps = space.choice_values("keep")[::-1]
    w8, w4 = {"w_bits": 8, "a_bits": 8}, {"w_bits": 4, "a_bits": 8}
    if name == "l1-uniform":
        options = [({"keep": k}, space.uniform(keep=k)) for k in keeps]
        what = "uniform keep ratio (L1 channel pruning, fp32)"
    elif name == "int8-uniform":
        options = [(w8, space.uniform(**w8))]
        what = "every layer w8a8 at keep 1.0 (kept even when over budget)"
    elif name in ("l1-uniform-int8", "w4-uniform", "sparse-w4-uniform"):
        bits = {"l1-uniform-int8": w8, "w4-uniform": w4, "sparse-w4-uniform": {**w4, "sparsity": 0.5}}[name]
        options = [({"keep": k, **bits}, space.uniform(keep=k, **bits)) for k in keeps]
        what = {"l1-uniform-int8": "uniform keep ratio with every layer w8a8",
                "w4-uniform": "uniform keep ratio with 4-bit weights and 8-bit activations (8-bit weights where the "
                              "space allows no fewer: stem and classifier)",
                "sparse-w4-uniform": "uniform keep ratio with 4-bit weights, 8-bit activations and 50% unstructured "
                                     "magnitude sparsity wherever the space allows it"}[name]
    elif name in ("compound-uniform", "compound-uniform-int8"):
        scalings = [s for s in space.uniform_scalings() if any(v != IDENTITY_SCALING[k] for k, v in s.items())]
        if not scalings:
            raise SystemExit(f"{name}: the space {space.name!r} ({space.source}) scales nothing down (scaling.phi "
                             "< 0, or depth/width/resolution < 1)")
        bits = w8 if name.endswith("int8") else {}
        options = [({**s, "keep": k, **bits}, space.uniform(keep=k, **s, **bits)) for s in scalings for k in keeps]
        what = ("the space's scalings (compound phi < 0, or explicit depth/width/resolution) plus a uniform keep"
                + (", every layer w8a8" if bits else ""))
    elif name in EXTERNAL:
        return amc_candidate(setup, args.amc, w8 if name == "amc-int8" else {})
    else:
        raise ValueError(f"{name!r} is not a candidate baseline")
    unique: dict[Candidate, dict[str, Any]] = {}
    for values, candidate in options:
        unique.setdefault(candidate, values)  # uniform() snaps to the choices: equal candidates priced once
    candidates = list(unique)
    tried = [{**unique[c], **p} for c, p in zip(candidates, _price(setup, candidates), strict=True)]
    if name in MEASURED and args.metric == "latency":
        rule = (f"{what}: the options ordered by predicted latency, largest first, bisected for the first whose "
                "measured latency meets the budget")
        order = sorted(range(len(candidates)), key=lambda i: -tried[i]["predicted_latency_ms"])  # stable: ties keep

        def build(i: int):
            c = candidates[i]
            shape = (space.graph.input_shape[0], *space.input_resolution(c))
            label = "-".join(f"{k}{v:g}" for k, v in unique[c].items())
            return materialize(setup.base_model, c, space), shape, label, {"option": i, **unique[c]}

        at, fits, probes = bisect_measured(setup, order, build, args, out, name)
        pick = order[at]
        if not fits:
            rule += "; no option meets the budget on measurement: the cheapest is kept and marked over budget"
        return candidates[pick], {"rule": rule, "picked": tried[pick], "tried": tried, "probes": probes,
                                  "meets_budget_measured": fits}
    rule = what if len(tried) == 1 else (
        f"{what}: the option with the most MACs whose "
        f"{'predicted latency' if args.metric == 'latency' else 'size (exact)'} meets the budget")
    fitting = [i for i, t in enumerate(tried) if t["meets_budget_predicted"]]
    if fitting:  # the largest model that fits: the most MACs (latency is not monotone in width: channel alignment)
        pick = max(fitting, key=lambda i: (tried[i]["macs"], tried[i]["predicted_latency_ms"]))
    else:
        pick = min(range(len(tried)), key=lambda i: tried[i]["predicted_latency_ms" if args.metric == "latency"
                                                               else "size_ratio"])
        if len(tried) > 1:
            rule += "; nothing meets the budget: the cheapest option is kept and marked over budget"
    return candidates[pick], {"rule": rule, "picked": tried[pick], "tried": tried}


def build_candidate(setup: SearchSetup, name: str, candidate: Candidate, out: Path, evaluator: Evaluator,
                    seed: int) -> dict[str, Any]:
    """Fine-tune, save, export and count ``candidate`` with the exporter's member step, into ``out``."""
    record = TrialRecord(number=0, candidate=candidate, costs={}, feasible=True, evaluated=True,
                         accuracy=float("nan"), fidelity=None, seconds=None)
    built = build_member(setup, record, out, evaluator, seed=seed)
    staged = out / built.label  # the exporter writes trial-NNNN/; a baseline's files live in its own folder
    for path in staged.iterdir():
        path.replace(out / path.name)
    staged.rmdir()
    info = read_json(out / INFO_NAME, what="candidate", error=ValueError)
    write_json({**info, "trial": None, "baseline": name}, out / INFO_NAME)
    files = {key: Path(value).name for key, value in built.files.items()}
    return {
        "candidate": candidate.to_dict(), "input_shape": list(built.input_shape), "files": files,
        "deployed_onnx": Path(built.deployed_onnx).name, "counts": counted(built.counts),
        "predicted": built.predicted, "accuracy_val": built.accuracy_val, "accuracy_test": built.accuracy_test,
        "fine_tune_run": built.fine_tune, "artifact_accuracy": plain(built.artifact_accuracy.model_dump()),
        "preprocessing": plain(built.preprocessing.model_dump()),
        "rebuild": "autocompress.export.rebuild(<this folder>): plan.json + weights.pt, no data",
    }


# -- NNI's AMC policy on the space ------------------------------------------------------------------------------


def amc_candidate(setup: SearchSetup, path: Path | None, bits: dict[str, int]) -> tuple[Candidate, dict[str, Any]]:
    """AMC's per-layer widths (``amc_nni.py``'s ``amc.json``) as a candidate: each layer at the keep ratio of the space
    whose channel count lies closest to AMC's (ties: the wider), every other group unpruned, ``bits`` everywhere."""
    if path is None:
        raise SystemExit("amc, amc-int8: give --amc <runs>/<model>-amc-<flops>/amc.json (experiments/cifar10/amc_nni.py)")
    run = read_json(path, what="AMC run", error=ValueError)
    for key in ("model", "widths", "flops_ratio", "episodes"):
        if key not in run:
            raise SystemExit(f"{path}: field {key!r} missing (expected amc_nni.py's amc.json)")
    space, config = setup.space, setup.config
    if run["model"] != config.model:
        raise SystemExit(f"{path}: an AMC run of {run['model']!r}, but the baselines are for {config.model!r}")
    groups = {g.leader: g for g in space.graph.prunable_groups}
    unknown = sorted(set(run["widths"]) - set(groups))
    if unknown:
        raise SystemExit(f"{path}: widths: {unknown} are not prune-group leaders of {config.model!r}")
    base = space.uniform(**bits)
    layers = {unit: dict(dims) for unit, dims in base.layers.items()}
    snapped = {}
    for leader, width in run["widths"].items():
        channels = groups[leader].channels
        kept = {k: kept_channels(channels, k, space.channel_divisor) for k in space.choices[leader]["keep"]}
        keep = min(kept, key=lambda k: (abs(kept[k] - width), -k))
        layers[leader]["keep"] = keep
        snapped[leader] = {"amc": int(width), "of": channels, "keep": keep, "channels": kept[keep]}
    candidate = space.validate(Candidate(layers, base.scaling))
    rule = (f"NNI AMCPruner's best of {run['episodes']} episodes ({path}: FLOPs target {run.get('flops_target')} of "
            f"its pruned layers, {run['flops_ratio']:.3f}x the model's FLOPs), each layer snapped to the nearest keep "
            "ratio of the space" + (", every layer w8a8" if bits else ", fp32") + "; not chosen on latency: AMC aims "
            "at FLOPs")
    return candidate, {"rule": rule, "amc_run": str(path), "amc_flops_ratio": run["flops_ratio"],
                       "prior_command": run.get("command"),
                       "snapped": snapped, "picked": _price(setup, [candidate])[0]}


# -- Torch-Pruning global pruning at a measured latency ------------------------------------------------------


def tp_global_prune(model: nn.Module, input_shape: tuple[int, int, int], ratio: float, *, classifier: str,
                    max_ratio: float, round_to: int | None) -> nn.Module:
    """A pruned copy of ``model``: global L1 group-magnitude ranking at ``ratio``, classifier kept."""
    pruned = copy.deepcopy(model).eval()
    if ratio <= 0:
        return pruned
    pruner = tp.pruner.MetaPruner(
        pruned, torch.zeros((1, *input_shape)), importance=tp.importance.MagnitudeImportance(p=1),
        global_pruning=True, pruning_ratio=ratio, max_pruning_ratio=max_ratio,
        ignored_layers=[pruned.get_submodule(classifier)], round_to=round_to,
    )
    pruner.step()
    return pruned


def layer_widths(model: nn.Module) -> dict[str, int]:
    """Output channels (features) of every Conv2d / Linear."""
    return {name: int(m.out_channels if isinstance(m, nn.Conv2d) else m.out_features)
            for name, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}


def group_widths(graph: ModelGraph, model: nn.Module) -> dict[str, int]:
    """Channels each prune group of the reference's graph keeps in ``model`` (by group leader)."""
    widths = layer_widths(model)
    return {g.leader: widths[g.leader] for g in graph.prunable_groups}


def measured_ratio(setup: SearchSetup, model: nn.Module, shape: tuple[int, ...], folder: Path, reference_onnx: Path,
                   label: str, *, rounds: int, reps: int, sessions: int, seed: int) -> dict[str, Any]:
    """``model``'s latency (its ONNX file as the export deploys it, int8 where any layer is, input ``shape``) / the
    reference's, timed interleaved in the profile's runtime (export.measure)."""
    ref_shape = setup.data.input_shape
    path = export_deployed(setup, model, shape, folder / f"{label}.onnx", seed)
    timings, why_not = measure_latency({REFERENCE: (setup.base_model, ref_shape, reference_onnx),
                                        label: (model, shape, path)},
                                       setup.costs.profile, rounds=rounds, reps=reps, sessions=sessions, seed=seed,
                                       progress=False)
    if why_not:
        raise SystemExit(f"cannot measure latency here: {why_not}")
    t = timings[label]
    return {"latency_ratio": t["latency_vs_reference"], "latency_ms": t["latency_ms"],
            "spread_pct": t["latency_spread_pct"], "reference_self_ratio": timings[REFERENCE]["latency_vs_reference"]}


def size_ratio(setup: SearchSetup, model: nn.Module, shape: tuple[int, ...]) -> dict[str, Any]:
    """``model``'s counted size (fp32 as built) / the reference's (priced and counted alike): exact, nothing timed."""
    size = count_model(model, shape).size_bytes
    return {"size_ratio": size / setup.reference["size_bytes"], "size_bytes": size}


def bisect_measured(setup: SearchSetup, rungs: list[Any], build, args: argparse.Namespace, out: Path,
                    what: str) -> tuple[int, bool, list[dict[str, Any]]]:
    """The first rung (rungs are largest first) whose ratio to the reference meets the budget, by bisection.

    ``build(rung)`` gives ``(model, input_shape, label, fields)``; at a latency
    budget each probe is exported and timed interleaved with the reference, at
    a size budget its weights are counted. Returns the rung's index, whether it
    meets the budget (else the last, narrowest rung) and every probe.
    """
    folder = out / "bisection"
    folder.mkdir(parents=True, exist_ok=True)
    timed = args.metric == "latency"
    reference_onnx = export_onnx(setup.base_model, setup.data.input_shape, folder / "reference.onnx",
                                 int8=False) if timed else None
    probes: list[dict[str, Any]] = []

    def meets(index: int) -> bool:
        model, shape, label, fields = build(rungs[index])
        if timed:
            m = measured_ratio(setup, model, shape, folder, reference_onnx, label, rounds=args.rounds,
                               reps=args.reps, sessions=args.sessions, seed=EXPORT_SEED)
        else:
            m = size_ratio(setup, model, shape)
        ratio = m[f"{args.metric}_ratio"]
        ok = ratio <= args.budget
        probes.append({**fields, **m, "meets_budget": ok})
        log.info("%s: %s -> %s %s ratio %.3f (%s)", what, label, "measured" if timed else "counted", args.metric,
                 ratio, "meets the budget" if ok else "over")
        return ok

    try:
        lo, hi = -1, len(rungs) - 1  # lo: before the largest rung, over the budget by assumption (never timed)
        if not meets(hi):
            return hi, False, probes
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if meets(mid):
                hi = mid
            else:
                lo = mid
        return hi, True, probes
    finally:
        shutil.rmtree(folder)


def tp_global_ladder(setup: SearchSetup, *, classifier: str, max_ratio: float, grid: float,
                     round_to: int | None) -> tuple[list[tuple[float, dict[str, int]]], str]:
    """The distinct architectures Torch-Pruning's global ranking gives on a grid of pruning ratios, widest first.

    With ``round_to`` a group left with fewer than ``round_to`` channels is
    rounded down to none, and Torch-Pruning then skips it: it stays at full
    width while the rest shrink. The ladder stops before the first ratio where
    any group is wider than at the previous one; the second value says where.
    """
    graph, shape = setup.space.graph, setup.data.input_shape
    ladder: list[tuple[float, dict[str, int]]] = []
    steps = int(round(max_ratio / grid))
    for i in range(steps + 1):
        ratio = round(i * grid, 6)
        widths = group_widths(graph, tp_global_prune(setup.base_model, shape, ratio, classifier=classifier,
                                                     max_ratio=max_ratio, round_to=round_to))
        if ladder:
            wider = sorted(k for k, w in widths.items() if w > ladder[-1][1][k])
            if wider:
                why = (f"round_to={round_to} would leave them fewer than {round_to} channels, so Torch-Pruning skips "
                       "them" if round_to else "the global ranking is not monotone in the ratio")
                return ladder, (f"stopped at pruning ratio {ratio:g}: there group(s) {wider} come out wider than at "
                                f"{ladder[-1][0]:g} ({why})")
            if widths == ladder[-1][1]:
                continue
        ladder.append((ratio, widths))
    return ladder, f"every ratio up to {max_ratio:g} used"


def choose_tp_global(setup: SearchSetup, args: argparse.Namespace, out: Path) -> tuple[nn.Module, dict[str, Any]]:
    """Bisect the ladder of global-pruning architectures on the measured latency ratio: the widest that fits."""
    shape = setup.data.input_shape
    classifier = setup.space.graph.last_unit()
    round_to = args.tp_round_to or None
    ladder, ladder_note = tp_global_ladder(setup, classifier=classifier, max_ratio=args.tp_max_ratio,
                                           grid=args.tp_grid, round_to=round_to)

    def build(rung: tuple[float, dict[str, int]]):
        ratio, widths = rung
        model = tp_global_prune(setup.base_model, shape, ratio, classifier=classifier, max_ratio=args.tp_max_ratio,
                                round_to=round_to)
        return model, shape, f"ratio-{ratio:.4f}", {"pruning_ratio": ratio, "groups": widths}

    hi, fits, probes = bisect_measured(setup, ladder, build, args, out, "tp-global")
    ratio = ladder[hi][0]
    model = tp_global_prune(setup.base_model, shape, ratio, classifier=classifier, max_ratio=args.tp_max_ratio,
                            round_to=round_to)
    how = {"rule": ("Torch-Pruning MetaPruner, global_pruning=True, MagnitudeImportance(p=1) (L1 group magnitude), "
                    f"classifier {classifier!r} ignored, round_to={round_to}; pruning ratios on a grid of "
                    f"{args.tp_grid:g} up to {args.tp_max_ratio:g} give a ladder of distinct architectures, bisected "
                    f"for the widest whose {'measured ONNX Runtime latency' if args.metric == 'latency' else 'counted size'}"
                    f" ratio to the reference is <= {args.budget:g}"),
           "pruning_ratio": ratio, "meets_budget_measured": fits, "ladder": [r for r, _ in ladder],
           "ladder_note": ladder_note, "probes": probes,
           "timing": None if args.metric != "latency" else {
               "runtime": setup.costs.profile.runtime, "threads": setup.costs.profile.threads,
               "rounds": args.rounds, "reps": args.reps, "sessions": args.sessions, "seed": EXPORT_SEED}}
    if not fits:
        how["rule"] += "; no rung meets the budget: the narrowest is kept and marked over budget"
    return model, how


def as_built_costs(setup: SearchSetup, model: nn.Module) -> dict[str, Any]:
    """The cost model's price of ``model`` as built (a space with no choices on its own graph), or why not."""
    try:
        graph = ModelGraph.from_model(model, setup.data.input_shape)
        space = SearchSpace.from_dict(graph, {"name": "as-built", "channel_divisor": 1}, source="<tp-global as built>")
        calibration = setup.config.calibration or setup.config.model  # the search's (search.api.check)
        costs = CostModel(setup.costs.profile, space, model=calibration).reference().to_dict()
    except Exception as exc:  # a signature the profile cannot price: say so instead of a number
        return {"priced": False, "reason": f"{type(exc).__name__}: {exc}"}
    return {"priced": True, **plain(costs), "how": "the pruned architecture priced as an uncompressed model of its "
            "own graph on the profile (fp32, the search's calibration)"}


def build_tp_global(setup: SearchSetup, model: nn.Module, out: Path, evaluator: Evaluator) -> dict[str, Any]:
    """Fine-tune the pruned model like a member, then save, check the reload, export and count it."""
    config, data = setup.config, setup.data
    shape = data.input_shape
    result = evaluator(model)
    model.eval()
    test_loader = data.loader("test", batch_size=256, shuffle=False, augment=False, seed=config.seed)
    accuracy_test = evaluate(model, test_loader, device=config.device)
    files = {WEIGHTS_NAME: WEIGHTS_NAME, PROBE_NAME: PROBE_NAME, "model.onnx": "model.onnx"}
    torch.save(model.state_dict(), out / WEIGHTS_NAME)
    save_probe(model, probe_images(setup, None), out / PROBE_NAME)
    feed = feed_of(setup, shape)
    export_onnx(model, shape, out / "model.onnx", int8=False, metadata=feed_metadata(feed))
    batches, subset = scoring_batches(setup, None, config.seed)  # as the exporter: the search's seed
    scored = artifact_accuracy(model, {"fp32": out / "model.onnx"}, batches, subset=subset)
    return {
        "groups": group_widths(setup.space.graph, model), "channels": layer_widths(model),
        "model_kwargs": builder_kwargs(config.model, shape, data.num_classes), "input_shape": list(shape),
        "files": files, "deployed_onnx": "model.onnx", "counts": counted(count_model(model, shape)),
        "accuracy_val": float(result.accuracy), "accuracy_test": float(accuracy_test),
        "fine_tune_run": {"steps": result.fine_tune_steps, "seconds": round(result.seconds, 2),
                          "train_loss": result.train_loss},
        "artifact_accuracy": plain(scored.model_dump()), "preprocessing": plain(feed.model_dump()),
        "rebuild": "baselines.load_tp_global(<this folder>): the reference builder, its prune groups cut to "
                   "record.json's 'groups' widths, weights.pt loaded",
    }


def load_tp_global(folder: str | Path) -> nn.Module:
    """A saved ``tp-global`` baseline as a module: rebuilt from its record, weights loaded, probe outputs checked."""
    folder = Path(folder)
    record = read_json(folder / RECORD_NAME, what="baseline record", error=ValueError)
    for key in ("model", "model_kwargs", "input_shape", "groups"):
        if key not in record:
            raise ValueError(f"{folder / RECORD_NAME}: field {key!r} missing (not a tp-global record)")
    model = create_model(record["model"], **record["model_kwargs"]).eval()
    shape = tuple(record["input_shape"])
    prune_channels(model, ModelGraph.from_model(model, shape), record["groups"])
    model.load_state_dict(torch.load(folder / WEIGHTS_NAME, map_location="cpu", weights_only=True))
    model.eval()
    probe = torch.load(folder / PROBE_NAME, map_location="cpu", weights_only=True)
    with torch.no_grad():
        got = model(probe["inputs"])
    if not torch.allclose(got, probe["logits"], rtol=1e-4, atol=1e-5):
        raise ValueError(f"{folder}: the rebuilt model does not reproduce the saved probe outputs")
    return model


# -- records -------------------------------------------------------------------------------------------------


def energy_fields(predicted: dict[str, Any], method: str) -> dict[str, Any]:
    """The modelled energy where the cost model priced one, else null with the reason."""
    if predicted.get("energy_mj") is None:
        return {"energy_mj": None, "energy_method": None,
                "energy_note": predicted.get("reason", "not priced by the cost model")}
    note = "modelled by the cost model from the profile's energy table, not measured" if method == "modelled" else method
    return {"energy_mj": float(predicted["energy_mj"]), "energy_method": predicted.get("energy_method", method),
            "energy_note": note}


def run_reference(setup: SearchSetup, base: Path, evaluator: Evaluator) -> dict[str, Any]:
    """The exporter's reference step: ONNX, test accuracy, and the same after the members' fine-tune."""
    ref = export_reference(setup, evaluator, base)
    return {
        "how": "the uncompressed reference given the members' final fine-tune by the exporter's own reference step",
        "candidate": setup.space.identity().to_dict(), "input_shape": list(ref.input_shape),
        "files": {k: Path(v).name for k, v in ref.files.items()}, "deployed_onnx": Path(ref.files["model.onnx"]).name,
        "counts": counted(ref.counts), "predicted": plain(setup.reference),
        "accuracy_test_before_fine_tune": ref.accuracy_test, "accuracy_val": ref.same_fine_tune_val,
        "accuracy_test": ref.same_fine_tune_test,
        "artifact_accuracy": plain(ref.artifact_accuracy.model_dump()),  # the ONNX file: the model before the fine-tune
        "preprocessing": plain(ref.preprocessing.model_dump()),
    }


def run_one(name: str, setup: SearchSetup, args: argparse.Namespace, base: Path, evaluator: Evaluator) -> Path:
    """Choose, fine-tune, save and export one baseline; returns its record file."""
    out = base / name
    if out.exists():
        shutil.rmtree(out)  # a rerun replaces the baseline whole: no file of an earlier build is left behind
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    choose_s = 0.0
    if name == "reference":
        body = run_reference(setup, base, evaluator)
    elif name == "tp-global":
        model, how = choose_tp_global(setup, args, out)
        choose_s = time.perf_counter() - t0
        body = {"how": how, **build_tp_global(setup, model, out, evaluator),
                "predicted": as_built_costs(setup, model)}
    else:
        candidate, how = choose_candidate(setup, name, args, out)
        choose_s = time.perf_counter() - t0
        body = {"how": how, **build_candidate(setup, name, candidate, out, evaluator, EXPORT_SEED)}
    profile = setup.costs.profile
    ref_ms = setup.reference["latency_ms"]
    latency = body["predicted"].get("latency_ms")
    ratio = None if latency is None else float(latency) / ref_ms
    size = body["counts"]["size_bytes"] / setup.reference["size_bytes"]
    judged = ratio if args.metric == "latency" else size
    record = {
        "name": name, "model": setup.config.model, "data": setup.config.data, "weights": setup.config.weights,
        "experiment": None if args.experiment is None else str(args.experiment),
        "budget": budget_text(args.budget, args.metric), "budget_metric": args.metric, "budget_ratio": args.budget,
        **body,
        "predicted_latency_ratio": ratio, "size_ratio": size,
        "predicted_meets_budget": None if judged is None or name == "reference" else bool(
            judged <= args.budget * (1 + 1e-9)),
        "params": body["counts"]["params"], "size_bytes": body["counts"]["size_bytes"],
        **energy_fields(body["predicted"], profile.energy.method),
        "fine_tune": fine_tune_info(evaluator),
        "profile": {"name": profile.name, "runtime": profile.runtime, "threads": profile.threads,
                    "reference_latency_ms": ref_ms},
        "seconds": {"choose": round(choose_s, 2), "total": round(time.perf_counter() - t0, 2)},
        "config": plain(setup.config.to_dict()), "command": " ".join(["python", *sys.argv]), "versions": versions(),
    }
    path = write_json(record, out / RECORD_NAME)
    if name == "tp-global":
        load_tp_global(out)  # the saved weights and group widths must reproduce the probe outputs
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", type=Path, default=None,
                        help="the search's experiment YAML (e.g. experiments/cifar10/resnet20-0.5.yaml): model, data, "
                             "weights, seed, profile and final fine-tune come from it; flags given override it")
    parser.add_argument("--model", default=None, help="zoo model (default: resnet20)")
    parser.add_argument("--metric", choices=METRICS, default="latency",
                        help="what the budget limits: measured latency (default) or the packed size of the weights")
    parser.add_argument("--budget", type=float, default=0.5,
                        help="the budget as a fraction of the reference's latency (or size)")
    parser.add_argument("--final-epochs", type=float, default=None,
                        help=f"the export's final fine-tune (autocompress search --final-epochs; default "
                             f"{SearchConfig.final_epochs:g})")
    parser.add_argument("--seed", type=int, default=None, help="default 0")
    parser.add_argument("--device", default=None, help="where the fine-tunes train: cpu (default), cuda, cuda:N")
    parser.add_argument("--only", action="append", choices=BASELINES, default=None,
                        help="build only this baseline (repeatable; default: all the metric's, reference first)")
    parser.add_argument("--data", default=None, help="data spec (default: the CIFAR-10 zip of common.py)")
    parser.add_argument("--weights", type=Path, default=None,
                        help="reference weights (default: what reference.py wrote for the model)")
    parser.add_argument("--runs", type=Path, default=None, help="runs folder (default: common.RUNS)")
    parser.add_argument("--rounds", type=int, default=5, help="bisection timing: rounds (the export's default)")
    parser.add_argument("--reps", type=int, default=20, help="bisection timing: timed calls per round")
    parser.add_argument("--sessions", type=int, default=4, help="bisection timing: sessions per model")
    parser.add_argument("--tp-grid", type=float, default=0.01, help="tp-global: step of the pruning-ratio grid")
    parser.add_argument("--tp-round-to", type=int, default=0,
                        help="tp-global: round pruned widths to a multiple of this (default 0: none, "
                             "Torch-Pruning's default; 8 leaves ResNet-20's 16-channel groups unpruned at high ratios)")
    parser.add_argument("--tp-max-ratio", type=float, default=0.9, help="tp-global: largest pruning ratio tried")
    parser.add_argument("--amc", type=Path, default=None,
                        help="amc, amc-int8: the amc.json of an experiments/cifar10/amc_nni.py run")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if not 0 < args.budget < 1:
        parser.error(f"--budget: expected a fraction of the reference's {args.metric} in (0, 1), got {args.budget}")
    if args.metric == "latency" and set(args.only or ()) & set(SIZE_ONLY):
        parser.error(f"--only {sorted(set(args.only) & set(SIZE_ONLY))}: weights below 8 bits run on int8 kernels "
                     "on a CPU, so these baselines only differ at a size budget (--metric size)")
    if args.tp_round_to < 0:
        parser.error(f"--tp-round-to: expected a whole number >= 0, got {args.tp_round_to}")
    if not 0 < args.tp_max_ratio < 1:
        parser.error(f"--tp-max-ratio: expected a ratio in (0, 1), got {args.tp_max_ratio}")
    if not 0 < args.tp_grid <= args.tp_max_ratio:
        parser.error(f"--tp-grid: expected a step in (0, --tp-max-ratio], got {args.tp_grid}")
    config = search_config(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(2)

    setup = prepare(config, progress=not args.quiet)
    evaluator = final_evaluator(setup, progress=not args.quiet)
    base = run_dir(config.model, args.budget, args.runs, args.metric) / "baselines"
    base.mkdir(parents=True, exist_ok=True)
    default = [n for n in BASELINES if (args.metric == "size" or n not in SIZE_ONLY)
               and (args.amc is not None or n not in EXTERNAL)]
    for name in [n for n in BASELINES if n in (args.only or default)]:
        log.info("baseline %s", name)
        path = run_one(name, setup, args, base, evaluator)
        record = read_json(path, what="baseline record", error=ValueError)
        ratio = record["predicted_latency_ratio"]
        print(f"{name:18s} val {record['accuracy_val']:.4f}  test {record['accuracy_test']:.4f}  predicted latency "
              f"{'-' if ratio is None else f'{ratio:.3f}'}x  size {record['size_bytes'] / 1024:.1f} KB "
              f"({record['size_ratio']:.3f}x)  "
              f"{record['seconds']['total']:.0f} s  -> {path}")


if __name__ == "__main__":
    main()
