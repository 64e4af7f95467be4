"""Train a CIFAR-10 reference with the committed recipe and save its weights for the other scripts.

    python experiments/cifar10/reference.py --model resnet20

ResNet-20: about 18 minutes on 2 CPU threads (15 epochs, ~84% val).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time

import torch
from common import CACHE, DATA_SPEC, REFERENCE_RECIPE, reference_weights

from autocompress.base_model import trained_base_model
from autocompress.data import load_data
from autocompress.train import FitConfig
from autocompress.train.loops import evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(2)
    t0 = time.time()
    data = load_data(DATA_SPEC, seed=REFERENCE_RECIPE["seed"], cache_dir=CACHE)
    fit = FitConfig(**REFERENCE_RECIPE, progress=True)
    model, info = trained_base_model(args.model, data, fit=fit, cache_dir=CACHE, device=args.device)
    out = reference_weights(args.model)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(info["path"], out)
    test = evaluate(model, data.loader("test", batch_size=256), device=args.device)
    record = {"model": args.model, "data": DATA_SPEC, "recipe": REFERENCE_RECIPE, "val_accuracy": info["val_accuracy"],
              "test_accuracy": test, "weights": str(out), "seconds": round(time.time() - t0, 1)}
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
