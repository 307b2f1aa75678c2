#!/usr/bin/env python3
"""The PyTorch side of `scripts/bench-vs-torch`: the same figures as `earlyexit perf`.

Each figure is the same work as in `src/perf.rs`: a ResNet 6n+2 with the EENets projection
shortcuts (1x1 conv + BN where the shape changes), the early-exit engine on ResNet-56 with four
`pool` exits (global average pool, a linear classifier and a linear confidence branch) at cuts
6, 10, 14, 16 with forced exit shares 0.30/0.20/0.15/0.10, and one SGD step of ResNet-20. Prints
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
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:
    sys.exit("torch_perf.py: this interpreter has no torch; `pip install torch` in a venv and pass its python")

ENGINE_CUTS = [6, 10, 14, 16]
ENGINE_SHARES = [0.3, 0.2, 0.15, 0.1]
ENGINE_POOL = 256


class Basic(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, 0, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.b2(self.c2(F.relu(self.b1(self.c1(x)))))
        return F.relu(y + (x if self.short is None else self.short(x)))


def resnet_blocks(depth):
    n = (depth - 2) // 6
    blocks = [nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())]
    cin = 16
    for s, w in enumerate([16, 32, 64]):
        for b in range(n):
            blocks.append(Basic(cin, w, 2 if (b == 0 and s > 0) else 1))
            cin = w
    return nn.ModuleList(blocks)


def channels_after(blocks, i):
    b = blocks[i]
    return b.c2.out_channels if isinstance(b, Basic) else 16


class PoolHead(nn.Module):
    def __init__(self, c, classes=10):
        super().__init__()
        self.fc = nn.Linear(c, classes)
        self.conf = nn.Linear(c, 1)

    def forward(self, x):
        z = x.mean((2, 3))
        return self.fc(z), self.conf(z)


class Net(nn.Module):
    """A ResNet with early-exit heads after the blocks in `cuts` (block 0 is the stem)."""

    def __init__(self, depth, cuts=()):
        super().__init__()
        self.blocks = resnet_blocks(depth)
        self.cuts = list(cuts)
        self.heads = nn.ModuleList(PoolHead(channels_after(self.blocks, c)) for c in self.cuts)
        self.fc = nn.Linear(64, 10)

    def stage_ranges(self):
        bounds = [0] + [c + 1 for c in self.cuts] + [len(self.blocks)]
        return [range(bounds[k], bounds[k + 1]) for k in range(len(bounds) - 1)]

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return self.fc(x.mean((2, 3)))

    def forward_all(self, x):
        outs = []
        for k, r in enumerate(self.stage_ranges()):
            for i in r:
                x = self.blocks[i](x)
            outs.append(self.heads[k](x)[0] if k < len(self.cuts) else self.fc(x.mean((2, 3))))
        return outs

    def infer(self, x, thresholds):
        """Real per-sample exits: after each stage, the samples whose max probability reaches the
        exit's threshold are answered; only the others go on."""
        n = x.shape[0]
        rows = torch.arange(n)
        probs_out = torch.empty(n, 10)
        exit_out = torch.empty(n, dtype=torch.long)
        ranges = self.stage_ranges()
        for k, r in enumerate(ranges):
            for i in r:
                x = self.blocks[i](x)
            if k < len(self.cuts):
                logits = self.heads[k](x)[0]
                p = F.softmax(logits, 1)
                leave = p.max(1).values >= thresholds[k]
                if leave.any():
                    probs_out[rows[leave]] = p[leave]
                    exit_out[rows[leave]] = k
                    stay = ~leave
                    x, rows = x[stay], rows[stay]
                if rows.numel() == 0:
                    break
            else:
                p = F.softmax(self.fc(x.mean((2, 3))), 1)
                probs_out[rows] = p
                exit_out[rows] = k
        return probs_out, exit_out


def forced_thresholds(net, pool):
    """Per-exit max-probability thresholds that make ENGINE_SHARES of the pool leave at each
    exit (as `earlyexit::bench::forced_thresholds`)."""
    with torch.no_grad():
        outs = net.forward_all(pool)
    n = pool.shape[0]
    alive = torch.ones(n, dtype=torch.bool)
    ts = []
    for k, share in enumerate(ENGINE_SHARES):
        scores = F.softmax(outs[k], 1).max(1).values
        a = scores[alive].sort(descending=True).values
        take = min(round(share * n), a.numel())
        if a.numel() == 0:
            t = float("inf")
        elif take == 0:
            t = a[0].item() + 1.0
        elif take == a.numel():
            t = a[-1].item() - 1.0
        else:
            t = (a[take - 1].item() + a[take].item()) / 2.0
        ts.append(t)
        alive &= scores < t
    return ts


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
        ts = forced_thresholds(net, pool)
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
