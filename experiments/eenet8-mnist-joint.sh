#!/usr/bin/env bash
# EENet-8 on MNIST, joint training (6 epochs), calibrated on validation for at most 0.5 points
# of accuracy drop, then measured on test.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/mnist}
[ -d "$DATA" ] || DATA=/work/shared/data/mnist
cargo build --release --example quick_train --bin earlyexit
R=runs/eenet8-mnist-joint
target/release/examples/quick_train --data "$DATA" --backbone eenet8 --exits cuts:1,2 --epochs 6 --out $R
E=target/release/earlyexit
$E calibrate --run $R --max-accuracy-drop 0.5 --per-exit --budget-curve
$E eval --run $R --split test --markdown
$E sweep --run $R --split test --steps 10
$E prune-exits --run $R
$E report --run $R --out experiments/reports/eenet8-mnist-joint
