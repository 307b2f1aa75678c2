"""Markdown reports from the JSON that the experiment scripts write to experiments/reports/json."""
import json
import os
import sys

J = os.path.join(os.path.dirname(__file__), "reports", "json")
R = os.path.join(os.path.dirname(__file__), "reports")


def load(name):
    p = os.path.join(J, name)
    if not os.path.exists(p):
        return None
    if p.endswith((".txt", ".md")):
        return open(p).read().strip()
    return json.load(open(p))


def exits_cells(e):
    return " | ".join(f"{x['count']}" for x in e["exits"])


def row(label, e, wall=None):
    t = {x["batch"]: x for x in e["timing"]}
    b1 = e["measured_speedup"]
    bl = e.get("measured_speedup_large")
    bl = f"{bl:.2f}×" if bl is not None else "–"
    w = f" | {wall}" if wall is not None else ""
    return (f"| {label} | {100 * e['accuracy']:.2f} | {100 * e['full_accuracy']:.2f} | {e['relative_cost']:.3f} | "
            f"{e['predicted_speedup']:.2f}× | {b1:.2f}× / {bl} | {exits_cells(e)}{w} |")


def header(key, n_exits, wall=False):
    ex = " | ".join([f"# exit {i}" for i in range(n_exits - 1)] + ["# final"])
    w = " | train s" if wall else ""
    cols = 6 + n_exits + (1 if wall else 0)
    return (f"| {key} | accuracy % | full network % | true relative cost | predicted speed-up | "
            f"measured speed-up b1 / b256 | {ex}{w} |\n|" + "---:|" * cols)


def policy_cell(name):
    c = load(f"{name}-cal.json")
    return c["calibration"]["policy"] if c else "?"


def lambda_tables(lambdas, runs):
    """The two λ tables: EENets' own inference, then calibrated thresholds (runs without JSON skipped)."""
    out = ["\n## EENets inference (learned confidence, T = 0.5, Algorithm 1), test\n", header("λ", 3, wall=True)]
    for l, r in zip(lambdas, runs):
        e = load(f"{r}-conf.json")
        if e:
            out.append(row(l, e, load(f"{r}-wall_seconds.txt")))
    out.append("\n## Same weights, per-exit maxprob thresholds calibrated on validation (≤ 0.5 points below the "
               "full network), test\n")
    out.append(header("λ", 3))
    for l, r in zip(lambdas, runs):
        e = load(f"{r}-test.json")
        if e:
            out.append(row(l, e))
    return out


