#!/usr/bin/env bash
# Evaluates the runs of eenet8-mnist-objectives.sh on test: EENets' own inference (learned
# confidence, T = 0.5, Algorithm 1) and a per-exit maxprob policy calibrated on validation for
# at most 0.5 points of accuracy drop. Writes experiments/reports/eenet8-mnist-objectives.md.
set -euo pipefail
cd "$(dirname "$0")/.."
E=target/release/earlyexit
OUT=experiments/reports/json
mkdir -p $OUT
RUNS="eenet8-mnist-v2-l0.5 eenet8-mnist-v2-l0.9 eenet8-mnist-v2-l1.0 eenet8-mnist-v2-l1.1 eenet8-mnist-v2-l1.5 eenet8-mnist-soft eenet8-mnist-joint3"
for r in $RUNS; do
  [ -d runs/$r ] || continue
  $E eval --run runs/$r --split test --policy confidence:0.5 --json --timing-samples 300 > $OUT/$r-conf.json
  $E calibrate --run runs/$r --max-accuracy-drop 0.5 --per-exit --json > $OUT/$r-cal.json
  $E eval --run runs/$r --split test --json --timing-samples 300 > $OUT/$r-calibrated.json
done
python3 experiments/objectives_table.py $OUT > experiments/reports/eenet8-mnist-objectives.md
