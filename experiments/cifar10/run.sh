#!/usr/bin/env bash
# One table of the CIFAR-10 benchmark, start to end, one job after another (never two at once on a small machine):
#   experiments/cifar10/run.sh resnet20 0.5
# needs experiments/cifar10/<model>-<budget>.yaml (the search's settings; the baselines take the same file) and
# the reference from `python experiments/cifar10/reference.py --model <model>` (trained here when missing).
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
for baseline in compound-uniform tp-global l1-uniform l1-uniform-int8 int8-uniform; do
    [ -f "runs/cifar10/${model}-${budget}/baselines/${baseline}/record.json" ] && continue
    python experiments/cifar10/baselines.py --experiment "$experiment" --model "$model" --budget "$budget" \
        --only "$baseline" 2>&1 | tee "$logs/baseline-${baseline}.log"
done
python experiments/cifar10/table.py --model "$model" --budget "$budget" 2>&1 | tee "$logs/table.log"