def eenet8_mnist():
    lambdas = ["0.5", "0.75", "1.0", "1.25", "1.5"]
    runs = [f"eenet8-mnist-v2-l{l}" for l in lambdas]
    common = """Reproduce: `experiments/eenet8-mnist.sh` (trains with `earlyexit train`, then `eval`,
`calibrate`, `eval`). EENet-8 at width 8 with Pool exits (with confidence branches) after block1
and block2, `configs/eenet8w8-mnist-short.toml`: Adam lr 1e-3, batch 32, seed 1, **3 epochs on
the first 12,000 training images of the split** (the first a deeply supervised warm-up, then two
of the loss; the paper trains 20 epochs on all of them) to fit a shared 2-core machine.
Validation: 5,000 images held out of the official training set; test: the 10,000 official test
images. Exit costs are honest MACs (earlier heads included): 0.41 and 0.71 of the plain network,
1.004 for the final classifier with both heads. "True relative cost" = mean MACs of the exits
actually taken / plain network MACs. Measured speed-ups: the engine against the same weights run
without exits, at batch 1 (300 samples) and batch 256, on a 2-core machine shared with other
jobs (treat ±20 % as noise). "train s": wall-clock training time of the run under that load.
"""
    findings = """
What the committed numbers say:
- **The exits barely learn at this training budget.** After the warm-up epoch (375 steps) the
  Pool heads of block1/block2 (8 and 16 pooled features) reach only ~27 % / ~44 % on validation,
  and L_v2 then lowers them further (~20 % / ~35 %, "accuracy if all leave here"). With learned
  confidence at T = 0.5, λ ≤ 1 sends every test sample to the final classifier (cost 1.004, the
  heads included); λ = 1.25 and 1.5 start to use exit 0 (~9–11 % of the samples, cost 0.95 /
  0.94) for 0.4–0.5 points. This is the small-λ side of EENets Table 3 (all samples leave last
  for λ ≤ 0.7 there); the paper's early exits at λ ≥ 0.9 come after 20 full epochs.
- Calibrated maxprob thresholds recover the same small saving for every λ: ~10.5 % of the
  samples leave at exit 0 with ~98 % accuracy, cost 0.94, 0.1–0.4 points below the full network.
- The final classifiers do not depend on λ beyond noise (95.8–96.2 %).
- Measured speed-ups vary from 0.44× to 3.3× for predicted 1.00–1.07×: they are noise from the
  other jobs on the machine, not a property of the runs.
"""
    out = ["# EENet-8 on MNIST: λ sweep of L_v2 (EENets Table 3), short\n",
           "The same sweep on all 55,000 training images, with EENets Table 3's λ values: "
           "[`eenet8-mnist-lambda-full.md`](eenet8-mnist-lambda-full.md).\n", common, findings]
    out.extend(lambda_tables(lambdas, runs))
    out.append("\nPlots of the λ = 1 run (trade-off, exits, confidence histograms, training curves): "
               "[`eenet8-mnist-v2-l1.0/report.md`](eenet8-mnist-v2-l1.0/report.md).\n")
    out.append("\nCalibrated policies: " + "; ".join(f"λ {l}: `{policy_cell(r)}`" for l, r in zip(lambdas, runs)) + ".\n")
    open(os.path.join(R, "eenet8-mnist-lambda.md"), "w").write("\n".join(out) + "\n")

    objs = [("eenet-v2 (λ = 1)", "eenet8-mnist-v2-l1.0"), ("soft-conditional (λ = 1)", "eenet8-mnist-soft"),
            ("joint", "eenet8-mnist-joint")]
    out = ["# EENet-8 on MNIST: soft-conditional vs joint vs eenet-v2\n", common,
           "\nSame backbone, heads, data, seed, optimiser and epochs; eenet-v2 and soft-conditional start with "
           "the same epoch of deeply supervised warm-up (joint *is* deep supervision, so it trains all 3 "
           "epochs with it). Every run is calibrated the same way: per-exit maxprob thresholds on validation, "
           "cheapest policy within 0.5 points of its own full network.\n",
           """
What the committed numbers say:
- **joint** is the only scheme whose exits really learn (it supervises them all three epochs):
  exit 0 / exit 1 reach 42.7 % / 62.8 % on their own (eenet-v2: 20.7 % / 35.8 %), and calibration sends 27 % of the test
  samples out early, for the lowest cost (0.893) at 0.37 points below its own final classifier.
  Its final classifier pays for it: 93.97 % against 96.1–96.2 % for the other two, so its
  calibrated accuracy (93.60 %) is the lowest of the three.
- **eenet-v2** and **soft-conditional** keep the final classifier at ~96.1 % and end at the same
  calibrated point (cost 0.940, ~10.6 % leaving at exit 0 with ~98 % accuracy, 95.8 %). Their
  learned confidences are almost unused at T = 0.5 (eenet-v2: no early exit at all;
  soft-conditional: 8 % at exit 0).
- At 3 short epochs none of the three saves much; the ordering of cost vs accuracy is the
  expected one (joint: cheapest, least accurate). Measured speed-ups are noise (see above).
""",
           "\n## Calibrated (maxprob, per exit, ≤ 0.5 points on validation), test\n", header("objective", 3, wall=True)]
    for label, r in objs:
        e = load(f"{r}-test.json")
        if e:
            out.append(row(label, e, load(f"{r}-wall_seconds.txt")))
    out.append("\n## Learned confidence, T = 0.5 (joint does not train the confidence branches: shown for completeness), test\n")
    out.append(header("objective", 3))
    for label, r in objs:
        e = load(f"{r}-conf.json")
        if e:
            out.append(row(label, e))
    out.append("\nCalibrated policies: " + "; ".join(f"{l}: `{policy_cell(r)}`" for l, r in objs) + ".\n")
    open(os.path.join(R, "eenet8-mnist-objectives.md"), "w").write("\n".join(out) + "\n")


