#!/usr/bin/env bash
# EENet-8 (4 starting filters, Pool exits after block1 and block2) on MNIST:
#  - the λ sweep of EENets Table 3 with L_v2 (eq. 9), λ in {0.5, 0.9, 1.0, 1.1, 1.5};
#  - soft-conditional (differentiable branching) and joint training on the same backbone and data.
# Cut to 3 epochs per run (the paper: 20) to fit this machine; same seed and data for every run.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/mnist}
[ -d "$DATA" ] || DATA=/work/shared/data/mnist
EPOCHS=${EPOCHS:-3}
T=target/release/examples/quick_train
[ -x $T ] || cargo build --release --example quick_train --bin earlyexit
for L in 0.5 0.9 1.0 1.1 1.5; do
  $T --data "$DATA" --backbone eenet8 --exits cuts:1,2 --epochs $EPOCHS --seed 2 --objective eenet-v2 --lambda $L --out runs/eenet8-mnist-v2-l$L
done
$T --data "$DATA" --backbone eenet8 --exits cuts:1,2 --epochs $EPOCHS --seed 2 --objective soft-conditional --out runs/eenet8-mnist-soft
$T --data "$DATA" --backbone eenet8 --exits cuts:1,2 --epochs $EPOCHS --seed 2 --objective joint --out runs/eenet8-mnist-joint3
