#!/usr/bin/env bash
# Class-specific early exits (the class-specific seed, Bonato & Bouganis) on the plain ResNet-20
# baseline B trained on Fashion-MNIST by `configs/resnet20-fashion-mnist-plain.toml`: for every
# class k, every cut point, KP=On and KP=Off, a branch (ReLU -> 4x4 average pooling -> dense) is
# trained with B frozen, α is swept over 0.95..1.0 on validation, t, δ_i and e_i are measured at
# batch 1, and the design with the best gain/loss on the Pareto front is kept, then a second exit
# after it is searched (eq. 11-12) and the pick is evaluated on the test split.
# Budget for 2 shared cores: branches train on 20,000 of the 55,000 training images, at most
# 40 epochs each (patience 10 as in the seed).
set -euo pipefail
cd "$(dirname "$0")/.."
B=${B:-runs/resnet20-fashion-plain}
OUT=${OUT:-experiments/reports/class-exit-fashion}
cargo build --release --bin earlyexit
E=target/release/earlyexit
if [ ! -f "$B/weights.safetensors" ]; then
    $E train --config configs/resnet20-fashion-mnist-plain.toml --out "$B"
fi
time $E class-exit --baseline "$B" --class all --kp both --places every --alpha 0.95:1.0:0.01 \
    --exits 2 --grid 4 --train-limit 20000 --max-epochs 40 --patience 10 --timing-reps 50 --out "$OUT"
