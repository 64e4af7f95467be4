"""The benchmark table: every baseline and the search's exported front, all ONNX files re-measured together.

    python experiments/cifar10/table.py --model resnet20 --budget 0.5
    python experiments/cifar10/table.py --model resnet20 --metric size --budget 0.1

Reads ``<runs>/<cell>/baselines/*/record.json`` (``baselines.py``; the cell is
``<model>-<budget>``, or ``<model>-size-<budget>`` at a size budget) and
the search's ``search/export/manifest.json``, then in ONE process:

- times every ONNX file (fp32 and int8, the search's members and the
  baselines) interleaved with the reference's, with
  :func:`autocompress.export.measure.measure_latency` on the profile's runtime
  and threads: the latency column is each deployed file's median ratio to the
  reference timed in the same moments;
- scores every ONNX file on the test split with
  :func:`autocompress.runtime.onnx_accuracy` (ONNX Runtime, this CPU's kernels);

and writes ``experiments/results/cifar10/<cell>.json``, ``.md`` (the
table, the noise figures and the commands behind every number) and ``.png``
(measured latency ratio, or at a size budget the size ratio, against test
top-1, the budget as a line). A size is the packed weights (bits x nonzero
weights, a bitmask where sparse, 32-bit biases), exact, never timed.
Delta is against the reference given the same final fine-tune (``baselines.py
--only reference``, else the export's own figure for it).
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from common import CACHE, DATA_SPEC, METRICS, RESULTS, ROOT, budget_text, cell_name, run_dir  # noqa: E402

from autocompress.data import load_data  # noqa: E402
from autocompress.export.budgets import noise_band  # noqa: E402
from autocompress.export.measure import REFERENCE, measure_latency, timing_note  # noqa: E402
from autocompress.files import read_json, write_json  # noqa: E402
from autocompress.hardware.profile import find_profile, this_machine  # noqa: E402
from autocompress.runtime import is_registered, onnx_accuracy  # noqa: E402
from autocompress.space.spec import load_yaml  # noqa: E402
from autocompress.versions import versions  # noqa: E402

#: the order rows are listed in; records with other names follow, sorted
BASELINE_ORDER = ("l1-uniform", "int8-uniform", "l1-uniform-int8", "compound-uniform", "compound-uniform-int8",
                  "tp-global", "amc", "amc-int8", "w4-uniform", "sparse-w4-uniform")
#: plot colours of the baselines (red is the search's front, gold the reference)
BASELINE_COLORS = ("tab:blue", "tab:green", "tab:purple", "tab:brown", "tab:cyan", "tab:gray", "tab:orange", "black",
                   "tab:olive", "tab:pink")
#: fine-tune settings that must agree between the baselines and the export for the deltas to compare like with like
SAME_FINE_TUNE = ("epochs", "lr", "seed", "fidelity")


class TableError(ValueError):
    """An input file that is missing or does not say what the table needs; the message names it."""


def read(path: Path, what: str) -> dict[str, Any]:
    data = read_json(path, what=what, error=TableError)
    if not isinstance(data, dict):
        raise TableError(f"{path}: expected a JSON object ({what}), got {type(data).__name__}")
    return data


def need(data: dict[str, Any], key: str, source: Path | str) -> Any:
    if key not in data:
        raise TableError(f"{source}: field {key!r} missing")
    return data[key]


# -- the rows -----------------------------------------------------------------------------------------------------


def baseline_rows(folder: Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The reference's record (or None) and one row per other baseline record under ``folder``."""
    records = {}
    for path in sorted(folder.glob("*/record.json")):
        record = read(path, "baseline record")
        records[need(record, "name", path)] = (path, record)
    reference = records.pop("reference", None)
    order = [n for n in BASELINE_ORDER if n in records] + sorted(set(records) - set(BASELINE_ORDER))
    rows = []
    for name in order:
        path, r = records[name]
        files = need(r, "files", path)
        artifacts = {"fp32": path.parent / need(files, "model.onnx", f"{path}: files")}
        if "model.int8.onnx" in files:
            artifacts["int8"] = path.parent / files["model.int8.onnx"]
        deployed = "int8" if need(r, "deployed_onnx", path) == files.get("model.int8.onnx") else "fp32"
        raw_how = r.get("how")  # a dict, or (older records) a sentence
        how = raw_how if isinstance(raw_how, dict) else {}
        rows.append({
            "label": name, "method": name, "kind": "baseline", "source": str(path),
            "input_shape": need(r, "input_shape", path), "artifacts": artifacts, "deployed": deployed,
            "accuracy_test_torch": r.get("accuracy_test"), "accuracy_val_torch": r.get("accuracy_val"),
            "size_bytes": r.get("size_bytes"), "params": r.get("params"),
            "energy_mj": r.get("energy_mj"), "energy_method": r.get("energy_method"),
            "energy_note": r.get("energy_note"), "predicted_latency_ratio": r.get("predicted_latency_ratio"),
            "wall_s": (r.get("seconds") or {}).get("total"), "wall_note": "choice + final fine-tune + export",
            "fine_tune": r.get("fine_tune") or {}, "how": how.get("rule") if isinstance(raw_how, dict) else raw_how,
            "command": r.get("command"), "config": r.get("config") or {},
            "chosen_on_measurement": "probes" in how, "prior_command": how.get("prior_command"),
        })
    return (reference[1] | {"_path": str(reference[0])}) if reference else None, rows


