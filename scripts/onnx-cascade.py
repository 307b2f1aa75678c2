#!/usr/bin/env python3
"""Runs a cascade exported by `earlyexit export --format onnx` with ONNX Runtime, from its
manifest alone: real per-sample exits on batches (the samples that leave are dropped before the
next stage). With --mnist it scores the MNIST test set of data/mnist.

    pip install onnxruntime numpy
    python scripts/onnx-cascade.py runs/resnet20a-onnx --mnist data/mnist
"""

import argparse
import gzip
import json
import os
import struct

import numpy as np
import onnxruntime as ort


class Cascade:
    def __init__(self, folder):
        with open(os.path.join(folder, "manifest.json")) as f:
            self.m = json.load(f)
        assert self.m["format"] == "earlyexit-cascade/1", self.m["format"]
        load = lambda e: ort.InferenceSession(os.path.join(folder, e["file"]), providers=["CPUExecutionProvider"])
        self.stages = [load(s) for s in self.m["stages"]]
        self.exits = [load(e) for e in self.m["exits"]]
        kind, _, args = self.m["policy"].partition(":")
        self.kind = kind
        # `off`: an exit that never fires (NaN compares false both ways).
        self.thresholds = [float("nan") if t == "off" else float(t) for t in args.split(",")] if args else []

    def threshold(self, k):
        return self.thresholds[k] if len(self.thresholds) > 1 else self.thresholds[0]

    def leaves(self, k, outputs):
        """Which samples leave at exit k (maxprob, entropy and confidence policies)."""
        logits = outputs[0]
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        if self.kind == "maxprob":
            score = p.max(1)
        elif self.kind == "entropy":
            # Leaves when the normalised entropy is at most the threshold.
            entropy = -(p * np.log(np.clip(p, 1e-30, None))).sum(1) / np.log(p.shape[1])
            return entropy <= self.threshold(k)
        elif self.kind == "confidence":
            score = 1 / (1 + np.exp(-outputs[1][:, 0]))
        else:
            raise SystemExit(f"this runner applies maxprob, entropy and confidence policies, not {self.kind}")
        return score >= self.threshold(k)

    def __call__(self, x):
        """Classes and exit indices of a batch of normalised inputs [N, C, H, W]."""
        n = len(x)
        classes, exits = np.zeros(n, np.int64), np.zeros(n, np.int64)
        alive, feats = np.arange(n), x.astype(np.float32)
        for k, stage in enumerate(self.stages):
            feats = stage.run(None, {"x": feats})[0]
            outputs = self.exits[k].run(None, {"features": feats})
            last = k == len(self.stages) - 1
            go = np.ones(len(alive), bool) if last else self.leaves(k, outputs)
            classes[alive[go]] = outputs[0][go].argmax(1)
            exits[alive[go]] = k
            alive, feats = alive[~go], feats[~go]
            if len(alive) == 0:
                break
        return classes, exits


def mnist(folder):
    def read(name):
        with gzip.open(os.path.join(folder, name), "rb") as f:
            data = f.read()
        magic, n = struct.unpack(">II", data[:8])
        return np.frombuffer(data, np.uint8, offset=16).reshape(n, 1, 28, 28) if magic == 2051 else np.frombuffer(data, np.uint8, offset=8)
    return read("t10k-images-idx3-ubyte.gz"), read("t10k-labels-idx1-ubyte.gz")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--mnist", help="score the MNIST test set in this folder")
    ap.add_argument("--batch", type=int, default=256)
    a = ap.parse_args()
    c = Cascade(a.folder)
    images, labels = mnist(a.mnist)
    x = images.astype(np.float32) / 255.0
    norm = c.m["normalize"]
    if norm:
        mean = np.array(norm["mean"], np.float32).reshape(1, -1, 1, 1)
        std = np.array(norm["std"], np.float32).reshape(1, -1, 1, 1)
        x = (x - mean) / std
    preds, exits = zip(*(c(x[i:i + a.batch]) for i in range(0, len(x), a.batch)))
    preds, exits = np.concatenate(preds), np.concatenate(exits)
    cost = np.array([e["relative_cost"] for e in c.m["exits"]])[exits].mean()
    print(f"accuracy {100 * (preds == labels).mean():.2f}%  relative cost {cost:.4f}  "
          f"exits {np.bincount(exits, minlength=len(c.stages)).tolist()}")
