#!/usr/bin/env bash
# The λ sweep of EENets Table 3 (L_v2, eq. 9) on ALL of the MNIST training split: EENet-8 at width
# 8 with Pool exits (with confidence branches) after block1 and block2, configs/eenet8w8-mnist.toml
# (Adam 1e-3, batch 32, seed 1) cut to 3 epochs (the first a deeply supervised warm-up), so 4.6×
# the training of the short sweep (experiments/eenet8-mnist.sh). λ = 0.5, 0.75, 0.9, 0.95, 1.0,
# 1.05, 1.1, 1.15, 1.25, 1.3, 1.5 (EENets Table 3's values and the quarter steps; LAMBDAS="..."
# picks others). Two runs at a time, one thread each, one per core (the network is tiny, so a run
# gains little from a second thread).
# Each run is evaluated on test with EENets' own inference (learned confidence, T = 0.5) and with
# per-exit maxprob thresholds calibrated on validation (≤ 0.5 points below the full network).
# Writes experiments/reports/eenet8-mnist-lambda-full.md. About 25 minutes on a quiet 2-core machine
# (~190 s of training per run).
source "$(dirname "$0")/lib.sh"
C=configs/eenet8w8-mnist.toml
LAMBDAS=${LAMBDAS:-"0.5 0.75 0.9 0.95 1.0 1.05 1.1 1.15 1.25 1.3 1.5"}
export RAYON_NUM_THREADS=1

one() {
  local L=$1 r=eenet8-mnist-full-v2-l$1
  train "$r" $C --epochs 3 --set objective.lambda="$L"
  "$E" eval --run "runs/$r" --split test --policy confidence:0.5 --timing-samples 300 --json > "$J/$r-conf.json"
  calibrate_eval "$r"
  cp "runs/$r/wall_seconds" "$J/$r-wall_seconds.txt"
}

# Two lanes: the λ values alternate between them.
set -- $LAMBDAS
lane() {
  while [ $# -gt 0 ]; do
    one "$1"
    shift 2 || break
  done
}
lane "$@" &
shift
lane "$@" &
wait
python3 experiments/tables.py eenet8-mnist-full
