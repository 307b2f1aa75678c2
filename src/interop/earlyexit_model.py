"""An early-exit network exported by `earlyexit export --format torch`, rebuilt in PyTorch.

Self-contained (needs only torch, and safetensors to read the weights). The folder holds
`architecture.json` (every block, cut and head), `model.safetensors` (the weights under this
module's own parameter names) and this file:

    import earlyexit_model as ee
    net = ee.load("exported-folder")          # eval mode, weights loaded
    outs = net.forward_all(x)                 # every exit's (logits, confidence logit or None)
    classes, exits = net.infer(x)             # real per-sample exits with the exported policy

`x` is a float batch [N, C, H, W], normalised as `net.normalize` says (pixels in [0, 1], then
(v - mean) / std per channel) when the model was trained with a normalisation.
"""

import json
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F


def _shape(s):
    return [int(v) for v in s.split("x")]


class ConvBnAct(nn.Module):
    def __init__(self, cin, spec):
        super().__init__()
        kh, kw = spec["k"]
        ph, pw = spec["pad"]
        self.conv = nn.Conv2d(cin, spec["cout"], (kh, kw), spec["stride"], (ph, pw),
                              groups=spec["groups"], bias=spec["bias"])
        self.bn = nn.BatchNorm2d(spec["cout"], eps=spec["bn"]) if spec["bn"] is not None else None
        self.act = spec["act"]

    def forward(self, x):
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.act == "relu6":
            return F.relu6(x)
        return F.relu(x) if self.act == "relu" else x


def _cbr(cin, cout, k, stride, pad, act="relu", bias=False):
    return ConvBnAct(cin, {"cout": cout, "k": [k, k], "stride": stride, "pad": [pad, pad], "groups": 1,
                           "bias": bias, "bn": 1e-5, "act": act})


def _pool(p, kind):
    if kind == "max":
        return nn.MaxPool2d(p["k"], p["stride"], p["pad"])
    return nn.AvgPool2d(p["k"], p["stride"], p["pad"], count_include_pad=True)


