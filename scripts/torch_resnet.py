"""The PyTorch network that scripts/torch_perf.py (CPU, `scripts/bench-vs-torch`) and
scripts/torch_bench.py (GPU, `scripts/gpu-bench`) time against earlyexit, defined once: a ResNet
6n+2 as earlyexit builds it (projection shortcuts, 1x1 conv + BN, where the shape changes) with
EENets Pool exits (global average pool, a linear classifier and a linear confidence branch) after
the blocks in `cuts` (block 0 is the stem), the real per-sample early-exit engine, and the forced
thresholds of `earlyexit::bench::forced_thresholds`. Needs only torch; imported, not run.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


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


def resnet_blocks(depth, in_channels=3):
    n = (depth - 2) // 6
    blocks = [nn.Sequential(nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())]
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

    def __init__(self, depth, cuts=(), classes=10, in_channels=3):
        super().__init__()
        self.classes = classes
        self.blocks = resnet_blocks(depth, in_channels)
        self.cuts = list(cuts)
        self.heads = nn.ModuleList(PoolHead(channels_after(self.blocks, c), classes) for c in self.cuts)
        self.fc = nn.Linear(64, classes)

    def stage_ranges(self):
        bounds = [0] + [c + 1 for c in self.cuts] + [len(self.blocks)]
        return [range(bounds[k], bounds[k + 1]) for k in range(len(bounds) - 1)]

    def run_stage(self, k, x):
        for i in self.stage_ranges()[k]:
            x = self.blocks[i](x)
        return x

    def final(self, x):
        return self.fc(x.mean((2, 3)))

    def forward(self, x):
        """The plain backbone: every block, then the final classifier (no exit head)."""
        for b in self.blocks:
            x = b(x)
        return self.final(x)

    def forward_all(self, x):
        """Every exit's logits, the final classifier last."""
        outs = []
        for k in range(len(self.cuts) + 1):
            x = self.run_stage(k, x)
            outs.append(self.heads[k](x)[0] if k < len(self.cuts) else self.final(x))
        return outs

    def infer(self, x, thresholds):
        """Real per-sample exits: after each stage, the samples whose max probability reaches the
        exit's threshold are answered; only the others go on (boolean-mask compaction, as
        earlyexit's engine). Returns probabilities and exit indices, on `x`'s device."""
        n = x.shape[0]
        rows = torch.arange(n, device=x.device)
        probs_out = torch.empty(n, self.classes, device=x.device)
        exit_out = torch.empty(n, dtype=torch.long, device=x.device)
        for k in range(len(self.cuts) + 1):
            x = self.run_stage(k, x)
            if k < len(self.cuts):
                p = F.softmax(self.heads[k](x)[0], 1)
                leave = p.max(1).values >= thresholds[k]
                if leave.any():
                    probs_out[rows[leave]] = p[leave]
                    exit_out[rows[leave]] = k
                    stay = ~leave
                    x, rows = x[stay], rows[stay]
                if rows.numel() == 0:
                    break
            else:
                probs_out[rows] = F.softmax(self.final(x), 1)
                exit_out[rows] = k
        return probs_out, exit_out


def forced_thresholds(net, pool, shares):
    """Per-exit max-probability thresholds that make `shares` of `pool` leave at each exit (as
    `earlyexit::bench::forced_thresholds`)."""
    with torch.no_grad():
        outs = net.forward_all(pool)
    n = pool.shape[0]
    alive = torch.ones(n, dtype=torch.bool, device=pool.device)
    ts = []
    for k, share in enumerate(shares):
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
