#!/usr/bin/env bash
# EENet-8 (width 8, Pool exits with confidence branches after block1 and block2) on MNIST with the
# real trainer (configs/eenet8w8-mnist-short.toml: 3 epochs on 12,000 training images, the first
# a deeply supervised warm-up), seed 1, same data for every run:
#  1. the λ sweep of EENets Table 3 with L_v2 (eq. 9): λ = 0.5, 0.75, 1.0, 1.25, 1.5;
#  2. soft-conditional (differentiable branching) and joint against eenet-v2 (λ = 1, shared with 1).
# Every run is evaluated on test with EENets' own inference (learned confidence, T = 0.5) and with
# per-exit maxprob thresholds calibrated on validation (≤ 0.5 points below the full network).
# Writes experiments/reports/eenet8-mnist-lambda.md and experiments/reports/eenet8-mnist-objectives.md.
# About 15–25 minutes on a shared 2-core machine.
source "$(dirname "$0")/lib.sh"
C=configs/eenet8w8-mnist-short.toml

for L in 0.5 0.75 1.0 1.25 1.5; do
  train "eenet8-mnist-v2-l$L" $C --set objective.lambda=$L
done
train eenet8-mnist-soft $C --set objective.kind=soft-conditional
train eenet8-mnist-joint $C --set objective.kind=joint --set objective.lambda= --set objective.warmup=

for r in eenet8-mnist-v2-l0.5 eenet8-mnist-v2-l0.75 eenet8-mnist-v2-l1.0 eenet8-mnist-v2-l1.25 eenet8-mnist-v2-l1.5 \
  eenet8-mnist-soft eenet8-mnist-joint; do
  "$E" eval --run "runs/$r" --split test --policy confidence:0.5 --json > "$J/$r-conf.json"
  calibrate_eval "$r"
  cp "runs/$r/wall_seconds" "$J/$r-wall_seconds.txt"
done
# Plots (trade-off, exit distribution, confidence histograms, training curves) of the λ = 1 run.
"$E" report --run runs/eenet8-mnist-v2-l1.0 --out experiments/reports/eenet8-mnist-v2-l1.0
python3 experiments/tables.py eenet8-mnist