class Block(nn.Module):
    """One backbone block, any kind; attribute names mirror earlyexit's module tree."""

    def __init__(self, spec, inp, out):
        super().__init__()
        self.kind = kind = spec["kind"]
        cin = inp[0]
        self.inp, self.out = inp, out
        if kind == "conv":
            layers, c = [], cin
            for s in spec["convs"]:
                layers.append(ConvBnAct(c, s))
                c = s["cout"]
            self.layers = nn.ModuleList(layers)
            self.pool = _pool(spec["pool"], "max") if spec["pool"] else None
        elif kind in ("basic", "basic_padded"):
            cout, stride = spec["cout"], spec["stride"]
            self.conv1 = _cbr(cin, cout, 3, stride, 1)
            self.conv2 = _cbr(cout, cout, 3, 1, 1, act="none")
            projects = kind == "basic" and (stride != 1 or cin != cout)
            self.shortcut = _cbr(cin, cout, 1, stride, 0, act="none") if projects else None
            self.stride = stride
        elif kind == "bottleneck":
            mid, stride = spec["mid"], spec["stride"]
            self.conv1 = _cbr(cin, mid, 1, 1, 0)
            self.conv2 = _cbr(mid, mid, 3, stride, 1)
            self.conv3 = _cbr(mid, 4 * mid, 1, 1, 0, act="none")
            projects = stride != 1 or cin != 4 * mid
            self.shortcut = _cbr(cin, 4 * mid, 1, stride, 0, act="none") if projects else None
        elif kind == "pre_act":
            cout, stride = spec["cout"], spec["stride"]
            self.pre = nn.BatchNorm2d(cin) if spec["pre"] else None
            self.conv1 = _cbr(cin, cout, 3, stride, 1, bias=True)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=True)
            projects = stride != 1 or cin != cout
            self.shortcut = nn.Conv2d(cin, cout, 1, stride, 0, bias=True) if projects else None
        elif kind == "fc":
            self.pool_to = spec.get("pool_to")
            din = cin * self.pool_to[0] * self.pool_to[1] if self.pool_to else inp[0] * inp[1] * inp[2]
            self.linear = nn.Linear(din, spec["dout"])
        elif kind == "inverted_residual":
            hidden = cin * spec["expand"]
            self.expand = ConvBnAct(cin, {"cout": hidden, "k": [1, 1], "stride": 1, "pad": [0, 0], "groups": 1,
                                          "bias": False, "bn": 1e-5, "act": "relu6"}) if spec["expand"] != 1 else None
            self.depthwise = ConvBnAct(hidden, {"cout": hidden, "k": [3, 3], "stride": spec["stride"], "pad": [1, 1],
                                                "groups": hidden, "bias": False, "bn": 1e-5, "act": "relu6"})
            self.project = _cbr(hidden, spec["cout"], 1, 1, 0, act="none")
            self.residual = spec["stride"] == 1 and cin == spec["cout"]
        elif kind == "dense_layer":
            self.norm1 = nn.BatchNorm2d(cin)
            self.conv1 = nn.Conv2d(cin, spec["bottleneck"], 1, bias=False)
            self.norm2 = nn.BatchNorm2d(spec["bottleneck"])
            self.conv2 = nn.Conv2d(spec["bottleneck"], spec["growth"], 3, padding=1, bias=False)
        elif kind == "transition":
            self.norm = nn.BatchNorm2d(cin)
            self.conv = nn.Conv2d(cin, spec["cout"], 1, bias=False)
            self.pool = nn.AvgPool2d(2, 2)
        elif kind == "inception":
            self.branches = nn.ModuleList(Branch(cin, b) for b in spec["branches"])
        else:
            raise ValueError(f"unknown block kind {kind}")

    def forward(self, x):
        k = self.kind
        if k == "conv":
            for l in self.layers:
                x = l(x)
            return self.pool(x) if self.pool is not None else x
        if k == "basic":
            short = self.shortcut(x) if self.shortcut is not None else x
            return F.relu(self.conv2(self.conv1(x)) + short)
        if k == "basic_padded":
            y = self.conv2(self.conv1(x))
            short = x[:, :, ::self.stride, ::self.stride] if self.stride != 1 else x
            extra = y.shape[1] - short.shape[1]
            if extra:
                short = F.pad(short, (0, 0, 0, 0, extra // 2, extra - extra // 2))
            return F.relu(y + short)
        if k == "bottleneck":
            short = self.shortcut(x) if self.shortcut is not None else x
            return F.relu(self.conv3(self.conv2(self.conv1(x))) + short)
        if k == "pre_act":
            short = self.shortcut(x) if self.shortcut is not None else x
            y = F.relu(self.pre(x)) if self.pre is not None else x
            return self.conv2(self.conv1(y)) + short
        if k == "fc":
            if self.pool_to:
                x = F.adaptive_avg_pool2d(x, self.pool_to)
            y = F.relu(self.linear(x.flatten(1)))
            return y.reshape(y.shape[0], -1, 1, 1)
        if k == "inverted_residual":
            h = self.expand(x) if self.expand is not None else x
            y = self.project(self.depthwise(h))
            return y + x if self.residual else y
        if k == "dense_layer":
            y = self.conv1(F.relu(self.norm1(x)))
            y = self.conv2(F.relu(self.norm2(y)))
            return torch.cat([x, y], 1)
        if k == "transition":
            return self.pool(self.conv(F.relu(self.norm(x))))
        return torch.cat([b(x) for b in self.branches], 1)


class Branch(nn.Module):
    def __init__(self, cin, spec):
        super().__init__()
        pool = spec["pool"]
        self.max_pool = _pool(pool, "max") if pool and pool["kind"] == "max" else None
        self.avg_pool = _pool(pool, "avg") if pool and pool["kind"] == "avg" else None
        convs, c = [], cin
        for l in spec["convs"]:
            convs.append(ConvBnAct(c, l["spec"]))
            c = l["spec"]["cout"]
        self.convs = nn.ModuleList(convs)
        self.split = nn.ModuleList(ConvBnAct(c, l["spec"]) for l in spec["split"])

    def forward(self, x):
        if self.max_pool is not None:
            x = self.max_pool(x)
        if self.avg_pool is not None:
            x = self.avg_pool(x)
        for l in self.convs:
            x = l(x)
        return torch.cat([l(x) for l in self.split], 1) if len(self.split) else x


class Classifier(nn.Module):
    def __init__(self, spec, feat):
        super().__init__()
        self.bn = nn.BatchNorm2d(feat[0]) if spec["bn_relu"] else None
        self.global_pool = spec["global_pool"]
        din = feat[0] if self.global_pool else feat[0] * feat[1] * feat[2]
        self.linear = nn.Linear(din, spec["classes"])

    def forward(self, x):
        if self.bn is not None:
            x = F.relu(self.bn(x))
        x = x.mean((2, 3)) if self.global_pool else x.flatten(1)
        return self.linear(x)


class Backbone(nn.Module):
    def __init__(self, spec):
        super().__init__()
        self.blocks = nn.ModuleList(Block(b["spec"], _shape(b["input"]), _shape(b["output"])) for b in spec["blocks"])
        self.classifier = Classifier(spec["classifier"], _shape(spec["blocks"][-1]["output"]))


class Head(nn.Module):
    def __init__(self, spec):
        super().__init__()
        self.kind = spec["kind"]
        c, h, w = _shape(spec["input"])
        self.history_len = len(spec["history"])
        self.grid = spec.get("grid", 1)
        if self.kind == "plain":
            d = c * h * w
        elif self.kind == "dense":
            d = sum(_shape(s)[0] for s in spec["history"])
        elif self.kind == "relupool":
            d = c * self.grid * self.grid
        else:
            d = c
        # `mlp:H[,H2]`: pooled features through one or two hidden layers, each with ReLU.
        widths = [int(w) for w in self.kind[4:].split(",")] if self.kind.startswith("mlp:") else []
        self.hidden = nn.ModuleList()
        for w in widths:
            self.hidden.append(nn.Linear(d, w))
            d = w
        self.bn = nn.BatchNorm2d(c) if self.kind == "bnpool" else None
        self.conv = _cbr(c, c, 3, 1, 1) if self.kind == "branchy" else None
        self.classifier = nn.Linear(d, spec["classes"])
        # The gate reads the head's own probabilities g(softmax(c_i(x))), or its features.
        self.gate_on_prediction = spec.get("gate_on_prediction", False)
        gate_in = spec["classes"] if self.gate_on_prediction else d
        self.confidence = nn.Linear(gate_in, 1) if spec["confidence"] else None

    def forward(self, x, pooled):
        if self.kind == "plain":
            z = x.flatten(1)
        elif self.kind == "pool":
            z = x.mean((2, 3))
        elif self.kind == "bnpool":
            z = F.relu(self.bn(x)).mean((2, 3))
        elif self.kind == "branchy":
            z = self.conv(x).mean((2, 3))
        elif self.kind == "relupool":
            z = F.adaptive_avg_pool2d(F.relu(x), self.grid).flatten(1)
        elif self.kind.startswith("mlp:"):
            z = x.mean((2, 3))
            for layer in self.hidden:
                z = F.relu(layer(z))
        else:
            z = torch.cat(pooled[:self.history_len], 1)
        logits = self.classifier(z)
        if self.confidence is None:
            return logits, None
        return logits, self.confidence(logits.softmax(1) if self.gate_on_prediction else z)


class EarlyExitNet(nn.Module):
    def __init__(self, export):
        super().__init__()
        arch = export["architecture"]
        self.backbone = Backbone(arch["backbone"])
        self.heads = nn.ModuleList(Head(h) for h in arch["heads"])
        self.cuts = arch["cuts"]
        self.pools_history = any(h["kind"] == "dense" for h in arch["heads"])
        self.policy = export["policy"]
        self.normalize = export.get("normalize")

    def stages(self):
        start = 0
        for end in [c + 1 for c in self.cuts] + [len(self.backbone.blocks)]:
            yield range(start, end)
            start = end

    def forward_all(self, x):
        """Every exit's (logits, confidence logit or None), the final classifier last."""
        outs, pooled = [], []
        for k, blocks in enumerate(self.stages()):
            for i in blocks:
                x = self.backbone.blocks[i](x)
                if self.pools_history:
                    pooled.append(F.relu(x).mean((2, 3)))
            outs.append(self.heads[k](x, pooled) if k < len(self.heads) else (self.backbone.classifier(x), None))
        return outs

    def forward(self, x):
        """The plain network's logits (no exit)."""
        for b in self.backbone.blocks:
            x = b(x)
        return self.backbone.classifier(x)

    def _leaves(self, k, logits, conf, streak):
        kind, _, args = self.policy.partition(":")
        # `off`: an exit that never fires (NaN compares false both ways).
        if kind == "class":
            # Per exit `C@A+C@A` or `off`: leave when the argmax is one of the exit's classes and
            # sigmoid of its logit reaches that class's A.
            group = args.split(",")[k]
            top = logits.max(1)
            go = torch.zeros(len(logits), dtype=torch.bool)
            for rule in ([] if group == "off" else group.split("+")):
                c, a = rule.split("@")
                go |= (top.indices == int(c)) & (torch.sigmoid(top.values) >= float(a))
            return go
        ts = [float("nan") if t == "off" else float(t) for t in args.split(",")] if args and kind not in ("patience", "class") else []
        t = (ts[k] if len(ts) > 1 else ts[0]) if ts else None
        p = logits.softmax(1)
        if kind == "maxprob":
            return p.max(1).values >= t
        if kind == "entropy":
            h = -(p * p.clamp_min(1e-30).log()).sum(1) / math.log(p.shape[1])
            return h <= t
        if kind == "confidence":
            return torch.sigmoid(conf[:, 0]) >= t
        if kind == "patience":
            return streak >= int(args)
        if kind in ("never", "ensemble"):
            return torch.zeros(len(logits), dtype=torch.bool)
        raise ValueError(f"unknown policy {self.policy}")

    @torch.no_grad()
    def infer(self, x):
        """Classes and exit indices with real per-sample exits: the samples that leave are
        dropped before the next stage. (`ensemble` mixing is not applied here: use forward_all.)"""
        n = len(x)
        classes = torch.zeros(n, dtype=torch.long)
        exits = torch.zeros(n, dtype=torch.long)
        alive = torch.arange(n)
        pooled, streak, prev = [], torch.zeros(n, dtype=torch.long), None
        for k, blocks in enumerate(self.stages()):
            for i in blocks:
                x = self.backbone.blocks[i](x)
                if self.pools_history:
                    pooled.append(F.relu(x).mean((2, 3)))
            last = k == len(self.heads)
            logits, conf = (self.backbone.classifier(x), None) if last else self.heads[k](x, pooled)
            pred = logits.argmax(1)
            streak = streak + 1 if prev is None else torch.where(pred == prev, streak + 1, torch.ones_like(streak))
            go = torch.ones(len(x), dtype=torch.bool) if last else self._leaves(k, logits, conf, streak)
            classes[alive[go]] = pred[go]
            exits[alive[go]] = k
            keep = ~go
            alive, x, streak, prev = alive[keep], x[keep], streak[keep], pred[keep]
            pooled = [p[keep] for p in pooled]
            if len(alive) == 0:
                break
        return classes, exits


def load(folder, device="cpu"):
    """The network of an export folder, weights loaded, in eval mode."""
    from safetensors.torch import load_file

    with open(os.path.join(folder, "architecture.json")) as f:
        export = json.load(f)
    net = EarlyExitNet(export)
    state = load_file(os.path.join(folder, "model.safetensors"))
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"weights do not fit the architecture: missing {missing}, unexpected {unexpected}")
    return net.to(device).eval()
