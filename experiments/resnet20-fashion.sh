#!/usr/bin/env bash
# ResNet-20 (6n+2, n = 3) on Fashion-MNIST with 4 Pareto-placed exits, against the same ResNet
# trained without exits. Same data, seed, optimiser and sample budget for both (cut to fit about
# 20 minutes on 2 shared CPU cores: 2 epochs of 15,000 random training samples each).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/fashion-mnist}
[ -d "$DATA" ] || DATA=/work/shared/data/fashion-mnist
cargo build --release --example quick_train --bin earlyexit
T=target/release/examples/quick_train
E=target/release/earlyexit
$T --data "$DATA" --backbone resnet20 --exits pareto:4 --epochs 2 --limit 15000 --seed 1 --out runs/resnet20-fashion-exits
$T --data "$DATA" --backbone resnet20 --exits none --epochs 2 --limit 15000 --seed 1 --out runs/resnet20-fashion-plain
# Goal of the issue: within 0.5 points of the plain network at relative cost <= 0.45.
$E calibrate --run runs/resnet20-fashion-exits --budget 0.45 --per-exit --budget-curve
$E eval --run runs/resnet20-fashion-exits --split test --markdown
$E eval --run runs/resnet20-fashion-plain --split test --policy never --markdown
$E report --run runs/resnet20-fashion-exits --baseline runs/resnet20-fashion-plain --out experiments/reports/resnet20-fashion
