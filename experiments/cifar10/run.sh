#!/usr/bin/env bash
# One table of the CIFAR-10 benchmark, start to end, one job after another (never two at once on a small machine):
#   experiments/cifar10/run.sh resnet20 0.5
# needs experiments/cifar10/<model>-<budget>.yaml (the search's settings; the baselines take the same file) and
# the reference from `python experiments/cifar10/reference.py --model <model>` (trained here when missing).
# Where experiments/cifar10/<model>-<budget>-machine.yaml exists, the same search runs a second time priced on a
# profile of this machine (measured and validated first, about 2.5 minutes), and the table shows both.
set -euo pipefail
model=${1:?model, e.g. resnet20}
budget=${2:?budget as a fraction of the reference latency, e.g. 0.5}
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
experiment="experiments/cifar10/${model}-${budget}.yaml"
logs="runs/cifar10/${model}-${budget}/logs"
mkdir -p "$logs"
[ -f "runs/cifar10/${model}-reference.pt" ] || python experiments/cifar10/reference.py --model "$model" 2>&1 | tee "$logs/reference.log"
autocompress search "$experiment" 2>&1 | tee "$logs/search.log"
machine="experiments/cifar10/${model}-${budget}-machine.yaml"
if [ -f "$machine" ]; then
    profile=runs/cifar10/profile-machine.json
    if [ ! -f "$profile" ]; then
        autocompress profile measure --models "$model" --name cpu-onnxruntime-1t-machine --out "$profile"
        autocompress profile validate "$profile" --models "$model" --out "$profile"
    fi
    autocompress search "$machine" 2>&1 | tee "$logs/search-machine.log"
fi
for baseline in compound-uniform tp-global l1-uniform l1-uniform-int8 int8-uniform; do
    [ -f "runs/cifar10/${model}-${budget}/baselines/${baseline}/record.json" ] && continue
    python experiments/cifar10/baselines.py --experiment "$experiment" --model "$model" --budget "$budget" \
        --only "$baseline" 2>&1 | tee "$logs/baseline-${baseline}.log"
done
python experiments/cifar10/table.py --model "$model" --budget "$budget" 2>&1 | tee "$logs/table.log"
