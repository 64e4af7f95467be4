#!/usr/bin/env bash
# A cell's members and the baselines that decide its margin, given a longer final fine-tune (on a GPU where there is
# one), then tabulated on the target CPU like the committed table:
#   experiments/cifar10/fine_tune_long.sh resnet20 0.5 search-machine-warm 30 cuda 22 25
#   python experiments/cifar10/table.py --model resnet20 --budget 0.5 --runs runs/cifar10-long-30 \
#       --results experiments/results/cifar10/long-fine-tune-30
# Needs the search's study (runs/cifar10/<cell>/<search>, `autocompress search experiments/cifar10/<cell>-<name>.yaml
# --no-export`) and the reference (experiments/cifar10/reference.py). Four processes: uniform int8, compound scaling
# + int8 and uniform L1 pruning + int8 (the baselines under the budget and the one just over it), and one export of
# the members, whose reference step is the reference given the same fine-tune. On a GPU they run at once; on a CPU
# one after another (two torch processes on a small CPU slow each other several times over). Latency and the ONNX
# files' accuracy are measured by table.py, on the machine the budget is for, never where this trains.
set -euo pipefail
model=${1:?model, e.g. resnet20}
budget=${2:?budget, e.g. 0.5}
search=${3:?the search folder in the cell, e.g. search-machine-warm}
epochs=${4:?final fine-tune epochs, e.g. 30}
device=${5:?where the fine-tunes train: cpu, cuda, cuda:N}
shift 5
trials=("$@")
[ ${#trials[@]} -gt 0 ] || { echo "give the members to export, e.g. 22 25" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
cell="${model}-${budget}"
study="runs/cifar10/$cell/$search"
experiment="experiments/cifar10/${cell}-${search#search-}.yaml"  # the search's own experiment sizes the baselines
[ -d "$study" ] || { echo "no study $study: run autocompress search $experiment --no-export first" >&2; exit 2; }
[ -f "$experiment" ] || { echo "no $experiment" >&2; exit 2; }
runs="runs/cifar10-long-$epochs"
logs="$runs/logs"
mkdir -p "$logs"
pids=()
start() {  # start LOG COMMAND...: in the background on a GPU, in turn on a CPU
    local log=$1; shift
    if [ "$device" = cpu ]; then "$@" > "$log" 2>&1; else "$@" > "$log" 2>&1 & pids+=($!); fi
}
for baseline in int8-uniform compound-uniform-int8 l1-uniform-int8; do
    [ -f "$runs/$cell/baselines/$baseline/record.json" ] && continue
    start "$logs/baseline-$baseline.log" python experiments/cifar10/baselines.py --experiment "$experiment" \
        --model "$model" --budget "$budget" --final-epochs "$epochs" --device "$device" --runs "$runs" --only "$baseline"
done
out="$runs/$cell/$search/export"
if [ ! -f "$out/manifest.json" ]; then
    start "$logs/export.log" autocompress export "$study" "${trials[@]/#/--trial=}" --final-epochs "$epochs" \
        --device "$device" --no-screen --out "$out"
fi
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done  # on a CPU, set -e has stopped at the first failure
[ "$failed" = 0 ] || { echo "a fine-tune failed: see $logs" >&2; exit 1; }
echo "done: python experiments/cifar10/table.py --model $model --budget $budget --runs $runs"
