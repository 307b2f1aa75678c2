#!/usr/bin/env python3
"""The PyTorch side of `scripts/bench-vs-torch`: the same figures as `earlyexit perf`.

Each figure is the same work as in `src/bench/figures.rs`. The ResNet figures build their network
here (scripts/torch_resnet.py): a ResNet 6n+2 with the EENets projection shortcuts (1x1 conv + BN
where the shape changes), the early-exit engine on ResNet-56 with four `pool` exits (global
average pool, a linear classifier and a linear confidence branch) at cuts 6, 10, 14, 16 with
forced exit shares 0.30/0.20/0.15/0.10, and one SGD step of ResNet-20. The other figures (EENet-8,
VGG-13, MobileNetV2) load the very network earlyexit times from `--export DIR`, which
`earlyexit perf --export-torch DIR` writes (src/interop/earlyexit_model.py rebuilds it, so both
sides count the same parameters); EENet-8's engine runs the export's `infer` with its two exits at
forced shares 0.10/0.23, and its training step sums the cross-entropies of all three exits.
Prints `figure NAME SECONDS` (median seconds per iteration), as `earlyexit perf` does.

Usage: torch_perf.py --figure resnet20-forward-b1[,...] [--reps N] [--threads T] [--export DIR]
       torch_perf.py --sgemm [--threads T]      # one large sgemm's GFLOP/s on 1 and T threads
Needs only torch (CPU). Not a test dependency of the project.
"""

import argparse
import json
import os
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
EENET8_ENGINE_SHARES = [0.10, 0.23]
ENGINE_POOL = 256
RESNETS = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110")


def timed(warmup, reps, step):
    for _ in range(warmup):
        step()
    out = []
    for _ in range(max(reps, 1)):
        t = time.perf_counter()
        step()
        out.append(time.perf_counter() - t)
    return out


def exported(export, fig):
    """The network `earlyexit perf --export-torch` wrote for `fig` (eval mode), and its input
    shape (C, H, W)."""
    if export is None:
        sys.exit(f"torch_perf.py: {fig} times an earlyexit network; pass --export DIR")
    folder = os.path.join(export, fig)
    if not os.path.isdir(folder):
        sys.exit(f"torch_perf.py: {folder} is missing; run `earlyexit perf --figure {fig} --export-torch {export}`")
    sys.path.insert(0, folder)
    import earlyexit_model

    with open(os.path.join(folder, "architecture.json")) as f:
        shape = tuple(int(v) for v in json.load(f)["description"]["input"].split("x"))
    return earlyexit_model.load(folder), shape


class Logits(torch.nn.Module):
    """An export's `forward_all` as the list of logits `forced_thresholds` reads."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward_all(self, x):
        return [logits for logits, _ in self.net.forward_all(x)]


def measure(fig, reps, export):
    head, _, b = fig.rpartition("-b")
    batch = int(b)
    torch.manual_seed(0)
    if head.endswith("-forward"):
        model = head[: -len("-forward")]
        if model in RESNETS:
            net, shape = Net(int(model[len("resnet"):])).eval(), (3, 32, 32)
        else:
            net, shape = exported(export, fig)
        x = torch.randn(batch, *shape)
        with torch.no_grad():
            return timed(2, reps, lambda: net(x).softmax(1))
    if head == "engine":
        net = Net(56, ENGINE_CUTS).eval()
        pool = torch.randn(ENGINE_POOL, 3, 32, 32)
        ts = forced_thresholds(net, pool, ENGINE_SHARES)
        chunks = list(pool.split(batch))[: ENGINE_POOL // batch]
        it = iter(range(10**9))
        with torch.no_grad():
            return timed(min(len(chunks), 8), reps, lambda: net.infer(chunks[next(it) % len(chunks)], ts))
    if head == "eenet8-engine":
        net, shape = exported(export, fig)
        pool = torch.randn(ENGINE_POOL, *shape)
        ts = forced_thresholds(Logits(net), pool, EENET8_ENGINE_SHARES)
        net.policy = "maxprob:" + ",".join(str(t) for t in ts)
        chunks = list(pool.split(batch))[: ENGINE_POOL // batch]
        it = iter(range(10**9))
        return timed(min(len(chunks), 8), reps, lambda: net.infer(chunks[next(it) % len(chunks)]))
    if head.endswith("train-step"):
        model = head[: -len("-train-step")] if head != "train-step" else "resnet20"
        if model in RESNETS:
            net, shape = Net(int(model[len("resnet"):])), (3, 32, 32)
            outputs = lambda x: [net(x)]  # noqa: E731
        else:
            net, shape = exported(export, fig)
            outputs = lambda x: [logits for logits, _ in net.forward_all(x)]  # noqa: E731
        net.train()
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        x = torch.randn(batch, *shape)
        y = torch.arange(batch) % 10

        def step():
            opt.zero_grad(set_to_none=True)
            loss = sum(F.cross_entropy(o, y) for o in outputs(x))
            loss.item()
            loss.backward()
            opt.step()

        return timed(2, reps, step)
    sys.exit(f"torch_perf.py: unknown figure {fig!r}")


def sgemm(threads, n=2048, reps=5):
    """GFLOP/s of an n×n×n float32 matrix product on `threads` threads (best of `reps`)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    best = min(timed(2, reps, lambda: torch.mm(a, b)))
    return 2 * n**3 / best / 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--figure", help="comma-separated figure names")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--export", help="the folder `earlyexit perf --export-torch` wrote")
    ap.add_argument("--sgemm", action="store_true", help="print the 1- and --threads-thread sgemm rate")
    ap.add_argument("--params", action="store_true", help="print parameter counts and exit")
    a = ap.parse_args()
    if a.sgemm:
        for t in sorted({1, a.threads or torch.get_num_threads()}):
            print(f"sgemm threads={t} {sgemm(t):.1f} GFLOP/s", flush=True)
        return
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.params:
        for d in (20, 56):
            print(f"params resnet{d} {sum(p.numel() for p in Net(d).parameters())}")
        return
    if not a.figure:
        ap.error("--figure is required (or --sgemm, --params)")
    for fig in a.figure.split(","):
        print(f"figure {fig} {statistics.median(measure(fig, a.reps, a.export)):.6f}", flush=True)


if __name__ == "__main__":
    main()
