#!/usr/bin/env python3
"""Times the plain forward pass of an `earlyexit export --format torch` folder in PyTorch (eager),
to set beside `earlyexit bench --forward` on the same network.

    earlyexit export --run runs/quickstart --format torch --out /tmp/qs-torch
    python scripts/time-torch-export.py /tmp/qs-torch 1x28x28 [--batch 1,256] [--threads 2]

Prints `torch forward batch N: T ms/batch` (median), as `earlyexit bench --forward` prints its own.
Run it from outside a folder that holds a `torch/` directory.
"""

import argparse
import statistics
import sys
import time

import torch

ap = argparse.ArgumentParser()
ap.add_argument("folder")
ap.add_argument("input", help="CxHxW")
ap.add_argument("--batch", default="1,256")
ap.add_argument("--threads", type=int, default=2)
a = ap.parse_args()
torch.set_num_threads(a.threads)
sys.path.insert(0, a.folder)
import earlyexit_model  # noqa: E402  (the export's own module)

net = earlyexit_model.load(a.folder)
shape = [int(v) for v in a.input.split("x")]
for batch in (int(b) for b in a.batch.split(",")):
    reps = 300 if batch == 1 else 20
    x = torch.randn(batch, *shape)
    with torch.no_grad():
        for _ in range(5):
            net(x)
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - t)
    print(f"torch forward batch {batch:4d}: {statistics.median(times) * 1e3:.3f} ms/batch")
