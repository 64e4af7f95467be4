#!/usr/bin/env bash
# How much of a cell's margin is the final fine-tune's seed: the search's best member and the baselines that decide
# the margin, each given the same final fine-tune again under other seeds (seed 0 is the committed table's run):
#   experiments/cifar10/seeds.sh resnet20 0.5 search-machine-warm 21 1 2
# Each seed writes to runs/cifar10/seed-<s>/ (the member's export, the baselines' records); seeds.py then reads
# every seed and writes experiments/results/cifar10/<cell>-seeds.{md,json}. About 12 minutes a seed for ResNet-20.
set -euo pipefail
model=${1:?model, e.g. resnet20}
budget=${2:?budget, e.g. 0.5}
search=${3:?the search folder in the cell, e.g. search-machine-warm}
trial=${4:?the member to replicate, e.g. 21}
shift 4
seeds=("$@")
[ ${#seeds[@]} -gt 0 ] || { echo "give at least one seed besides 0, e.g. 1 2" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
cell="${model}-${budget}"
runs=${CIFAR10_RUNS:-runs/cifar10}
experiment="experiments/cifar10/${cell}-machine.yaml"  # what the committed baselines were sized on
[ -f "$experiment" ] || experiment="experiments/cifar10/${cell}.yaml"
baselines="reference int8-uniform compound-uniform-int8 l1-uniform-int8"
for seed in "${seeds[@]}"; do
    out="$runs/seed-$seed"
    for baseline in $baselines; do
        [ -f "$out/$cell/baselines/$baseline/record.json" ] && continue
        python experiments/cifar10/baselines.py --experiment "$experiment" --model "$model" --budget "$budget" \
            --seed "$seed" --runs "$out" --only "$baseline" --quiet
    done
    [ -f "$out/$cell/$search/export/manifest.json" ] || \
        autocompress export "$runs/$cell/$search" --trial "$trial" --seed "$seed" --out "$out/$cell/$search/export" --quiet
done
python experiments/cifar10/seeds.py --model "$model" --budget "$budget" --search "$search" --trial "$trial" \
    --seeds 0 "${seeds[@]}"
