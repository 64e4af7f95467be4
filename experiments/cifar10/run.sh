#!/usr/bin/env bash
# One table of the CIFAR-10 benchmark, start to end, one job after another (never two at once on a small machine):
#   experiments/cifar10/run.sh resnet20 0.5
#   experiments/cifar10/run.sh resnet20 0.1 size     # size<=0.1x: experiments/cifar10/resnet20-size-0.1.yaml
# needs experiments/cifar10/<model>-<budget>.yaml (a search priced on the shipped profile) and/or
# <model>-<budget>-machine.yaml (priced on a profile of this machine, measured and calibrated on the model first, about a
# minute), and the reference from `python experiments/cifar10/reference.py --model <model>` (trained here when
# missing). The baselines take the machine file where there is one, and the table shows every search.
set -euo pipefail
model=${1:?model, e.g. resnet20}
budget=${2:?budget as a fraction of the reference latency, e.g. 0.5}
metric=${3:-latency}  # or size: the packed weights
# the reference first (every delta is against it), then int8, which pays most here
baselines="reference int8-uniform compound-uniform-int8 l1-uniform-int8 compound-uniform l1-uniform tp-global"
case "$metric" in
    latency) cell="${model}-${budget}" ;;
    size) cell="${model}-size-${budget}"; baselines="$baselines w4-uniform sparse-w4-uniform" ;;
    *) echo "metric: latency or size, got $metric" >&2; exit 2 ;;
esac
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
experiment="experiments/cifar10/${cell}.yaml"
machine="experiments/cifar10/${cell}-machine.yaml"
[ -f "$experiment" ] || [ -f "$machine" ] || { echo "no $experiment or $machine" >&2; exit 2; }
logs="runs/cifar10/${cell}/logs"
mkdir -p "$logs"
[ -f "runs/cifar10/${model}-reference.pt" ] || python experiments/cifar10/reference.py --model "$model" 2>&1 | tee "$logs/reference.log"
if [ -f "$experiment" ]; then
    autocompress search "$experiment" 2>&1 | tee "$logs/search.log"
fi
if [ -f "$machine" ]; then
    profile=runs/cifar10/profile-machine.json
    # measures the layers the profile lacks for this model (none: a no-op), then calibrates it on this model
    # unless it already holds a calibration for it
    autocompress profile measure --models "$model" --name cpu-onnxruntime-1t-machine --out "$profile"
    if ! python -c "import sys; from autocompress.hardware import HardwareProfile as P
sys.exit('$model@3x32x32' not in P.load('$profile').model_calibrations)"; then
        autocompress profile validate "$profile" --models "$model" --out "$profile"
    fi
    autocompress search "$machine" 2>&1 | tee "$logs/search-machine.log"
    experiment=$machine  # the baselines' int8 rows are sized on the profile of this machine too
fi
for baseline in $baselines; do
    [ -f "runs/cifar10/${cell}/baselines/${baseline}/record.json" ] && continue
    python experiments/cifar10/baselines.py --experiment "$experiment" --model "$model" --metric "$metric" \
        --budget "$budget" --only "$baseline" 2>&1 | tee "$logs/baseline-${baseline}.log"
done
python experiments/cifar10/table.py --model "$model" --metric "$metric" --budget "$budget" 2>&1 | tee "$logs/table.log"
