"""Markdown tables from the JSON of objectives-eval.sh."""
import json, os, sys

d = sys.argv[1]
def load(name):
    p = os.path.join(d, name)
    return json.load(open(p)) if os.path.exists(p) else None

def row(label, e):
    counts = " | ".join(str(x["count"]) for x in e["exits"])
    t1 = e["timing"][0]
    return (f"| {label} | {100*e['accuracy']:.2f} | {t1['policy_us']:.1f} | {e['relative_cost']:.3f} | "
            f"{e['measured_speedup']:.2f}× / {e['measured_speedup_large']:.2f}× | {counts} |")

hdr = ("| {k} | accuracy % | time µs/sample (batch 1) | true relative cost | measured speed-up b1 / b256 | "
       "# exit 0 | # exit 1 | # last exit |\n|---:|---:|---:|---:|---:|---:|---:|---:|")
print("## λ sweep of L_v2 (EENets Table 3), EENet-8 on MNIST test (10,000 samples)\n")
print("Inference as EENets Algorithm 1 (learned confidence, T = 0.5):\n")
print(hdr.format(k="λ"))
for l in ["0.5", "0.9", "1.0", "1.1", "1.5"]:
    e = load(f"eenet8-mnist-v2-l{l}-conf.json")
    if e: print(row(l, e))
print("\nSame weights, per-exit maxprob thresholds calibrated on validation (≤ 0.5 points below the full network):\n")
print(hdr.format(k="λ"))
for l in ["0.5", "0.9", "1.0", "1.1", "1.5"]:
    e = load(f"eenet8-mnist-v2-l{l}-calibrated.json")
    if e: print(row(l, e))
print("\n## Objectives on the same backbone and data\n")
print(hdr.format(k="objective, policy").replace("|---:|---:", "|---|---:", 1))
for name, run in [("eenet-v2 λ=1.0", "eenet8-mnist-v2-l1.0"), ("soft-conditional", "eenet8-mnist-soft"), ("joint", "eenet8-mnist-joint3")]:
    for pol, suffix in [("confidence:0.5", "conf"), ("calibrated maxprob", "calibrated")]:
        e = load(f"{run}-{suffix}.json")
        if e: print(row(f"{name}, {pol}", e))
print("\nFull-network (final classifier) test accuracy per run:\n")
print("| run | full network % | calibrated policy |\n|---|---:|---|")
for run in ["eenet8-mnist-v2-l0.5", "eenet8-mnist-v2-l0.9", "eenet8-mnist-v2-l1.0", "eenet8-mnist-v2-l1.1", "eenet8-mnist-v2-l1.5", "eenet8-mnist-soft", "eenet8-mnist-joint3"]:
    e = load(f"{run}-calibrated.json")
    if e: print(f"| {run} | {100*e['full_accuracy']:.2f} | `{e['policy']}` |")
