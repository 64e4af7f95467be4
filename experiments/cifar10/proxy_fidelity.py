"""How well the proxy ranks candidates: Kendall tau between proxy accuracy and accuracy after the final fine-tune.

    python experiments/cifar10/proxy_fidelity.py runs/cifar10/resnet20-0.5/search-machine [--limit 20] \
        [--from-export runs/cifar10/resnet20-0.5/search/export ...]

Every trained trial of the study (up to ``--limit``, in trial order) is rebuilt
from the reference, given the exporter's final fine-tune
(``autocompress.export.final_evaluator``: distillation from the reference,
same epochs, learning rate and seed) and scored on the full val split; tau
compares that with the accuracy the search's proxy gave it. Members an export
already fine-tuned that way (``--from-export``, any study with the same proxy
and final fine-tune) count as measured pairs: their manifest holds both
figures. Results are appended to ``<run>/proxy_fidelity.json`` as they come (the plot beside it at the end) (a
killed run keeps what it measured and skips it when started again). About one
final fine-tune per trial: ResNet-20 on CIFAR-10, 1 epoch, ~3-4 minutes each
on 2 CPU threads.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from pathlib import Path

import torch
from scipy.stats import kendalltau, spearmanr

from autocompress.compress import materialize
from autocompress.export.exporter import final_evaluator
from autocompress.search import SearchConfig, load_study, prepare, records
from autocompress.search.study import study_names

#: proxy accuracy from which a candidate counts among the best (the tau reported beside the overall one)
TOP_PROXY = 0.70
#: what must agree between two studies for their (proxy, final) pairs to be one sample
SAME = ("model", "data", "weights", "seed", "proxy_epochs", "proxy_lr", "proxy_train_limit", "proxy_eval_limit")


def exported_pairs(export: Path, config: SearchConfig, epochs: float) -> list[dict]:
    """(proxy, final) of every member an export fine-tuned with this study's proxy and final fine-tune."""
    manifest = json.loads((export / "manifest.json").read_text())
    theirs = manifest.get("config") or {}
    mine = config.to_dict()
    differ = [k for k in SAME if theirs.get(k) != mine.get(k)]
    if differ or (manifest.get("final_fine_tune") or {}).get("epochs") != epochs:
        raise SystemExit(f"{export}: another proxy or final fine-tune ({differ or 'final epochs'}); not comparable")
    study = Path(theirs.get("out", str(export.parent))).name
    return [{"trial": f"{study}:{m['trial']}", "proxy": m["accuracy_proxy"], "final": m["accuracy_val"],
             "latency_ratio": None, "seconds": (m.get("fine_tune") or {}).get("seconds"),
             "source": str(export / "manifest.json")} for m in manifest["members"]]


def plot(done: dict, path: Path) -> Path:
    """Proxy accuracy against accuracy after the final fine-tune, one point per candidate, tau in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for study in sorted({str(t["trial"]).partition(":")[0] for t in done["trials"]}):
        mine = [t for t in done["trials"] if str(t["trial"]).startswith(f"{study}:")]
        ax.scatter([100 * t["proxy"] for t in mine], [100 * t["final"] for t in mine], label=study, s=25)
    ax.set_xlabel(f"proxy accuracy (%, {done.get('proxy_eval_limit', '?')} val images, after the proxy fine-tune)")
    ax.set_ylabel(f"val accuracy (%) after the {done['final_epochs']:g}-epoch final fine-tune")
    ax.set_title(f"Kendall tau {done.get('kendall_tau', float('nan')):.2f}, n = {done.get('n', 0)}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a search's run directory (holding study.journal)")
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--final-epochs", type=float, default=None, help="default: the search's final_epochs")
    parser.add_argument("--from-export", type=Path, action="append", default=[],
                        help="an export folder whose members count as measured pairs (repeatable)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(2)
    storage = args.run / "study.journal"
    study = load_study(storage, study_names(storage)[0])
    config = SearchConfig(**{k: v for k, v in study.user_attrs["config"].items() if k in SearchConfig.fields()})
    setup = prepare(config, progress=False)
    epochs = config.final_epochs if args.final_epochs is None else args.final_epochs
    evaluator = final_evaluator(setup, final_epochs=epochs, progress=False)
    out = args.run / "proxy_fidelity.json"
    done = json.loads(out.read_text()) if out.exists() else {"final_epochs": epochs, "trials": []}
    done["proxy_eval_limit"] = config.proxy_eval_limit
    study_tag = args.run.name
    for export in args.from_export:
        known = {t["trial"] for t in done["trials"]}
        done["trials"] += [p for p in exported_pairs(export, config, epochs) if p["trial"] not in known]
    measured = {t["trial"] for t in done["trials"]}
    trained = [t for t in records(study) if t.evaluated][: args.limit]
    native = setup.data.input_shape[1]
    for record in trained:
        if f"{study_tag}:{record.number}" in measured:
            continue
        t0 = time.perf_counter()
        size = setup.space.input_resolution(record.candidate)[0]
        result = evaluator(materialize(setup.base_model, record.candidate, setup.space),
                           resolution=None if size == native else size)
        done["trials"].append({"trial": f"{study_tag}:{record.number}", "proxy": record.accuracy,
                               "final": result.accuracy,
                               "latency_ratio": record.costs["latency_ms"] / setup.reference["latency_ms"],
                               "seconds": round(time.perf_counter() - t0, 1)})
        out.write_text(json.dumps(done, indent=2) + "\n")
        logging.info("trial %d: proxy %.4f, final %.4f (%d pairs)", record.number, record.accuracy, result.accuracy,
                     len(done["trials"]))
    proxy = [t["proxy"] for t in done["trials"]]
    final = [t["final"] for t in done["trials"]]
    done["command"] = shlex.join(["python", "experiments/cifar10/proxy_fidelity.py", *sys.argv[1:]])
    if len(proxy) >= 3:
        done["kendall_tau"] = float(kendalltau(proxy, final).statistic)
        done["spearman"] = float(spearmanr(proxy, final).statistic)
        top = [t for t in done["trials"] if t["proxy"] >= TOP_PROXY]  # the candidates a front is made of
        if len(top) >= 3:
            done["kendall_tau_top"] = float(kendalltau([t["proxy"] for t in top], [t["final"] for t in top]).statistic)
            done["top"] = {"proxy_at_least": TOP_PROXY, "n": len(top)}
        done["n"] = len(proxy)
        out.write_text(json.dumps(done, indent=2) + "\n")
        plot(done, out.with_suffix(".png"))
    print(json.dumps({k: v for k, v in done.items() if k != "trials"}, indent=2))


if __name__ == "__main__":
    main()