def search_seconds(manifest: dict[str, Any], export_dir: Path) -> tuple[float | None, str]:
    """Summed duration of the study's trials (proxy fine-tunes and pricing), or None and why."""
    study = manifest.get("study") or {}
    name, storage = study.get("name"), study.get("storage")
    if not name or not storage:
        return None, "the manifest names no study"
    candidates = [Path(storage), ROOT / storage, export_dir.parent / Path(storage).name]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None and "://" not in storage:
        return None, f"study storage {storage!r} not found (looked at {', '.join(map(str, candidates))})"
    try:
        from autocompress.search import load_study

        trials = load_study(found or storage, name).get_trials(deepcopy=False)
    except Exception as exc:  # a journal another version wrote, a database out of reach
        return None, f"cannot read study {name!r} in {storage}: {exc}"
    spans = [(t.datetime_complete - t.datetime_start).total_seconds() for t in trials
             if t.datetime_start is not None and t.datetime_complete is not None]
    return float(sum(spans)), f"sum of the {len(spans)} trials' durations in {found or storage} (shared by the front)"


def member_rows(manifest: dict[str, Any], export_dir: Path, runs_int8: bool,
                search_s: float | None, tag: str = "") -> list[dict[str, Any]]:
    """One row per exported member (read defensively: older and newer manifests alike); ``tag`` names the search
    where the table has several (the search folder's name)."""
    rows = []
    profile = (manifest.get("config") or {}).get("profile")
    suffix = f" ({tag}, profile {Path(str(profile)).stem})" if tag else ""
    for i, m in enumerate(need(manifest, "members", export_dir / "manifest.json")):
        source = f"{export_dir / 'manifest.json'}: members[{i}]"
        files = need(m, "files", source)
        artifacts = {"fp32": export_dir / need(files, "model.onnx", f"{source}.files")}
        if "model.int8.onnx" in files:
            artifacts["int8"] = export_dir / files["model.int8.onnx"]
        predicted = m.get("predicted") or {}
        trial = m.get("trial")
        fine_s = (m.get("fine_tune") or {}).get("seconds")
        rows.append({
            "label": f"ours-{tag + '-' if tag else ''}{trial if isinstance(trial, int) else i:04d}",
            "method": f"autocompress trial {trial}{suffix}", "kind": "ours", "search": tag, "source": source, "input_shape": need(m, "input_shape", source), "artifacts": artifacts,
            "deployed": "int8" if "int8" in artifacts and runs_int8 else "fp32",
            "accuracy_test_torch": m.get("accuracy_test"), "accuracy_val_torch": m.get("accuracy_val"),
            "size_bytes": (m.get("measured") or {}).get("size_bytes", predicted.get("size_bytes")),
            "params": (m.get("measured") or {}).get("params"),
            "energy_mj": predicted.get("energy_mj"), "energy_method": predicted.get("energy_method"),
            "energy_note": "modelled by the cost model" if predicted.get("energy_method") == "modelled" else "",
            "predicted_latency_ratio": None, "predicted_latency_ms": predicted.get("latency_ms"),
            "wall_s": None if search_s is None or fine_s is None else search_s + fine_s,
            "wall_note": "the whole search (shared by the front) + this member's final fine-tune",
            "export_measured_latency_ratio": (m.get("measured") or {}).get("latency_vs_reference"),
            "export_artifact_accuracy": m.get("artifact_accuracy"), "candidate": m.get("candidate"),
        })
    return rows


