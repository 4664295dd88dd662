#!/usr/bin/python3
# An independent check, in PyTorch, of why the toolkit trains BatchNorm with batch statistics and puts a
# BatchNorm back after convs an export folded one into (README, "BatchNorm while a repair trains").
#
# Rebuilds one of fixtures/pytorch's BadNets exactly as build_fixtures.py does (same seed, data and training),
# then runs FT-SAM's defaults on it (ASAM rho 2, eta 0.01, Adam 0.001, 5 epochs, batch 64, on the first 400
# images of valid.h5) under each BatchNorm treatment and prints clean accuracy and ASR on the fixture's test
# sets:
#   frozen: BatchNorm in eval mode while training (running statistics fixed);
#   batch: train mode, running statistics re-estimated on the 400 images afterwards;
#   folded: every conv -> BatchNorm pair fused into the conv (what torch.onnx.export gives), nothing to normalise;
#   folded+batch: the fused network with a BatchNorm put back after every conv, identity-initialised on the 400
#     images, in train mode, statistics re-estimated afterwards.
# Debian's python3-torch only; not a runtime dependency. About 2-6 minutes per model on 2 cores.
#   /usr/bin/python3 scripts/pytorch/batchnorm_ftsam.py resnet18 [preact_resnet18 vgg_bn mobilenet_v2]
import copy
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build_fixtures as bf  # noqa: E402
from models import ARCHS  # noqa: E402


def data():
    xtr = bf.to_rgb32(bf.read_idx(f"{bf.FMNIST}/train-images-idx3-ubyte.gz"))
    ytr = bf.read_idx(f"{bf.FMNIST}/train-labels-idx1-ubyte.gz").astype(np.int64)
    xte = bf.to_rgb32(bf.read_idx(f"{bf.FMNIST}/t10k-images-idx3-ubyte.gz"))
    yte = bf.read_idx(f"{bf.FMNIST}/t10k-labels-idx1-ubyte.gz").astype(np.int64)
    # The same draws, in the same order, as build_fixtures.py's main().
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(xtr))
    x, y = xtr[perm[:3000]].copy(), ytr[perm[:3000]].copy()
    p = rng.permutation(3000)[:300]
    x[p], y[p] = bf.stamp(x[p]), bf.TARGET
    xv, yv = xtr[perm[-500:]], ytr[perm[-500:]]
    nt = np.nonzero(yte != bf.TARGET)[0][500:1000]
    return (x, y), (xv[:400], yv[:400]), (xte[:500], yte[:500]), (bf.stamp(xte[nt]), np.full(len(nt), bf.TARGET))


def set_module(m, name, new):
    parts = name.split(".")
    for q in parts[:-1]:
        m = getattr(m, q)
    setattr(m, parts[-1], new)


def fold(model):
    """Every conv directly followed (in module order) by a BatchNorm of its width, fused into it."""
    m = copy.deepcopy(model).eval()
    prev = None
    for name, mod in list(m.named_modules()):
        if isinstance(mod, nn.Conv2d):
            prev = (name, mod)
        elif isinstance(mod, nn.BatchNorm2d) and prev is not None and prev[1].out_channels == mod.num_features:
            set_module(m, prev[0], fuse_conv_bn_eval(prev[1], mod))
            set_module(m, name, nn.Identity())
            prev = None
    return m


class ConvBN(nn.Module):
    def __init__(self, conv):
        super().__init__()
        self.conv, self.bn = conv, nn.BatchNorm2d(conv.out_channels)

    def forward(self, x):
        return self.bn(self.conv(x))


def put_back(model, images):
    """A BatchNorm after every conv, initialised to the identity on `images` (scale sqrt(var+eps), bias mean)."""
    m = copy.deepcopy(model)
    for name, c in [(n, c) for n, c in m.named_modules() if isinstance(c, nn.Conv2d)]:
        set_module(m, name, ConvBN(c))
    bns = [mod.bn for mod in m.modules() if isinstance(mod, ConvBN)]
    with torch.no_grad():
        for b in bns:  # identity in eval mode until calibrated
            b.eval()
            b.running_mean.zero_()
            b.running_var.fill_(1 - b.eps)
        for b in bns:  # one at a time: the later ones see the earlier ones as identities
            b.train()
            b.reset_running_stats()
            b.momentum = None
            m(images)
            b.weight.copy_(torch.sqrt(b.running_var + b.eps))
            b.bias.copy_(b.running_mean)
            b.eval()
    return m


def recalibrate(m, images):
    for mod in m.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            mod.reset_running_stats()
            mod.momentum = None
    m.train()
    with torch.no_grad():
        for i in range(0, len(images), 200):
            m(images[i:i + 200])
    m.eval()


def ft_sam(m, x, y, train_mode, rho=2.0, eta=0.01, lr=1e-3, epochs=5, bs=64):
    opt = torch.optim.Adam(m.parameters(), lr=lr)
    g = np.random.default_rng(1)
    for _ in range(epochs):
        m.train() if train_mode else m.eval()
        order = g.permutation(len(x))
        for i in range(0, len(x), bs):
            b = order[i:i + bs]
            xb, yb = bf.to_tensor(x[b]), torch.from_numpy(y[b])
            opt.zero_grad()
            F.cross_entropy(m(xb), yb).backward()
            with torch.no_grad():
                ps = [q for q in m.parameters() if q.grad is not None]
                ts = [q.abs() + eta for q in ps]
                norm = torch.sqrt(sum(((t * q.grad) ** 2).sum() for t, q in zip(ts, ps)))
                eps = [rho * t * t * q.grad / (norm + 1e-12) for t, q in zip(ts, ps)]
                for q, e in zip(ps, eps):
                    q.add_(e)
            opt.zero_grad()
            F.cross_entropy(m(xb), yb).backward()
            with torch.no_grad():
                for q, e in zip(ps, eps):
                    q.sub_(e)
            opt.step()
    m.eval()


def main():
    torch.set_num_threads(2)
    (x, y), (xt, yt), (xc, yc), (xp, yp) = data()
    tune_images = bf.to_tensor(xt)
    for name in sys.argv[1:] or ["resnet18"]:
        torch.manual_seed(0)
        model = ARCHS[name](width=bf.SMALL[name])
        s = {"epochs": 2, "lr": 0.05, **bf.TRAIN.get(name, {})}
        bf.train(model, x, y, s["epochs"], 0, s["lr"])
        print(f"{name}: B clean {bf.accuracy(model, xc, yc):.3f} ASR {bf.accuracy(model, xp, yp):.3f}", flush=True)
        folded = fold(model)
        runs = [("frozen", copy.deepcopy(model), False), ("batch", copy.deepcopy(model), True),
                ("folded", folded, False), ("folded+batch", put_back(folded, tune_images), True)]
        for label, m, train_mode in runs:
            ft_sam(m, xt, yt, train_mode)
            if train_mode:
                recalibrate(m, tune_images)
            print(f"  FT-SAM, {label:13s} clean {bf.accuracy(m, xc, yc):.3f} ASR {bf.accuracy(m, xp, yp):.3f}", flush=True)


if __name__ == "__main__":
    main()
