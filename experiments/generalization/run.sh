#!/usr/bin/env bash
# A profile's latency prediction on models its calibration never saw, on this machine (ONNX Runtime, 1 thread):
#   experiments/generalization/run.sh [PROFILE] [SEED]
# Without PROFILE a fresh profile of the six models below is measured into runs/generalization/profile.json; with
# one, a copy of it is extended with their layers. Then one validation times all six models in the same run, every
# round visiting every model: ResNet-20 and MobileNetV2 are calibrated on (45 candidates each), while ResNet-32,
# ResNet-56 and two user models (user_models.py) are held out: 21 random candidates each (fp32-only,
# int8-containing, near-int8) plus the uniform all-int8 ones, priced with the pooled calibration the run fits on the
# two zoo models, as a search on a model the profile was never calibrated on prices it. A model whose noise floor
# is above 3% after the three rounds gets more rounds, up to nine; the validation waits out slow spells before the
# timing and between its rounds (--settle).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
out=runs/generalization
seed=${2:-1}
mkdir -p "$out"
if [[ -n "${1:-}" ]]; then cp "$1" "$out/profile.json"; else rm -f "$out/profile.json"; fi
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
zoo=(resnet20 mobilenetv2_cifar)
held_out=(resnet32 resnet56 user_models:se_cnn user_models:vgg_head)
autocompress profile measure --models "${zoo[@]}" "${held_out[@]}" --input-shape 3x32x32 --out "$out/profile.json"
autocompress profile validate "$out/profile.json" --models "${zoo[@]}" "${held_out[@]}" --hold-out "${held_out[@]}" \
    --calibrate 45 --n 21 --seed "$seed" --noise-bound 3 --max-rounds 9
results=experiments/results/generalization
[[ "$seed" == 1 ]] || results+="-seed$seed"
python "$here/report.py" "$out/profile.validation.json" --out "$results"
