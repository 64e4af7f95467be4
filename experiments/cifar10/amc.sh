#!/usr/bin/env bash
# NNI's AMC as two baselines of one cell, in NNI's own environment (see amc_nni.py for how to make one):
#   NNI_PYTHON=/tmp/nni-env/bin/python experiments/cifar10/amc.sh resnet20 0.5 0.5 0.1
# MODEL BUDGET FP32_FLOPS INT8_FLOPS: AMC prunes the residual blocks' first convolutions by FP32_FLOPS of their
# FLOPs for the fp32 row `amc` (0.5: its paper's 2x setting) and by INT8_FLOPS for the row `amc-int8`, whose every
# layer then runs w8a8 (at 0.5x on this CPU full-width int8 is just over the budget: 0.1 removes what it needs).
# Both get the members' final fine-tune (baselines.py) and are re-measured with the rest by table.py. 100 episodes:
# NNI's AMC grows by about 200 MB an episode (the committed 0.1 run was stopped at 110 of 120, at 23 GB).
set -euo pipefail
model=${1:?model, e.g. resnet20}
budget=${2:?budget, e.g. 0.5}
fp32_flops=${3:-0.5}
int8_flops=${4:-0.1}
nni=${NNI_PYTHON:?set NNI_PYTHON to the python of an environment with nni==2.10.1 (see amc_nni.py)}
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
cell="${model}-${budget}"
experiment="experiments/cifar10/${cell}-machine.yaml"
[ -f "$experiment" ] || experiment="experiments/cifar10/${cell}.yaml"
logs="runs/cifar10/${cell}/logs"
mkdir -p "$logs"
for flops in "$fp32_flops" "$int8_flops"; do
    [ -f "runs/cifar10/${model}-amc-${flops}/amc.json" ] && continue
    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 PYTHONPATH=. "$nni" experiments/cifar10/amc_nni.py --model "$model" \
        --episodes 100 --warmup 30 --flops "$flops" 2>&1 | tee "$logs/amc-${flops}.log"
done
python experiments/cifar10/baselines.py --experiment "$experiment" --model "$model" --budget "$budget" --only amc \
    --amc "runs/cifar10/${model}-amc-${fp32_flops}/amc.json" 2>&1 | tee "$logs/baseline-amc.log"
python experiments/cifar10/baselines.py --experiment "$experiment" --model "$model" --budget "$budget" \
    --only amc-int8 --amc "runs/cifar10/${model}-amc-${int8_flops}/amc.json" 2>&1 | tee "$logs/baseline-amc-int8.log"
python experiments/cifar10/table.py --model "$model" --budget "$budget" 2>&1 | tee "$logs/table.log"
