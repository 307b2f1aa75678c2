#!/usr/bin/env python3
"""Checks `earlyexit_model.py` in PyTorch against our engine, for every block and head kind.

    EARLYEXIT_KEEP_TORCH_EXPORTS=/tmp/keep cargo test --release --test torch_export export_then
    python scripts/check-torch-export.py /tmp/keep

Each folder under the given one is an export with `expected.json` (our logits at every exit for a
fixed input); this prints the largest difference relative to max(1, |logit|) and the exits that
`infer` takes.
"""

import json
import os
import sys

import torch

root = sys.argv[1]
worst_all = 0.0
for name in sorted(os.listdir(root)):
    d = os.path.join(root, name)
    sys.path.insert(0, d)
    sys.modules.pop("earlyexit_model", None)
    import earlyexit_model

    sys.path.pop(0)
    net = earlyexit_model.load(d)
    e = json.load(open(os.path.join(d, "expected.json")))
    x = torch.tensor(e["input"]).reshape(e["dims"])
    with torch.no_grad():
        outs = net.forward_all(x)
    worst = 0.0
    for (logits, _), ref in zip(outs, e["logits"]):
        ref = torch.tensor(ref).reshape(logits.shape)
        worst = max(worst, ((logits - ref).abs().max() / ref.abs().max().clamp_min(1)).item())
    _, exits = net.infer(x)
    worst_all = max(worst_all, worst)
    print(f"{name:20s} {len(outs)} exits  max relative difference {worst:.2e}  infer exits {exits.tolist()}")
sys.exit(0 if worst_all < 1e-4 else 1)
