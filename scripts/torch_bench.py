#!/usr/bin/env python3
"""PyTorch side of scripts/gpu-bench: the same ResNet-56 (6n+2, CIFAR layout, 1x1-conv + BN
projection shortcuts, as earlyexit builds it) with the same Pool exit heads, on random data (the
network: scripts/torch_resnet.py, which must sit beside this file).

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
        import torch.nn.functional as F
        from torch_resnet import Net, forced_thresholds
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

    net = Net(a.depth, cuts, a.classes, c).to(dev)
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
            f = lambda: F.softmax(net(x), 1).cpu()
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
        thresholds = forced_thresholds(net, pool, shares)

        def infer(x):
            probs, exits = net.infer(x, thresholds)
            return probs.cpu(), exits.cpu()

        for b in [int(v) for v in a.engine_batches.split(",") if v]:
            chunks = [torch.randn(b, c, h, w, device=dev) for _ in range(a.stream)]
            counts = [0] * (len(cuts) + 1)
            for x in chunks:
                for e in infer(x)[1].tolist():
                    counts[e] += 1
            plain = lambda: [F.softmax(net(x), 1).cpu() for x in chunks]
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
