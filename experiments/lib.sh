# Shared by the experiment scripts (sourced, not run): train a run folder with `earlyexit train`
# and evaluate it with the run-folder commands. Run folders go to runs/ (ignored by git), the JSON
# figures to experiments/reports/json/ (committed; the tables are made from them).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
E=${E:-target/release/earlyexit}
J=experiments/reports/json
mkdir -p runs "$J"
[ -x "$E" ] || cargo build --release --bin earlyexit

# train NAME CONFIG [earlyexit train options…]: trains runs/NAME from CONFIG unless a finished run
# is already there (FORCE=1 retrains); the wall time goes to runs/NAME/wall_seconds.
train() {
  local name=$1 config=$2
  shift 2
  if [ -z "${FORCE:-}" ] && [ -f "runs/$name/wall_seconds" ]; then
    echo "runs/$name: already trained ($(cat "runs/$name/wall_seconds") s)"
    return
  fi
  # A trained run without its wall time (copied in by hand, or interrupted): never wipe it
  # silently; `earlyexit train --force` below would.
  if [ -z "${FORCE:-}" ] && [ -f "runs/$name/weights.safetensors" ]; then
    echo "runs/$name holds weights but no wall_seconds: add that file (seconds) to keep it, or FORCE=1 to retrain" >&2
    exit 1
  fi
  local t0
  t0=$(date +%s)
  "$E" train --config "$config" --out "runs/$name" --force -q "$@"
  echo $(($(date +%s) - t0)) > "runs/$name/wall_seconds"
  echo "runs/$name: trained in $(cat "runs/$name/wall_seconds") s"
}

# calibrate_eval NAME [eval options…]: per-exit maxprob thresholds on validation for at most 0.5
# points below the full network (policy.json), then that policy on test; JSON to $J/NAME-*.json.
calibrate_eval() {
  local name=$1
  shift
  "$E" calibrate --run "runs/$name" --max-accuracy-drop 0.5 --per-exit --json > "$J/$name-cal.json"
  "$E" eval --run "runs/$name" --split test --json "$@" > "$J/$name-test.json"
}