def eenet8_mnist_full():
    lambdas = [l for l in ["0.5", "0.75", "0.9", "0.95", "1.0", "1.05", "1.1", "1.15", "1.25", "1.3", "1.5"]
               if load(f"eenet8-mnist-full-v2-l{l}-conf.json")]
    runs = [f"eenet8-mnist-full-v2-l{l}" for l in lambdas]
    findings = load("eenet8-mnist-full-findings.md") or ""
    out = ["# EENet-8 on MNIST, all training images: λ sweep of L_v2 (EENets Table 3)\n",
           """Reproduce: `experiments/eenet8-mnist-full.sh`. EENet-8 at width 8 with Pool exits (with
confidence branches) after block1 and block2, `configs/eenet8w8-mnist.toml` with `--epochs 3`: Adam
lr 1e-3, batch 32, seed 1, **3 epochs on all 55,000 training images of the split** (the first a
deeply supervised warm-up, then two of L_v2; the paper trains 20 epochs at width 4). Validation:
5,000 images held out of the official training set; test: the 10,000 official test images. Exit
costs are honest MACs (earlier heads included): 0.41 and 0.71 of the plain network, 1.004 for the
final classifier with both heads. "True relative cost" = mean MACs of the exits actually taken /
plain network MACs. Two runs trained and evaluated at a time (one thread each), so the measured
speed-ups (engine against the same weights without exits, batch 1 on 300 samples and batch 256)
carry the other run's noise. "train s": wall-clock training time of the run.
""", findings]
    out.extend(lambda_tables(lambdas, runs))
    out.append("\nCalibrated policies: " + "; ".join(f"λ {l}: `{policy_cell(r)}`" for l, r in zip(lambdas, runs)) + ".\n")
    open(os.path.join(R, "eenet8-mnist-lambda-full.md"), "w").write("\n".join(out) + "\n")


def gap(d):
    """`d` (a fraction) as "x.xx points below" or "x.xx points above"."""
    return f"{100 * abs(d):.2f} points {'below' if d >= 0 else 'above'}"


def timing_cells(e):
    t = {x["batch"]: x for x in e["timing"]}
    cells = []
    for b in sorted(t):
        x = t[b]
        cells.append(f"batch {b}: **{x['speedup']:.2f}×** ({x['policy_us']:.0f} vs {x['plain_us']:.0f} µs/sample)")
    return "; ".join(cells)


VARIANTS = {
    "resnet20-fashion-heads": (
        "five `bnpool` exits (BatchNorm, ReLU, global pooling, linear) after stage1.block2, stage1.block3, "
        "stage2.block1, stage2.block2, stage2.block3 (honest relative costs 0.24, 0.36, 0.45, 0.57, 0.68, earlier "
        "heads included), trained for 1 epoch on the **frozen** plain network (`configs/resnet20-fashion-mnist-heads.toml`, "
        "objective `heads-only`, same optimiser): backbone and final classifier are the plain network's own weights"),
    "resnet20-fashion-joint": (
        "six `plain` exits (a linear layer on the flattened features) after every block of stages 1 and 2 "
        "(cuts 1–6, honest relative costs 0.13, 0.25, 0.37, 0.46, 0.58, 0.70), the whole network trained **from "
        "scratch** with its exits, jointly (`configs/resnet20-fashion-mnist-exits.toml`: same recipe, seed and epochs "
        "as the plain network; loss weights equal to the exits' costs, 1 for the final classifier)"),
    "resnet20-fashion-finetune": (
        "the same six `plain` exits added to the **trained plain network** and the whole network fine-tuned jointly "
        "for 2 epochs (`configs/resnet20-fashion-mnist-finetune.toml`: SGD lr 0.01 cosine, loss weights equal to the "
        "exits' costs)"),
    "resnet20-fashion-ramp": (
        "the same six `plain` exits, the whole network trained **from scratch in one run** with the plain recipe, "
        "the early exits' loss weights (their costs) **ramped in** from 0 over the first 2 epochs "
        "(`configs/resnet20-fashion-mnist-ramp.toml`)"),
    "resnet20-fashion-distill": (
        "the same six `plain` exits, the whole network trained **from scratch in one run** with the plain recipe "
        "and **self-distillation**: each early exit's term is (1 − w)·CE + w·T²·KL(final ‖ exit), T = 3, w = 0.5, "
        "the final classifier a fixed teacher (`configs/resnet20-fashion-mnist-distill.toml`; loss weights equal to "
        "the exits' costs)"),
}


