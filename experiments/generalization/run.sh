#!/usr/bin/env bash
# A profile's latency prediction on models its calibration never saw, on this machine (ONNX Runtime, 1 thread):
#   experiments/generalization/run.sh [PROFILE]
# PROFILE (default: runs/cifar10/profile-machine.json, measured and calibrated on ResNet-20 by
# experiments/cifar10/run.sh) is copied with its ResNet-20 calibration only; the copy's table is extended with the
# layers of two user models (user_models.py), and
# ResNet-32, ResNet-56 and the user models are validated with the calibration it already holds (--calibrate 0):
# 20 random candidates each (10 fp32-only, 10 int8-containing) plus the uniform all-int8 ones, timed in one process.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
source=${1:-runs/cifar10/profile-machine.json}
out=runs/generalization
mkdir -p "$out"
# the copy keeps ResNet-20's calibration only, as its pooled one too: every model below is new to it
python - "$source" "$out/profile.json" <<'PY'
import sys
from autocompress.hardware import HardwareProfile
profile = HardwareProfile.load(sys.argv[1])
own = profile.model_calibrations.get("resnet20@3x32x32")
if own is None:
    sys.exit(f"{sys.argv[1]}: no calibration for resnet20@3x32x32; run "
             f"`autocompress profile validate {sys.argv[1]} --models resnet20` first")
profile.model_copy(update={"calibration": own, "model_calibrations": {"resnet20@3x32x32": own}}).save(sys.argv[2])
PY
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
models=(resnet32 resnet56 user_models:se_cnn user_models:vgg_head)
autocompress profile measure --models "${models[@]}" --out "$out/profile.json"
autocompress profile validate "$out/profile.json" --models "${models[@]}" --calibrate 0 --n 20 --seed 1
python "$here/report.py" "$out/profile.validation.json" --out experiments/results/generalization