def reference_row(ref_record: dict[str, Any] | None, manifest: dict[str, Any] | None,
                  export_dir: Path) -> dict[str, Any]:
    """The reference: its ONNX file, and its test accuracy after the members' final fine-tune."""
    if ref_record is not None:
        path = Path(ref_record["_path"])
        onnx = path.parent / need(need(ref_record, "files", path), "model.onnx", f"{path}: files")
        same = need(ref_record, "accuracy_test", path)
        same_source = f"{path} (baselines.py --only reference)"
        shape = need(ref_record, "input_shape", path)
        row = {"size_bytes": ref_record.get("size_bytes"), "params": ref_record.get("params"),
               "energy_mj": ref_record.get("energy_mj"), "energy_method": ref_record.get("energy_method"),
               "wall_s": (ref_record.get("seconds") or {}).get("total"), "fine_tune": ref_record.get("fine_tune") or {},
               "accuracy_test_torch": ref_record.get("accuracy_test_before_fine_tune"),
               "config": ref_record.get("config") or {}, "command": ref_record.get("command")}
    elif manifest is not None:
        ref = need(manifest, "reference", export_dir / "manifest.json")
        onnx = export_dir / need(need(ref, "files", "manifest reference"), "model.onnx", "manifest reference.files")
        same = ref.get("accuracy_test_same_fine_tune")
        same_source = f"{export_dir / 'manifest.json'} (the export's reference step)"
        shape = need(ref, "input_shape", "manifest reference")
        predicted = ref.get("predicted") or {}
        row = {"size_bytes": (ref.get("measured") or {}).get("size_bytes"), "params": (ref.get("measured") or {}).get("params"),
               "energy_mj": predicted.get("energy_mj"), "energy_method": predicted.get("energy_method"),
               "wall_s": None, "fine_tune": manifest.get("final_fine_tune") or {},
               "accuracy_test_torch": ref.get("accuracy_test")}
    else:
        raise TableError("no reference: run baselines.py --only reference, or export the search")
    return {"label": REFERENCE, "method": "reference (uncompressed)", "kind": "reference", "input_shape": shape,
            "artifacts": {"fp32": onnx}, "deployed": "fp32", "accuracy_test_same_fine_tune": same,
            "same_fine_tune_source": same_source, "predicted_latency_ratio": 1.0,
            "wall_note": "the reference's final fine-tune (its training is shared by every row)", **row}


# -- checks that the rows compare like with like ------------------------------------------------------------------


def comparability(rows: list[dict[str, Any]], manifest: dict[str, Any] | None, ref: dict[str, Any]) -> list[str]:
    """Differences in fine-tune, data, weights or profile between the baselines, the reference and the export."""
    problems = []
    want = (manifest or {}).get("final_fine_tune") or ref.get("fine_tune") or {}
    config = (manifest or {}).get("config") or {}
    for row in [ref, *[r for r in rows if r["kind"] == "baseline"]]:
        got = row.get("fine_tune") or {}
        for key in SAME_FINE_TUNE:
            if key in want and key in got and want[key] != got[key]:
                problems.append(f"{row['label']}: final fine-tune {key} {got[key]!r}, the export's {want[key]!r}")
        for key in ("data", "weights", "seed", "profile", "proxy_lr"):
            if key == "profile" and (row.get("chosen_on_measurement") or row["kind"] == "reference"):
                continue  # its profile priced nothing that chose it
            mine = (row.get("config") or {}).get(key)
            if config and mine is not None and key in config and _normal(key, config[key]) != _normal(key, mine):
                problems.append(f"{row['label']}: {key} {mine!r}, the search's {config[key]!r}")
    return problems


