#!/usr/bin/env python3
"""Builds the PyTorch fixtures of the import tests (tests/fixtures/torch/), with fixed seeds.

Run once with PyTorch, torchvision, numpy and safetensors installed, from the repository root:

    python scripts/make-torch-fixtures.py [formula] [small] [mnist]   # all three by default

It writes:

* `formula.json`: for every network the zoo imports, torchvision's (or the CIFAR zoos') own
  state-dict keys and shapes, and PyTorch's logits in eval mode for weights and inputs drawn from a
  formula that the Rust tests recompute (splitmix64 keyed by FNV-1a of the tensor's name). The
  tests write those weights under PyTorch's names, import them and compare logits: this checks
  every layer name, shape and operation without committing a large checkpoint.
* `cifar_resnet20_a_mnist.pt`: a real checkpoint, the CIFAR zoo's ResNet-20 with option-A
  shortcuts (akamaster/pytorch_resnet_cifar10's naming: `linear`, no shortcut weights), trained
  on the embedded MNIST (data/mnist) for one short epoch; with its logits on the first test images
  (`cifar_resnet20_a_mnist.json`).
* `mobilenet_v2_w25.pt` (a torchvision MobileNetV2 at width 0.25, 10 classes, BatchNorm statistics
  from a few train-mode passes) and `resnet20_b.safetensors` (a CIFAR ResNet-20 with projection
  shortcuts named as chenyaofo/pytorch-cifar-models names them: `downsample`, `fc`), each with
  PyTorch's logits for the formula's inputs (`*.json`).
"""

import gzip
import json
import os
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from safetensors.torch import save_file

OUT = os.path.join("tests", "fixtures", "torch")
MASK = (1 << 64) - 1


# --- the formula (mirrored in tests/torch_import.rs) -------------------------------------------

def fnv1a(name: str) -> int:
    h = 0xCBF29CE484222325
    for b in name.encode():
        h ^= b
        h = (h * 0x100000001B3) & MASK
    return h


