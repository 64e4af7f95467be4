"""How well the proxy ranks candidates: Kendall tau between proxy accuracy and accuracy after the final fine-tune.

    python experiments/cifar10/proxy_fidelity.py runs/cifar10/resnet20-0.5/search [--limit 20] [--final-epochs 1]

Every trained trial of the study (up to ``--limit``, in trial order) is rebuilt
from the reference, given the exporter's final fine-tune (the same Evaluator,
distillation from the reference, same seed) and scored on the full val split;
tau compares that with the accuracy the search's proxy gave it. Results are
appended to ``<run>/proxy_fidelity.json`` as they come (a killed run keeps what
it measured and skips it when started again). About one final fine-tune per
trial: ResNet-20 on CIFAR-10, 1 epoch, ~3-4 minutes each on 2 CPU threads.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch
from scipy.stats import kendalltau, spearmanr

from autocompress.compress import materialize
from autocompress.search import SearchConfig, load_study, prepare, records
from autocompress.search.study import study_names
from autocompress.train import Evaluator, FitConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a search's run directory (holding study.journal)")
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--final-epochs", type=float, default=None, help="default: the search's final_epochs")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(2)
    storage = args.run / "study.journal"
    study = load_study(storage, study_names(storage)[0])
    config = SearchConfig(**{k: v for k, v in study.user_attrs["config"].items() if k in SearchConfig.fields()})
    setup = prepare(config, progress=False)
    epochs = config.final_epochs if args.final_epochs is None else args.final_epochs
    evaluator = Evaluator(teacher=setup.base_model, data=setup.data, fidelity="full", device=config.device,
                          fit=FitConfig(epochs=epochs, lr=config.proxy_lr, seed=config.seed, progress=False))
    out = args.run / "proxy_fidelity.json"
    done = json.loads(out.read_text()) if out.exists() else {"final_epochs": epochs, "trials": []}
    measured = {t["trial"] for t in done["trials"]}
    trained = [t for t in records(study) if t.evaluated][: args.limit]
    native = setup.data.input_shape[1]
    for record in trained:
        if record.number in measured:
            continue
        t0 = time.perf_counter()
        size = setup.space.input_resolution(record.candidate)[0]
        result = evaluator(materialize(setup.base_model, record.candidate, setup.space),
                           resolution=None if size == native else size)
        done["trials"].append({"trial": record.number, "proxy": record.accuracy, "final": result.accuracy,
                               "latency_ratio": record.costs["latency_ms"] / setup.reference["latency_ms"],
                               "seconds": round(time.perf_counter() - t0, 1)})
        out.write_text(json.dumps(done, indent=2) + "\n")
        logging.info("trial %d: proxy %.4f, final %.4f", record.number, record.accuracy, result.accuracy)
    proxy = [t["proxy"] for t in done["trials"]]
    final = [t["final"] for t in done["trials"]]
    if len(proxy) >= 3:
        done["kendall_tau"] = float(kendalltau(proxy, final).statistic)
        done["spearman"] = float(spearmanr(proxy, final).statistic)
        done["n"] = len(proxy)
        out.write_text(json.dumps(done, indent=2) + "\n")
    print(json.dumps({k: v for k, v in done.items() if k != "trials"}, indent=2))


if __name__ == "__main__":
    main()
