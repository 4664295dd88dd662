#!/usr/bin/env python3
"""Smallest universal trigger per label of a zoo model, in families Neural Cleanse does not scan.

An experiment (docs/neural-cleanse-measurements.md, "Triggers for SIG"), not part of the tool: for every
label t of each named zoo model, the smallest trigger that sends at least --bar of 300 clean valid.h5 images to
t, searched over a geometric grid of sizes (150 Adam steps of batch 64 per size), in one family:
  l2    x' = clip(x + d), ||d||_2 <= eps (projected)        -- a universal additive perturbation
  linf  x' = clip(x + d), |d|_inf <= eps (clipped)
  blend x' = (1 - a) x + a P, P free in [0, 1]                -- the blend family, any success bar
Prints the sizes and each label's MAD anomaly index on the log scale (positive = smaller than the median).
Run with Debian's python3-torch, python3-onnx and python3-h5py (/usr/bin/python3):
  /usr/bin/python3 scripts/experiments/trigger-sizes.py --family l2 --zoo zoo sig clean_a wanet
"""
import argparse
import h5py
import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper


def load(path):
    """The zoo CNN's ONNX graph as a torch function (the ops the zoo uses only)."""
    m = onnx.load(path)
    w = {i.name: torch.tensor(numpy_helper.to_array(i)) for i in m.graph.initializer}

    def f(x):
        v = {"input": x}
        for n in m.graph.node:
            a = [v[i] if i in v else w[i] for i in n.input]
            at = {q.name: onnx.helper.get_attribute_value(q) for q in n.attribute}
            op = n.op_type
            if op == "Conv": r = F.conv2d(a[0], a[1], a[2])
            elif op == "Relu": r = F.relu(a[0])
            elif op == "MaxPool": r = F.max_pool2d(a[0], at["kernel_shape"])
            elif op == "Transpose": r = a[0].permute(*at["perm"])
            elif op == "Flatten": r = a[0].reshape(a[0].shape[0], -1)
            elif op == "MatMul": r = a[0] @ a[1]
            elif op == "Add": r = a[0] + a[1]
            elif op == "Identity": r = a[0]
            else: raise SystemExit(f"{path}: op {op} is not handled by this experiment")
            v[n.output[0]] = r
        return v["logits"]
    return f


def smallest(f, x, t, family, bar, rng):
    grid = {"l2": np.geomspace(0.5, 12, 14), "linf": np.geomspace(0.02, 0.6, 14), "blend": np.geomspace(0.02, 0.6, 20)}[family]
    target = torch.full((64,), t)
    for eps in grid:
        p = torch.zeros(1, *x.shape[1:], requires_grad=True)
        opt = torch.optim.Adam([p], lr={"l2": eps / 20, "linf": eps / 10, "blend": 0.1}[family])
        stamp = (lambda xs: (1 - eps) * xs + eps * torch.sigmoid(p)) if family == "blend" else (lambda xs: (xs + p).clamp(0, 1))
        for _ in range(150):
            idx = torch.from_numpy(rng.integers(0, len(x), 64))
            loss = F.cross_entropy(f(stamp(x[idx])), target)
            opt.zero_grad(); loss.backward(); opt.step()
            with torch.no_grad():
                if family == "l2": p.mul_(min(1.0, eps / (p.norm().item() + 1e-12)))
                elif family == "linf": p.clamp_(-eps, eps)
        with torch.no_grad():
            if (f(stamp(x)).argmax(1) == t).float().mean().item() >= bar: return eps
    return float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", choices=["l2", "linf", "blend"], required=True)
    ap.add_argument("--bar", type=float, default=0.9, help="attack success the trigger must reach (default 0.9)")
    ap.add_argument("--zoo", default="zoo")
    ap.add_argument("models", nargs="+")
    a = ap.parse_args()
    torch.manual_seed(0); torch.set_num_threads(2)
    for name in a.models:
        f = load(f"{a.zoo}/{name}/model.onnx")
        h = h5py.File(f"{a.zoo}/{name}/valid.h5", "r")
        x = torch.tensor(h["data"][:300].astype(np.float32) / 255)
        rng = np.random.default_rng(0)
        sizes = np.array([smallest(f, x, t, a.family, a.bar, rng) for t in range(10)])
        ln = np.log(sizes); med = np.nanmedian(ln); mad = 1.4826 * np.nanmedian(np.abs(ln - med))
        print(name, a.family, a.bar, " ".join(f"{s:.3f}" for s in sizes), "| index", " ".join(f"{i:4.1f}" for i in (med - ln) / mad), flush=True)


if __name__ == "__main__":
    main()
