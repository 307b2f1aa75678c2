#!/usr/bin/env bash
# ResNet-20 (6n+2, n = 3) on Fashion-MNIST with early exits, against the same ResNet trained
# without exits (configs/resnet20-fashion-mnist-plain.toml: SGD 0.1 cosine, wd 5e-4, batch 128,
# 6 epochs, no augmentation). Goal (issue 9): test accuracy within 0.5 points of the plain network
# at relative cost <= 0.45, thresholds chosen on validation only (two protocols, see below).
#
#   EXITS=heads:          exit heads trained on the frozen plain network
#                          (configs/resnet20-fashion-mnist-heads.toml, 1 epoch, about 1/3 of a full training epoch);
#   EXITS=finetune (default): six `plain` exits added to the trained plain network and the whole network
#                          fine-tuned jointly (configs/resnet20-fashion-mnist-finetune.toml, 2 epochs, lr 0.01);
#   EXITS=joint:           the whole network trained with exits from scratch with the plain recipe
#                          (configs/resnet20-fashion-mnist-exits.toml, 6 full epochs, about 35 min on
#                          a quiet 2-core machine and hours on a loaded one).
#   EXITS=ramp:            the same from scratch, in one run, the exits' weights ramped in over 2 epochs
#                          (configs/resnet20-fashion-mnist-ramp.toml, 6 epochs);
#   EXITS=distill:         the same from scratch, in one run, with self-distillation of the exits from
#                          the final classifier (configs/resnet20-fashion-mnist-distill.toml, 6 epochs).
# PLAIN_FROM=DIR copies an already trained plain run instead of training it (about 30 min).
# Writes experiments/reports/resnet20-fashion-$EXITS.md (and resnet20-fashion.md, the headline: MAIN_VARIANT) and
# experiments/reports/resnet20-fashion-$EXITS/ (report.md, plots).
source "$(dirname "$0")/lib.sh"
EXITS=${EXITS:-finetune}
P=resnet20-fashion-plain
X=resnet20-fashion-$EXITS
if [ -n "${PLAIN_FROM:-}" ] && [ ! -d "runs/$P" ]; then
  cp -r "$PLAIN_FROM" "runs/$P"
  python3 -c "import json,sys; print(round(sum(json.loads(l)['seconds'] for l in open(sys.argv[1]))))" \
    "runs/$P/metrics.jsonl" > "runs/$P/wall_seconds"
fi
train $P configs/resnet20-fashion-mnist-plain.toml
if [ "$EXITS" = heads ]; then
  train "$X" configs/resnet20-fashion-mnist-heads.toml --set init=runs/$P
elif [ "$EXITS" = finetune ]; then
  train "$X" configs/resnet20-fashion-mnist-finetune.toml --set init=runs/$P
elif [ "$EXITS" = ramp ]; then
  train "$X" configs/resnet20-fashion-mnist-ramp.toml
elif [ "$EXITS" = distill ]; then
  train "$X" configs/resnet20-fashion-mnist-distill.toml
else
  train "$X" configs/resnet20-fashion-mnist-exits.toml
fi
cp "runs/$P/wall_seconds" "$J/$P-wall_seconds.txt"
cp "runs/$X/wall_seconds" "$J/$X-wall_seconds.txt"

# Two calibrations on validation, each then run on test:
#  1. the cheapest policy within 0.5 points of the network's own final classifier (with MSDNet's
#     budget curve for the plots);
#  2. the goal's own terms: the most accurate policy whose expected relative cost is <= 0.45. This
#     one is written last, so it stays in runs/$X/policy.json for the report and prune-exits.
"$E" calibrate --run "runs/$X" --max-accuracy-drop 0.5 --per-exit --budget-curve --json > "$J/$X-cal.json"
"$E" eval --run "runs/$X" --split test --json > "$J/$X-test.json"
"$E" calibrate --run "runs/$X" --budget 0.45 --per-exit --json > "$J/$X-budget.json"
"$E" eval --run "runs/$X" --split test --json > "$J/$X-budget-test.json"
# The plain network on test (its own engine against itself: the timing noise floor).
"$E" eval --run "runs/$P" --split test --policy never --json > "$J/$P-test.json"
"$E" report --run "runs/$X" --baseline "runs/$P" --out "experiments/reports/$X"
"$E" prune-exits --run "runs/$X" > "$J/$X-prune.md"
"$E" sweep --run "runs/$X" --split test --steps 10 > "$J/$X-sweep.md"
python3 experiments/tables.py resnet20-fashion "$X"