def uniform(name: str, n: int) -> np.ndarray:
    """n values in [-1, 1): splitmix64 of fnv1a(name) + (i + 1) * golden, as float64."""
    with np.errstate(over="ignore"):
        seed = np.uint64(fnv1a(name))
        z = seed + (np.arange(n, dtype=np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53) * 2.0 - 1.0


def formula(name: str, shape, bn_gain=1.0) -> np.ndarray:
    """The value of tensor `name`: weights scaled by their fan-in, BatchNorm near the identity
    (times `bn_gain`, which pushes activations past ReLU6's cap)."""
    n = int(np.prod(shape)) if len(shape) else 1
    u = uniform(name, n)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "running_var":
        v = 1.0 + 0.25 * u
    elif leaf == "running_mean":
        v = 0.1 * u
    elif leaf == "weight" and len(shape) == 1:  # BatchNorm's gamma
        v = bn_gain * (1.0 + 0.1 * u)
    elif leaf == "bias":
        v = 0.1 * u
    elif leaf == "weight":
        fan_in = n // shape[0]
        v = u * np.sqrt(3.0 / fan_in)
    else:
        raise ValueError(name)
    return v.astype(np.float32).reshape(shape)


# --- the CIFAR zoos' ResNets ------------------------------------------------------------------

class Basic(nn.Module):
    def __init__(self, cin, cout, stride, option):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.option = option
        self.pad = None
        self.downsample = None
        if stride != 1 or cin != cout:
            if option == "A":
                self.pad = (cout - cin) // 2, cout - cin - (cout - cin) // 2, stride
            else:
                self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.pad is not None:
            front, back, s = self.pad
            x = F.pad(x[:, :, ::s, ::s], (0, 0, 0, 0, front, back))
        elif self.downsample is not None:
            x = self.downsample(x)
        return F.relu(y + x)


class CifarResNet(nn.Module):
    """akamaster's (option A, `linear`) or chenyaofo's (option B, `fc`) CIFAR ResNet."""

    def __init__(self, depth, classes, option, cin=3):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(cin, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        c = 16
        for s, w in enumerate([16, 32, 64]):
            blocks = []
            for b in range(n):
                blocks.append(Basic(c, w, 2 if b == 0 and s > 0 else 1, option))
                c = w
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        head = nn.Linear(64, classes)
        self.head_name = "linear" if option == "A" else "fc"
        setattr(self, self.head_name, head)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return getattr(self, self.head_name)(x)


# --- fixtures ----------------------------------------------------------------------------------

def formula_case(key, net, input_shape, classes, width=None, bn_gain=1.0):
    net.eval()
    sd = net.state_dict()
    with torch.no_grad():
        for name, t in sd.items():
            if name.endswith("num_batches_tracked"):
                continue
            t.copy_(torch.from_numpy(formula(name, tuple(t.shape), bn_gain)))
    x = formula_input(input_shape, 2)
    with torch.no_grad():
        logits = net(x)
    if bn_gain != 1.0:
        # The cap must change the answer: the same weights without it give other logits.
        relu6 = [m for m in net.modules() if isinstance(m, nn.ReLU6)]
        for m in relu6:
            m.forward = F.relu
        with torch.no_grad():
            uncapped = net(x)
        for m in relu6:
            del m.forward
        diff = (uncapped - logits).abs()
        assert not torch.isfinite(diff).all() or diff.max() > 1e-2 * logits.abs().max(), "ReLU6 never capped"
    return {
        "name": key,
        "input": "x".join(str(d) for d in input_shape),
        "classes": classes,
        "width": width,
        "bn_gain": bn_gain,
        "keys": [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in sd.items()],
        "logits": logits.tolist(),
    }


def formula_cases():
    tv = torchvision.models
    cases = []
    for d in [18, 34, 50, 101, 152]:
        cases.append(formula_case(f"torchvision:resnet{d}", getattr(tv, f"resnet{d}")(num_classes=10), (3, 64, 64), 10))
    for v in ["vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn"]:
        cases.append(formula_case(f"torchvision:{v}", getattr(tv, v)(num_classes=10), (3, 32, 32), 10))
    cases.append(formula_case("torchvision:mobilenet_v2", tv.mobilenet_v2(num_classes=10), (3, 32, 32), 10))
    cases.append(formula_case("torchvision:mobilenet_v2", tv.mobilenet_v2(num_classes=10, width_mult=0.25), (3, 32, 32), 10, 25))
    # Activations well past 6, so that ReLU6's cap matters.
    mb = tv.mobilenet_v2(num_classes=10, width_mult=0.25)
    cases.append(formula_case("torchvision:mobilenet_v2", mb, (3, 32, 32), 10, 25, bn_gain=12.0))
    cases.append(formula_case("torchvision:densenet121", tv.densenet121(num_classes=10), (3, 32, 32), 10))
    cases.append(formula_case(
        "torchvision:inception_v3",
        tv.inception_v3(num_classes=10, aux_logits=False, init_weights=False, transform_input=False),
        (3, 75, 75),
        10,
    ))
    for d in [20, 56]:
        cases.append(formula_case(f"cifar:resnet{d}", CifarResNet(d, 10, "A"), (3, 32, 32), 10))
    cases.append(formula_case("cifar:resnet20", CifarResNet(20, 10, "B"), (3, 32, 32), 10))
    return cases


def warm_bn(net, shape, seed):
    """A few train-mode passes so that the running statistics are not the identity."""
    g = torch.Generator().manual_seed(seed)
    net.train()
    with torch.no_grad():
        for _ in range(4):
            net(torch.randn(16, *shape, generator=g) * 1.5 + 0.3)
    net.eval()


def formula_input(shape, n):
    """n inputs of `shape` from the formula (the tests recompute them)."""
    return torch.from_numpy(uniform("input", n * int(np.prod(shape))).astype(np.float32).reshape(n, *shape))


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, n = struct.unpack(">II", data[:8])
    if magic == 2051:
        rows, cols = struct.unpack(">II", data[8:16])
        return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, rows, cols)
    return np.frombuffer(data, dtype=np.uint8, offset=8)


def mnist_checkpoint():
    """ResNet-20 (option A) trained on MNIST: one pass over 12,000 training images."""
    torch.manual_seed(0)
    images = read_idx("data/mnist/train-images-idx3-ubyte.gz")
    labels = read_idx("data/mnist/train-labels-idx1-ubyte.gz") if os.path.exists(
        "data/mnist/train-labels-idx1-ubyte.gz") else None
    test_images = read_idx("data/mnist/t10k-images-idx3-ubyte.gz")
    test_labels = read_idx("data/mnist/t10k-labels-idx1-ubyte.gz")
    if labels is None:
        # The embedded folder carries no training labels: train on the first 8,000 test images and
        # record accuracy on the last 2,000 (never trained on).
        images, labels = test_images[:8000], test_labels[:8000]
        held_images, held_labels = test_images[8000:], test_labels[8000:]
    else:
        images, labels = images[:12000], labels[:12000]
        held_images, held_labels = test_images, test_labels
    # The same scaling as earlyexit's MNIST pipeline: pixels / 255, then (v - 0.1307) / 0.3081.
    to_x = lambda a: ((torch.from_numpy(a.astype(np.float32) / 255.0) - 0.1307) / 0.3081).unsqueeze(1)
    x, y = to_x(images), torch.from_numpy(labels.astype(np.int64))
    net = CifarResNet(20, 10, "A", cin=1)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    net.train()
    for epoch in range(2):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        hx = to_x(held_images)
        pred = torch.cat([net(hx[i:i + 500]).argmax(1) for i in range(0, len(hx), 500)])
        acc = (pred.numpy() == held_labels).mean()
        probe = to_x(test_images[:8])
        logits = net(probe)
    torch.save(net.state_dict(), os.path.join(OUT, "cifar_resnet20_a_mnist.pt"))
    write_json("cifar_resnet20_a_mnist.json", {
        "arch": "cifar:resnet20",
        "input": "1x28x28",
        "classes": 10,
        "probe": "the first 8 images of data/mnist/t10k, (pixels / 255 - 0.1307) / 0.3081",
        "held_out_accuracy": float(acc),
        "held_out": "MNIST test images 8000..10000" if len(held_labels) == 2000 else "MNIST test set",
        "logits": logits.tolist(),
    })
    print(f"resnet20_a on MNIST: held-out accuracy {acc:.4f}")


def small_checkpoints():
    torch.manual_seed(1)
    mb = torchvision.models.mobilenet_v2(num_classes=10, width_mult=0.25)
    warm_bn(mb, (3, 32, 32), 2)
    x = formula_input((3, 32, 32), 4)
    with torch.no_grad():
        logits = mb(x)
    torch.save(mb.state_dict(), os.path.join(OUT, "mobilenet_v2_w25.pt"))
    write_json("mobilenet_v2_w25.json", {
        "arch": "torchvision:mobilenet_v2", "width": 25, "input": "3x32x32", "classes": 10,
        "logits": logits.tolist(),
    })
    torch.manual_seed(4)
    rb = CifarResNet(20, 10, "B")
    warm_bn(rb, (3, 32, 32), 5)
    x = formula_input((3, 32, 32), 4)
    with torch.no_grad():
        logits = rb(x)
    save_file({k: v.contiguous() for k, v in rb.state_dict().items()}, os.path.join(OUT, "resnet20_b.safetensors"))
    write_json("resnet20_b.json", {
        "arch": "cifar:resnet20", "input": "3x32x32", "classes": 10, "logits": logits.tolist(),
    })


def write_json(name, obj):
    path = os.path.join(OUT, name)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, separators=(",", ":"))
    os.replace(tmp, path)


if __name__ == "__main__":
    import sys

    os.makedirs(OUT, exist_ok=True)
    torch.set_num_threads(2)
    parts = sys.argv[1:] or ["formula", "small", "mnist"]
    if "formula" in parts:
        write_json("formula.json", formula_cases())
    if "small" in parts:
        small_checkpoints()
    if "mnist" in parts:
        mnist_checkpoint()
