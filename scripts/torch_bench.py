#!/usr/bin/env python3
"""PyTorch side of scripts/gpu-bench: the same ResNet-56 (6n+2, CIFAR layout, 1x1-conv + BN
projection shortcuts, as earlyexit builds it) with the same Pool exit heads, on random data.

Measures, on one device (CUDA by default), with warm-up and torch.cuda.synchronize():
  forward      plain backbone, softmax, probabilities copied to the host, at --forward-batches
  engine       per-sample early exit with thresholds forced to --shares (boolean-mask compaction
               after every exit, as earlyexit's engine does), over a stream of --stream batches
               at --engine-batches, and the plain backbone on the same stream
  train-step   forward through every exit, summed cross-entropy, backward, SGD momentum 0.9
Prints one JSON object (to --out, or stdout).
"""

import argparse
import json
import statistics
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--depth", type=int, default=56)
    ap.add_argument("--input", default="3x32x32")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--cuts", default="6,10,14,16", help="block indices (0 = stem) after which exits sit")
    ap.add_argument("--shares", default="0.3,0.2,0.15,0.1")
    ap.add_argument("--forward-batches", default="1,256,1024")
    ap.add_argument("--engine-batches", default="256,1024")
    ap.add_argument("--stream", type=int, default=4)
    ap.add_argument("--train-batch", type=int, default=128)
    ap.add_argument("--train-steps", type=int, default=20)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--out")
    a = ap.parse_args()

    try:
        import torch
        import torch.nn as nn
        import torch.nn.functional as F
    except ImportError as e:
        print(f"torch_bench: PyTorch is not installed ({e}); skipping the PyTorch side", file=sys.stderr)
        sys.exit(3)
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print("torch_bench: CUDA is not available to PyTorch; use --device cpu", file=sys.stderr)
        sys.exit(4)
    dev = torch.device(a.device)
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    c, h, w = (int(v) for v in a.input.split("x"))
    cuts = [int(v) for v in a.cuts.split(",") if v]
    shares = [float(v) for v in a.shares.split(",") if v]
    assert len(cuts) == len(shares), "one share per exit"

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

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

    n = (a.depth - 2) // 6
    blocks = [nn.Sequential(nn.Conv2d(c, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())]
    widths = []
    cin = 16
    for stage, cout in enumerate([16, 32, 64]):
        for i in range(n):
            blocks.append(Basic(cin, cout, 2 if (stage > 0 and i == 0) else 1))
            cin = cout
    for b in blocks:
        widths.append(b[0].out_channels if isinstance(b, nn.Sequential) else b.c2.out_channels)

    class Head(nn.Module):
        """EENets Pool head: global average pooling, then a classifier and a confidence branch."""

        def __init__(self, cin, classes):
            super().__init__()
            self.fc = nn.Linear(cin, classes)
            self.conf = nn.Linear(cin, 1)

        def forward(self, x):
            p = x.mean((2, 3))
            return self.fc(p), self.conf(p)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList(blocks)
            self.heads = nn.ModuleList([Head(widths[k], a.classes) for k in cuts])
            self.fc = nn.Linear(64, a.classes)
            bounds = [0] + [k + 1 for k in cuts] + [len(blocks)]
            self.stages = [range(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]

        def run_stage(self, k, x):
            for i in self.stages[k]:
                x = self.blocks[i](x)
            return x

        def final(self, x):
            return self.fc(x.mean((2, 3)))

        def backbone(self, x):
            for b in self.blocks:
                x = b(x)
            return self.final(x)

        def forward_all(self, x):
            outs = []
            for k in range(len(self.heads)):
                x = self.run_stage(k, x)
                outs.append(self.heads[k](x)[0])
            x = self.run_stage(len(self.heads), x)
            outs.append(self.final(x))
            return outs

    net = Net().to(dev)
    result = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else a.device,
        "tf32_conv": bool(torch.backends.cudnn.allow_tf32),
        "model": f"resnet{a.depth} {a.input} cuts {cuts} pool heads",
    }

    def timed(f, reps):
        ts = []
        for _ in range(reps):
            sync()
            t = time.perf_counter()
            f()
            sync()
            ts.append(time.perf_counter() - t)
        return statistics.median(ts)

    # Forward: plain backbone, probabilities to the host.
    net.eval()
    fwd = []
    with torch.inference_mode():
        for b in [int(v) for v in a.forward_batches.split(",") if v]:
            x = torch.randn(b, c, h, w, device=dev)
            f = lambda: F.softmax(net.backbone(x), 1).cpu()
            for _ in range(a.warmup):
                f()
            reps = a.reps * (20 if b == 1 else 1)
            t = timed(f, reps)
            fwd.append({"batch": b, "ms_per_batch": 1e3 * t, "images_per_second": b / t})
    result["forward"] = fwd

    # Engine: thresholds forced so that `shares` of a pool leave at each exit.
    eng = []
    with torch.inference_mode():
        pool = torch.randn(1024, c, h, w, device=dev)
        outs = net.forward_all(pool)
        alive = torch.ones(1024, dtype=torch.bool, device=dev)
        thresholds = []
        for k, s in enumerate(shares):
            score = F.softmax(outs[k], 1).max(1).values
            alive_scores = torch.sort(score[alive], descending=True).values.cpu().tolist()
            take = min(round(s * 1024), len(alive_scores))
            if not alive_scores:
                t = float("inf")
            elif take == 0:
                t = alive_scores[0] + 1.0
            elif take == len(alive_scores):
                t = alive_scores[-1] - 1.0
            else:
                t = (alive_scores[take - 1] + alive_scores[take]) / 2
            thresholds.append(t)
            alive &= score < t

        def infer(x):
            rows = torch.arange(x.shape[0], device=dev)
            probs = torch.empty(x.shape[0], a.classes, device=dev)
            exits = torch.full((x.shape[0],), len(cuts), device=dev, dtype=torch.long)
            for k in range(len(cuts)):
                x = net.run_stage(k, x)
                p = F.softmax(net.heads[k](x)[0], 1)
                leave = p.max(1).values >= thresholds[k]
                probs[rows[leave]] = p[leave]
                exits[rows[leave]] = k
                stay = ~leave
                x, rows = x[stay], rows[stay]
                if rows.numel() == 0:
                    break
            if rows.numel() > 0:
                x = net.run_stage(len(cuts), x)
                probs[rows] = F.softmax(net.final(x), 1)
            return probs.cpu(), exits.cpu()

        for b in [int(v) for v in a.engine_batches.split(",") if v]:
            chunks = [torch.randn(b, c, h, w, device=dev) for _ in range(a.stream)]
            counts = [0] * (len(cuts) + 1)
            for x in chunks:
                for e in infer(x)[1].tolist():
                    counts[e] += 1
            plain = lambda: [F.softmax(net.backbone(x), 1).cpu() for x in chunks]
            engine = lambda: [infer(x) for x in chunks]
            for _ in range(a.warmup):
                plain()
                engine()
            tp, te = timed(plain, a.reps), timed(engine, a.reps)
            m = b * a.stream
            eng.append(
                {
                    "batch": b,
                    "samples": m,
                    "exit_shares": [v / m for v in counts],
                    "plain_ms_per_sample": 1e3 * tp / m,
                    "engine_ms_per_sample": 1e3 * te / m,
                    "measured_speedup": tp / te,
                }
            )
    result["engine"] = eng

    # Training step: every exit's cross-entropy, SGD with momentum.
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(a.train_batch, c, h, w, device=dev)
    y = torch.randint(0, a.classes, (a.train_batch,), device=dev)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = sum(F.cross_entropy(o, y) for o in net.forward_all(x))
        loss.backward()
        opt.step()
        return loss

    for _ in range(a.warmup):
        step()
    sync()
    t = time.perf_counter()
    for _ in range(a.train_steps):
        loss = step()
    loss.item()
    sync()
    s = (time.perf_counter() - t) / a.train_steps
    result["train_step"] = {"batch": a.train_batch, "steps": a.train_steps, "seconds_per_step": s,
                            "images_per_second": a.train_batch / s}

    text = json.dumps(result, indent=1)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