def _normal(key: str, value: Any) -> Any:
    """A config value as compared: paths (weights, an image-folder zip) resolved from the repository root."""
    if key == "weights" and isinstance(value, str):
        return str((ROOT / Path(value).expanduser()).resolve())
    if key == "data" and isinstance(value, str) and value.startswith("imagefolder:"):
        return "imagefolder:" + str((ROOT / Path(value.partition(":")[2]).expanduser()).resolve())
    return value


def _from_root(path: Path | str) -> str:
    """A file as the table records it: relative to the repository root where it lies under it, so a table made in
    one checkout names files another can find (``table_models`` resolves it back)."""
    path = Path(os.path.abspath(path))  # not resolved: a runs/ folder linked from elsewhere stays under the root
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


# -- measuring -----------------------------------------------------------------------------------------------------


def table_models(rows: list[dict[str, Any]]) -> dict[str, tuple[None, tuple[int, ...], Path]]:
    """Every artifact of every row as ``measure_latency`` takes them: the reference's fp32 file first, then
    ``"<label>:<precision>"``; a relative path (as a written table records it) is taken from the repository root."""
    ref = rows[0]
    models = {REFERENCE: (None, tuple(ref["input_shape"]), ROOT / ref["artifacts"]["fp32"])}
    for row in rows[1:]:
        for precision, path in row["artifacts"].items():
            models[f"{row['label']}:{precision}"] = (None, tuple(row["input_shape"]), ROOT / path)
    return models


