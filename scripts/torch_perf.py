#!/usr/bin/env python3
"""The PyTorch side of `scripts/bench-vs-torch`: the same figures as `earlyexit perf`.

Each figure is the same work as in `src/bench/figures.rs` (the network: scripts/torch_resnet.py): a
ResNet 6n+2 with the EENets projection shortcuts (1x1 conv + BN where the shape changes), the
early-exit engine on ResNet-56 with four `pool` exits (global average pool, a linear classifier
and a linear confidence branch) at cuts 6, 10, 14, 16 with forced exit shares 0.30/0.20/0.15/0.10, and one SGD step of ResNet-20. Prints
`figure NAME SECONDS` (median seconds per iteration), as `earlyexit perf` does.

Usage: torch_perf.py --figure resnet20-forward-b1[,...] [--reps N] [--threads T]
Needs only torch (CPU). Not a test dependency of the project.
"""

import argparse
import statistics
import sys
import time

try:
    import torch
    import torch.nn.functional as F
    from torch_resnet import Net, forced_thresholds
except ImportError:
    sys.exit("torch_perf.py: this interpreter has no torch; `pip install torch` in a venv and pass its python")

ENGINE_CUTS = [6, 10, 14, 16]
ENGINE_SHARES = [0.3, 0.2, 0.15, 0.1]
ENGINE_POOL = 256


def timed(warmup, reps, step):
    for _ in range(warmup):
        step()
    out = []
    for _ in range(max(reps, 1)):
        t = time.perf_counter()
        step()
        out.append(time.perf_counter() - t)
    return out


def measure(fig, reps):
    head, _, b = fig.rpartition("-b")
    batch = int(b)
    torch.manual_seed(0)
    if head.endswith("-forward"):
        net = Net(int(head[len("resnet"):-len("-forward")])).eval()
        x = torch.randn(batch, 3, 32, 32)
        with torch.no_grad():
            return timed(2, reps, lambda: net(x))
    if head == "engine":
        net = Net(56, ENGINE_CUTS).eval()
        pool = torch.randn(ENGINE_POOL, 3, 32, 32)
        ts = forced_thresholds(net, pool, ENGINE_SHARES)
        chunks = list(pool.split(batch))[: ENGINE_POOL // batch]
        it = iter(range(10**9))
        with torch.no_grad():
            return timed(min(len(chunks), 8), reps, lambda: net.infer(chunks[next(it) % len(chunks)], ts))
    if head == "train-step":
        net = Net(20).train()
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        x = torch.randn(batch, 3, 32, 32)
        y = torch.arange(batch) % 10

        def step():
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(net(x), y)
            loss.item()
            loss.backward()
            opt.step()

        return timed(2, reps, step)
    sys.exit(f"torch_perf.py: unknown figure {fig!r}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--figure", required=True, help="comma-separated figure names")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--params", action="store_true", help="print parameter counts and exit")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.params:
        for d in (20, 56):
            print(f"params resnet{d} {sum(p.numel() for p in Net(d).parameters())}")
        return
    for fig in a.figure.split(","):
        print(f"figure {fig} {statistics.median(measure(fig, a.reps)):.6f}", flush=True)


if __name__ == "__main__":
    main()