def goal_row(label, e, plain):
    drop = 100 * (plain["accuracy"] - e["accuracy"])
    met = drop <= 0.5 and e["relative_cost"] <= 0.45
    return (f"| {label} | **{100 * e['accuracy']:.2f}** | {drop:+.2f} | **{e['relative_cost']:.3f}** | "
            f"{e['predicted_speedup']:.2f}× | {timing_cells(e)} | {'**met**' if met else 'not met'} |"), met


def resnet20_fashion(x):
    p = "resnet20-fashion-plain"
    plain, ex, cal = load(f"{p}-test.json"), load(f"{x}-test.json"), load(f"{x}-cal.json")
    # A variant trained on another pass than the committed plain run compares against the plain
    # recipe retrained on its own pass where that was measured ({x}-plain-test.json).
    same_pass = load(f"{x}-plain-test.json")
    if same_pass:
        plain = same_pass
    bud, bud_test = load(f"{x}-budget.json"), load(f"{x}-budget-test.json")
    c = cal["calibration"]
    rows = []
    r, met_drop = goal_row(f"calibrated: cheapest within 0.5 points of its own full network on val → `{c['policy']}`", ex, plain)
    rows.append(r)
    met_budget = False
    if bud and bud_test:
        r, met_budget = goal_row(f"calibrated: most accurate at expected cost ≤ 0.45 on val → `{bud['calibration']['policy']}`", bud_test, plain)
        rows.append(r)
    verdict = "**met**" if (met_drop or met_budget) else "**not met**"
    o = [f"""# ResNet-20 with early exits vs the same ResNet without exits, Fashion-MNIST

Reproduce: `experiments/resnet20-fashion.sh` (`EXITS={x.rsplit('-', 1)[1]}`; `PLAIN_FROM=DIR` reuses a trained plain run).

- **Plain**: ResNet-20 (6n+2, n = 3; 31.48 M MACs on 1×28×28), `configs/resnet20-fashion-mnist-plain.toml`:
  SGD lr 0.1, momentum 0.9, weight decay 5e-4, cosine schedule, batch 128, 6 epochs on the
  55,000 training images, no augmentation, seed 1; {load(f"{p}-wall_seconds.txt")} s of training (on a loaded machine){"; here retrained on the same (native) training pass and thread count as the variant, which the plain row below is" if same_pass else ""}.
- **With exits**: {VARIANTS[x]}; {load(f"{x}-wall_seconds.txt")} s of training.
- Validation: 5,000 images held out of the official training set (all calibration happens there);
  test: the 10,000 official test images. Measured speed-ups: the engine on the {ex.get('implementation') or ex.get('timing_path') or 'burn'} path
  against the same weights without exits (`never`), 2 threads; the machine's other work adds noise.

## Goal: within 0.5 points of the plain network at relative cost ≤ 0.45 — {verdict}

Both calibrations choose one maxprob threshold per exit on the validation split only
(`earlyexit calibrate --per-exit`, with `--max-accuracy-drop 0.5` and with `--budget 0.45`); the
test split is used once, by `earlyexit eval --split test`.

| test split (10,000) | accuracy % | vs plain (points) | relative cost | predicted speed-up | measured speed-up | goal |
|---|---:|---:|---:|---:|---|---|
| plain ResNet-20 | {100 * plain['accuracy']:.2f} | – | 1.000 | 1.00× | {timing_cells(plain)} | – |
| with exits, full network (policy `never`) | {100 * ex['full_accuracy']:.2f} | {100 * (plain['accuracy'] - ex['full_accuracy']):+.2f} | {ex['exits'][-1]['relative_cost']:.3f} | – | – | – |
""" + "\n".join(rows) + f"""

"vs plain" is the plain network's test accuracy minus this row's (positive: below the plain
network). The plain row's measured speed-up is the engine against itself (the noise floor of this
machine). On validation: the first policy has {100 * c['validation']['accuracy']:.2f} % at cost
{c['validation']['relative_cost']:.3f} (full network {100 * c['full_accuracy']:.2f} %){f", the second {100 * bud['calibration']['validation']['accuracy']:.2f} % at cost {bud['calibration']['validation']['relative_cost']:.3f}" if bud else ""}.
ECE of the first policy's answers: {ex['ece']:.4f}; over-thinking (an earlier exit right, the final wrong): {ex['overthinking']}.
The tables below, the plots and `prune-exits` use the {"second" if bud_test else "first"} policy (the one left in `policy.json`).
"""]
    if bud_test:
        ex = bud_test
    findings = load(f"{x}-findings.md")
    if findings:
        o.append("\n" + findings + "\n")
    # Every variant run so far, side by side.
    rows = []
    for v in VARIANTS:
        for proto, f in [("≤ 0.5 points", f"{v}-test.json"), ("cost ≤ 0.45", f"{v}-budget-test.json")]:
            e = load(f)
            if e:
                rows.append(f"| `{v.rsplit('-', 1)[1]}` | {proto} | {100 * e['full_accuracy']:.2f} | {100 * e['accuracy']:.2f} | "
                            f"{100 * (plain['accuracy'] - e['accuracy']):+.2f} | {e['relative_cost']:.3f} | "
                            f"{e['measured_speedup']:.2f}× / {e['measured_speedup_large']:.2f}× | {load(f'{v}-wall_seconds.txt')} |")
    if len(rows) > 1:
        o.append("\n## Every variant run, calibrated the same ways, test\n")
        o.append("| EXITS= | calibration | full network % | calibrated % | vs plain (points) | relative cost | measured speed-up b1 / b256 | train s |\n|---|---|---:|---:|---:|---:|---:|---:|")
        o.extend(rows)
        o.append("\nReports of the other variants: " + ", ".join(
            f"[`{v}`]({v}.md)" for v in VARIANTS if v != x and load(f"{v}-test.json")) + ".\n")
    o.append("\n## Exits of the calibrated policy on test\n")
    o.append("| exit | relative cost | coverage % | accuracy % | accuracy if all leave here % |\n|---|---:|---:|---:|---:|")
    n = len(ex["exits"])
    for e in ex["exits"]:
        name = "final" if e["exit"] == n - 1 else str(e["exit"])
        acc = "–" if e["accuracy"] is None else f"{100 * e['accuracy']:.2f}"
        o.append(f"| {name} | {e['relative_cost']:.3f} | {100 * e['coverage']:.2f} | {acc} | {100 * e['accuracy_all']:.2f} |")
    for title, f in [("Threshold sweep on test (`earlyexit sweep --split test --steps 10`)", f"{x}-sweep.md"),
                     ("Which exits pay for themselves (`earlyexit prune-exits`)", f"{x}-prune.md")]:
        t = load(f)
        if t:
            o.append(f"\n## {title}\n\n{t}\n")
    o.append(f"\nPlots and the full report: [`{x}/report.md`]({x}/report.md).\n")
    text = "\n".join(o) + "\n"
    open(os.path.join(R, f"{x}.md"), "w").write(text)
    # The headline report (the variant named by MAIN_VARIANT, by default the one just made).
    if x == os.environ.get("MAIN_VARIANT", x):
        open(os.path.join(R, "resnet20-fashion.md"), "w").write(text)


if __name__ == "__main__":
    if sys.argv[1] == "eenet8-mnist-full":
        eenet8_mnist_full()
    elif sys.argv[1] == "eenet8-mnist":
        eenet8_mnist()
    else:
        resnet20_fashion(sys.argv[2])