def measure_all(rows: list[dict[str, Any]], profile, args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every artifact of every row timed in one interleaved run beside the reference; timings by key."""
    models = table_models(rows)
    for key, (_, _, path) in models.items():
        if not Path(path).is_file():
            raise TableError(f"{path}: no such ONNX file ({key})")
    t0 = time.perf_counter()
    timings, why_not = measure_latency(models, profile, rounds=args.rounds, reps=args.reps, sessions=args.sessions,
                                       passes=args.passes, seed=args.seed, progress=not args.quiet)
    if why_not:
        raise TableError(why_not)
    self_ratio = timings[REFERENCE]["latency_vs_reference"]
    spreads = sorted(t["latency_spread_pct"] for t in timings.values())
    pass_spreads = sorted(t["latency_pass_spread_pct"] for t in timings.values())
    noise_pct, noise_source = noise_band(profile, args.model, rows[0]["input_shape"])
    noise = {
        "reference_vs_itself": self_ratio, "reference_vs_itself_pct": abs(self_ratio - 1) * 100,
        "session_spread_pct_median": spreads[len(spreads) // 2], "session_spread_pct_max": spreads[-1],
        "passes": args.passes, "pass_spread_pct_median": pass_spreads[len(pass_spreads) // 2],
        "pass_spread_pct_max": pass_spreads[-1],
        "profile_noise_band_pct": noise_pct, "profile_noise_band_source": noise_source,
        "reference_latency_ms": timings[REFERENCE]["latency_ms"], "files_timed": len(models),
        "seconds": round(time.perf_counter() - t0, 1),
        "how": timing_note(sessions=args.sessions, rounds=args.rounds, reps=args.reps, passes=args.passes),
        "runtime": profile.runtime, "threads": profile.threads, "machine": this_machine().model_dump(),
    }
    return timings, noise


def score_all(rows: list[dict[str, Any]], args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """Test top-1 of every artifact in ONNX Runtime, on the whole test split at each artifact's input size."""
    data = load_data(args.data, seed=seed, cache_dir=CACHE)
    native = data.input_shape[1]
    batches: dict[int, list] = {}
    info = {"data": args.data, "images": len(data.test_y), "threads": args.threads,
            "function": "autocompress.runtime.onnx_accuracy"}
    for row in rows:
        size = int(row["input_shape"][1])
        if size not in batches:
            loader = data.loader("test", batch_size=256, shuffle=False, augment=False, seed=seed,
                                 resolution=None if size == native else size)
            batches[size] = list(loader)
        row["onnx_accuracy"] = {p: onnx_accuracy(path, batches[size], threads=args.threads)
                                for p, path in row["artifacts"].items()}
    return info


# -- output --------------------------------------------------------------------------------------------------------


def pct(value: float | None, digits: int = 2) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{100 * value:.{digits}f}"


#: settings a search's experiment file may hold otherwise than its run: a search stopped early (or extended)
#: replays the same trials, so the file says how many the table's run completed
RUN_LENGTH = ("n_trials", "timeout_s")


def experiment_file(config: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The committed experiment file that ran this search and its settings: same output folder and same
    settings (its length aside), else None."""
    for path in sorted((ROOT / "experiments" / "cifar10").glob("*.yaml")):
        data = load_yaml(path, TableError)
        if isinstance(data, dict) and data.get("out") == config.get("out") and all(
                config.get(k) == v for k, v in data.items() if k not in RUN_LENGTH):
            return str(path.relative_to(ROOT)), data
    return None


def search_command(c: dict[str, Any]) -> str:
    """The command that ran a search (its experiment file where one matches; else flags from its config)."""
    found = experiment_file(c)
    if found is not None:
        experiment, data = found
        started = [f"{k} {c[k]}" for k in RUN_LENGTH if k in data and c.get(k) != data[k]]
        return f"autocompress search {experiment}" + (f"    # the run was started with {', '.join(started)}"
                                                      if started else "")
    search = ["autocompress", "search", "--model", str(c.get("model")), "--data", str(c.get("data"))]
    if c.get("weights"):
        search += ["--weights", str(c["weights"])]
    for b in c.get("budgets") or []:
        search += ["--budget", b]
    for flag, key in (("--profile", "profile"), ("--strategy", "strategy"), ("--trials", "n_trials"), ("--seed", "seed"),
                      ("--budget-margin", "budget_margin"), ("--final-epochs", "final_epochs"),
                      ("--device", "device"), ("--out", "out")):
        if c.get(key) is not None:
            search += [flag, str(c[key])]
    return shlex.join(search) + "    # from the manifest's config"


def commands(rows: list[dict[str, Any]], exports: list[tuple[Path, dict[str, Any]]],
             args: argparse.Namespace) -> list[str]:
    """The commands behind every figure, in the order they ran."""
    out = [f"python experiments/cifar10/reference.py --model {args.model}"]
    seen = []
    for row in rows:  # another tool's run a baseline was built from (amc_nni.py) comes before it
        for cmd in (row.get("prior_command"), row.get("command")):
            if cmd and cmd not in seen:
                seen.append(cmd)
    metric = "" if args.metric == "latency" else f" --metric {args.metric}"
    out += seen or [f"python experiments/cifar10/baselines.py --model {args.model}{metric} --budget {args.budget:g}"]
    for export_dir, manifest in exports:
        c = manifest.get("config") or {}
        search = search_command(c)
        if search not in out:
            out.append(search)
        study = manifest.get("study") or {}
        if study.get("selected") == "given" or Path(export_dir) != ROOT / str(c.get("out")) / "export":
            # named trials, or the front (chosen again on measured latency where it was screened) in another folder
            screened = bool((manifest.get("screening") or {}).get("screened"))
            chosen = ([f"--trial {m['trial']}" for m in manifest.get("members") or []]
                      if study.get("selected") == "given" else ["--screen" if screened else "--no-screen"])
            epochs = (manifest.get("final_fine_tune") or {}).get("epochs")
            extra = f" --final-epochs {epochs:g}" if epochs is not None and epochs != c.get("final_epochs") else ""
            out.append(f"autocompress export {c.get('out')} {' '.join(chosen)}{extra} --out "
                       f"{Path(export_dir).relative_to(ROOT) if Path(export_dir).is_relative_to(ROOT) else export_dir}")
    out.append(shlex.join(["python", "experiments/cifar10/table.py", *sys.argv[1:]]))
    return out


def search_tag(export_dir: Path, export_dirs: list[Path]) -> str:
    """What tells a search's rows from the others': its run folder, and the export folder where one search has
    several (its front screened on measured latency beside trials named by hand)."""
    parents = [d.parent.name for d in export_dirs]
    return export_dir.parent.name if parents.count(export_dir.parent.name) == 1 else (
        f"{export_dir.parent.name}/{export_dir.name}")


def judged_ratio(row: dict[str, Any], metric: str) -> float | None:
    """The figure the budget limits: the measured latency ratio, or the size ratio (exact)."""
    return row["measured_latency_ratio"] if metric == "latency" else row.get("size_ratio")


def _pass_range(row: dict[str, Any]) -> str:
    """The lowest and highest of the deployed file's per-pass figures: how firm its budget verdict is."""
    timing = (row.get("timings") or {}).get(row["deployed"]) or {}
    ratios = timing.get("latency_passes_vs_reference")
    return "–" if not ratios else f"{min(ratios):.3f}–{max(ratios):.3f}"


def markdown(result: dict[str, Any]) -> str:
    metric = result["budget_metric"]
    noise = result["timing"]
    ref = result["reference"]
    size_note = ("Size: the packed weights (bits x nonzero weights, a bitmask where sparse, 32-bit biases), as a "
                 "compressed artifact stores them (the ONNX QDQ file holds 8-bit integers); the budget limits it, "
                 "and it is exact. " if metric == "size" else "")
    lines = [
        f"# {result['model']} at {result['budget']} ({result['data']})", "",
        f"Latency: every ONNX file re-measured in one process on {noise['runtime']} ({noise['threads']} thread(s)), "
        f"interleaved with the reference ({noise['reference_latency_ms']:.3f} ms here); a fraction of the reference's. "
        f"Top-1: the deployed ONNX file on the {result['accuracy']['images']} test images in ONNX Runtime "
        "(the reference's: its file as trained). "
        f"Delta: against the reference given the same final fine-tune "
        f"({pct(ref['accuracy_test_same_fine_tune'])}%, {ref['same_fine_tune_source']}). "
        f"{size_note}Energy: modelled by the cost model (not measured). Wall: choice/search + final fine-tune "
        "(the reference's training is shared by every row).", "",
        "| method | latency (x ref, measured) | per timing pass | top-1 test (%) | Δ vs ref, same fine-tune (pts) | "
        "size (KB) | energy (mJ, modelled) | wall (min) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        latency, delta = row["measured_latency_ratio"], row["delta_vs_reference"]
        over = " (over)" if row["meets_budget"] is False else ""  # judged in main() on the budget's metric
        size = "–" if row["size_bytes"] is None else f"{row['size_bytes'] / 1024:.1f}"
        if metric == "size" and row.get("size_ratio") is not None:
            size += f" ({row['size_ratio']:.3f}x)"
        cells = [
            row["method"] + (" [int8]" if row["deployed"] == "int8" else ""),
            ("–" if latency is None else f"{latency:.3f}") + ("" if metric == "size" else over),
            _pass_range(row),
            pct(row["top1_test"]),
            ("–" if delta is None else f"{100 * delta:+.2f}") if row["kind"] != "reference"
            else f"same fine-tune: {pct(result['reference']['accuracy_test_same_fine_tune'])}",
            size + (over if metric == "size" else ""),
            "–" if row["energy_mj"] is None else f"{row['energy_mj']:.4f}",
            "–" if row["wall_s"] is None else f"{row['wall_s'] / 60:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "", f"Noise: the reference timed against itself came out at {noise['reference_vs_itself']:.3f}x "
        f"({noise['reference_vs_itself_pct']:.1f}%); the spread across sessions of one file is "
        f"{noise['session_spread_pct_median']:.1f}% (median), {noise['session_spread_pct_max']:.1f}% (max)"
        + (f"; between the {noise['passes']} timing passes {noise['pass_spread_pct_median']:.1f}% (median), "
           f"{noise['pass_spread_pct_max']:.1f}% (max)" if "passes" in noise else "") + "; the "
        f"profile's validation noise band is {noise['profile_noise_band_pct']:.1f}% ({noise['profile_noise_band_source']}). "
        f"Method: {noise['how']}.", "",
    ]
    if result["warnings"]:
        lines += ["Not like with like:", *[f"- {w}" for w in result["warnings"]], ""]
    lines += ["How each baseline was chosen:", *[f"- {r['method']}: {r['how']}" for r in result["rows"] if r.get("how")], ""]
    lines += [f"Plot: `{result['plot']}`.", "", "Commands (in order):", "", "```bash", *result["commands"], "```", ""]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> Path:
    metric = result["budget_metric"]

    def x(row: dict[str, Any]) -> float | None:
        return judged_ratio(row, metric)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ours = sorted((r for r in result["rows"] if r["kind"] == "ours" and x(r) is not None), key=x)
    for (tag, style) in zip(dict.fromkeys(r.get("search", "") for r in ours), ("-o", "--s", ":^"), strict=False):
        mine = [r for r in ours if r.get("search", "") == tag]
        ax.plot([x(r) for r in mine], [100 * r["top1_test"] for r in mine], style,
                color="tab:red", label=f"autocompress{f' ({tag})' if tag else ''}, exported front", zorder=3)
    baselines = [r for r in result["rows"] if r["kind"] == "baseline" and x(r) is not None]
    for i, r in enumerate(baselines):
        ax.scatter([x(r)], [100 * r["top1_test"]], marker="sD^vPX<>p"[i % 9], s=60,
                   color=BASELINE_COLORS[i % len(BASELINE_COLORS)], zorder=4,
                   label=r["method"] + (" (int8)" if r["deployed"] == "int8" else ""))
    ref = result["reference"]
    if ref["accuracy_test_same_fine_tune"] is not None:
        ax.axhline(100 * ref["accuracy_test_same_fine_tune"], color="goldenrod", ls=":", lw=1,
                   label="reference, same fine-tune")
    ref_row = result["rows"][0]
    if metric == "latency":  # the reference sits at 1.0x, far right of a size budget's axis
        ax.scatter([x(ref_row)], [100 * ref_row["top1_test"]], marker="*", s=140, color="goldenrod",
                   label="reference", zorder=4)
    ax.axvline(result["budget_ratio"], color="crimson", ls="--", lw=1, label=f"budget {result['budget']}")
    ax.set_xlabel("measured latency / reference (ONNX Runtime, interleaved)" if metric == "latency" else
                  "packed weight size / reference (bits x nonzero weights)")
    ax.set_ylabel("top-1 test of the ONNX file (%)")
    ax.set_title(f"{result['model']}, {result['data']}: {result['budget']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--metric", choices=METRICS, default="latency", help="what the cell's budget limits")
    parser.add_argument("--budget", type=float, default=0.5)
    parser.add_argument("--data", default=None,
                        help="data spec of the test split (default: the search's, else the CIFAR-10 zip)")
    parser.add_argument("--runs", type=Path, default=None, help="runs folder (default: common.RUNS)")
    parser.add_argument("--export", type=Path, action="append", default=None,
                        help="a search's export folder; repeat for several searches (default: every "
                             "<runs>/<cell>/search*/export with a manifest)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the table goes (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--passes", type=int, default=3, help="timing runs of fresh sessions, one after another")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads for scoring accuracy")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    cell = run_dir(args.model, args.budget, args.runs, args.metric)
    export_dirs = args.export or sorted(p.parent for p in cell.glob("search*/export/manifest.json"))
    exports = [(d, read(d / "manifest.json", "export manifest")) for d in export_dirs if (d / "manifest.json").is_file()]
    ref_record, rows = baseline_rows(cell / "baselines")
    if not exports:
        print(f"warning: {cell}: no search*/export/manifest.json; the table has no search rows", file=sys.stderr)
    if not exports and not rows:
        raise SystemExit(f"{cell}: nothing to tabulate (no baselines/*/record.json, no search*/export/manifest.json)")

    # every row is timed in one harness: the profiles that priced them must share its runtime and threads
    priced = [r["config"].get("profile") for r in rows if r["config"].get("profile")]
    priced += [(m.get("config") or {}).get("profile") for _, m in exports]
    profiles = {name: find_profile(name) for name in dict.fromkeys(p for p in priced if p)} or {
        "cpu-onnxruntime-1t": find_profile("cpu-onnxruntime-1t")}
    harness = {(p.runtime, p.threads) for p in profiles.values()}
    if len(harness) > 1:
        raise SystemExit(f"the rows were priced on profiles of different runtimes/threads {sorted(harness)}")
    profile = next(iter(profiles.values()))  # the harness (runtime, threads) and the noise band of the first
    if not is_registered(profile.runtime):
        raise SystemExit(f"profile {profile.name!r}: its runtime {profile.runtime!r} cannot run here")
    runs_int8 = "int8" in profile.precisions
    first = exports[0] if exports else (cell / "search" / "export", None)
    reference = reference_row(ref_record, first[1], first[0])
    searches = []
    for export_dir, manifest in exports:
        search_s, search_note = search_seconds(manifest, export_dir)
        tag = search_tag(export_dir, export_dirs) if len(exports) > 1 else ""
        rows += member_rows(manifest, export_dir, runs_int8, search_s, tag)
        searches.append({"export": str(export_dir), "profile": (manifest.get("config") or {}).get("profile"),
                         "seconds": search_s, "seconds_note": search_note,
                         "final_fine_tune": manifest.get("final_fine_tune")})
    rows = [reference, *rows]
    warnings = list(dict.fromkeys(w for _, manifest in exports or [(None, None)]  # one line per difference
                                  for w in comparability(rows[1:], manifest, reference)))
    config = (first[1] or {}).get("config") or {}
    seed = int(config.get("seed", args.seed))
    args.data = args.data or config.get("data") or DATA_SPEC

    timings, noise = measure_all(rows, profile, args)
    print(f"noise floor: reference vs itself {noise['reference_vs_itself']:.3f}x; session spread "
          f"{noise['session_spread_pct_median']:.1f}% median, {noise['session_spread_pct_max']:.1f}% max; "
          f"profile noise band {noise['profile_noise_band_pct']:.1f}%")
    accuracy = score_all(rows, args, seed)
    same = reference["accuracy_test_same_fine_tune"]
    for row in rows:
        key = REFERENCE if row["kind"] == "reference" else f"{row['label']}:{row['deployed']}"
        row["timings"] = {p: timings[REFERENCE if row["kind"] == "reference" else f"{row['label']}:{p}"]
                          for p in row["artifacts"]}
        row["measured_latency_ratio"] = timings[key]["latency_vs_reference"]
        row["measured_latency_ms"] = timings[key]["latency_ms"]
        row["top1_test"] = row["onnx_accuracy"][row["deployed"]]
        row["delta_vs_reference"] = None if same is None or row["kind"] == "reference" else row["top1_test"] - same
        row["size_ratio"] = None if row["size_bytes"] is None or reference["size_bytes"] is None else (
            row["size_bytes"] / reference["size_bytes"])
        judged = judged_ratio(row, args.metric)
        row["meets_budget"] = None if row["kind"] == "reference" or judged is None else judged <= args.budget
        row["artifacts"] = {p: _from_root(path) for p, path in row["artifacts"].items()}
    args.results.mkdir(parents=True, exist_ok=True)
    name = cell_name(args.model, args.budget, args.metric)
    files = {ext: args.results / f"{name}.{ext}" for ext in ("json", "md", "png")}
    result = {
        "model": args.model, "budget": budget_text(args.budget, args.metric), "budget_metric": args.metric,
        "budget_ratio": args.budget, "data": args.data,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "profiles": list(profiles), "timing_profile": profile.name,
        "reference": {k: reference[k] for k in ("accuracy_test_same_fine_tune", "same_fine_tune_source")},
        "searches": searches,
        "timing": noise, "accuracy": accuracy, "warnings": warnings, "rows": rows,
        "plot": files["png"].name, "commands": commands(rows, exports, args),
        "versions": versions(),
    }
    plot(result, files["png"])
    write_json(result, files["json"])
    files["md"].write_text(markdown(result))
    print(markdown(result))
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)


if __name__ == "__main__":
    main()
