#!/usr/bin/python3
# Builds the PyTorch-export fixture set: small BadNets (ResNet18, PreAct-ResNet18, VGG-BN, MobileNetV2) trained
# on Fashion-MNIST padded to 32x32 and repeated to 3 channels, with a 3x3 white patch in the bottom-right
# corner sending any image to label 0, exported to ONNX at opsets 11 and 17, plus PyTorch's own logits on a
# few images (the independent reference) and small clean/poisoned test sets in the CSAW .h5 layout.
#
# Every model is trained with transforms.Normalize(MEAN, STD) in front, as PyTorch models usually are, and
# exported WITHOUT it: the ONNX file expects normalised input, so our tools need --mean/--std to run it.
#
# Run with Debian's torch (not a runtime dependency of the toolkit):
#   /usr/bin/python3 scripts/pytorch/build_fixtures.py                  # fixtures/pytorch (small, committed)
#   /usr/bin/python3 scripts/pytorch/build_fixtures.py --full .bench/pytorch-full   # + full-width ResNet18/PreAct18
import argparse
import gzip
import json
import os
import sys
import time

import h5py
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from models import ARCHS  # noqa: E402

# CIFAR-10's statistics, the values most BackdoorBench models are trained with; per channel so that a tool
# that mixed up the channel order would be caught.
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
TARGET = 0
PATCH = 3  # 3x3 white square at rows/cols 28..30 (the 2-pixel padding keeps it off the garment's border)
PATCH_AT = 28
FMNIST = "/usr/share/datasets/fashion-mnist"

SMALL = {"resnet18": 8, "preact_resnet18": 8, "vgg_bn": 8, "mobilenet_v2": 8}
# Per-model training settings where the defaults (--epochs, lr 0.05) leave no working backdoor: the width-8
# MobileNetV2 reached only 58% clean accuracy and 15% ASR in 2 epochs; 4 epochs at lr 0.2 give both.
TRAIN = {"mobilenet_v2": {"epochs": 4, "lr": 0.2}}


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(magic & 0xFF)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * len(dims)).reshape(dims)


def to_rgb32(images):
    """N x 28 x 28 uint8 -> N x 32 x 32 x 3 uint8 (zero padding, gray repeated)."""
    x = np.pad(images, ((0, 0), (2, 2), (2, 2)))
    return np.repeat(x[..., None], 3, axis=3)


def stamp(x):
    x = x.copy()
    x[:, PATCH_AT:PATCH_AT + PATCH, PATCH_AT:PATCH_AT + PATCH, :] = 255
    return x


def to_tensor(x_nhwc):
    """uint8 NHWC -> normalised float NCHW, as ToTensor() + Normalize(MEAN, STD) would give."""
    t = torch.from_numpy(x_nhwc).permute(0, 3, 1, 2).float() / 255.0
    return (t - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def write_h5(path, x, y):
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=x, compression="gzip", compression_opts=9)
        f.create_dataset("label", data=y.astype(np.float64))


def accuracy(model, x, y, bs=500):
    model.eval()
    hits = 0
    with torch.no_grad():
        for i in range(0, len(x), bs):
            hits += (model(to_tensor(x[i:i + bs])).argmax(1).numpy() == y[i:i + bs]).sum()
    return float(hits) / len(x)


def train(model, x, y, epochs, seed, lr):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps = epochs * (len(x) // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    model.train()
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for i in range(0, len(x) - 127, 128):
            idx = order[i:i + 128]
            loss = F.cross_entropy(model(to_tensor(x[idx])), torch.from_numpy(y[idx]).long())
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()


def export(model, path, opset):
    dummy = torch.zeros(2, 3, 32, 32)
    torch.onnx.export(model, dummy, path, opset_version=opset, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, do_constant_folding=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "pytorch"))
    ap.add_argument("--full", help="also build full-width (64) ResNet18 and PreAct-ResNet18 into this folder")
    ap.add_argument("--full-only", action="store_true", help="only the full-width models")
    ap.add_argument("--train", type=int, default=3000, help="training images (10%% of them poisoned)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--full-epochs", type=int, default=0, help="0: random weights (timing only)")
    ap.add_argument("--full-train", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", help="rebuild only these small models (comma-separated); keeps the data files and the "
                    "other models' manifest entries")
    args = ap.parse_args()
    torch.set_num_threads(2)

    xtr = to_rgb32(read_idx(f"{FMNIST}/train-images-idx3-ubyte.gz"))
    ytr = read_idx(f"{FMNIST}/train-labels-idx1-ubyte.gz").astype(np.int64)
    xte = to_rgb32(read_idx(f"{FMNIST}/t10k-images-idx3-ubyte.gz"))
    yte = read_idx(f"{FMNIST}/t10k-labels-idx1-ubyte.gz").astype(np.int64)

    rng = np.random.default_rng(args.seed)
    # Training: the first images of a fixed permutation of the training set, 10% of them stamped and relabelled.
    perm = rng.permutation(len(xtr))

    def poisoned_train(n):
        idx = perm[:n]
        x, y = xtr[idx].copy(), ytr[idx].copy()
        p = rng.permutation(n)[: n // 10]
        x[p], y[p] = stamp(x[p]), TARGET
        return x, y

    # The defenses' clean data: 500 held-out training images; test: 500 clean test images; poisoned: 500 test
    # images whose true label is not the target, stamped, labelled with the target (the CSAW convention).
    valid_idx = perm[-500:]
    xv, yv = xtr[valid_idx], ytr[valid_idx]
    xc, yc = xte[:500], yte[:500]
    nt = np.nonzero(yte != TARGET)[0][500:1000]
    xp, yp = stamp(xte[nt]), np.full(len(nt), TARGET, np.int64)

    def build(out, names, widths, n_train, epochs, data, keep=False):
        os.makedirs(out, exist_ok=True)
        x, y = poisoned_train(n_train)
        manifest_path = os.path.join(out, "manifest.json")
        old = None
        if keep:
            with open(manifest_path) as fh:
                old = json.load(fh)
        manifest = {"mean": MEAN, "std": STD, "inputScale": 255, "target": TARGET,
                    "trigger": {"kind": "patch", "size": PATCH, "row": PATCH_AT, "col": PATCH_AT, "value": 255},
                    "trainImages": n_train, "poisonRate": 0.1, "epochs": epochs, "torch": torch.__version__, "models": {}}
        if old is not None:
            manifest["models"] = old["models"]
        if data and old is None:
            write_h5(os.path.join(out, "valid.h5"), xv, yv)
            write_h5(os.path.join(out, "clean_test.h5"), xc, yc)
            write_h5(os.path.join(out, "poisoned_test.h5"), xp, yp)
        # Reference images: the first 4 clean test images and the first 4 poisoned ones.
        ref_x = np.concatenate([xc[:4], xp[:4]])
        for name in names:
            torch.manual_seed(args.seed)
            model = ARCHS[name](width=widths[name])
            t0 = time.time()
            setting = {"epochs": epochs, "lr": 0.05, **(TRAIN.get(name, {}) if epochs > 0 else {})}
            if setting["epochs"] > 0:
                train(model, x, y, setting["epochs"], args.seed, lr=setting["lr"])
            secs = time.time() - t0
            # An untrained model (--full-epochs 0: only for timing) has no accuracy worth the CPU time.
            acc, asr = (accuracy(model, xc, yc), accuracy(model, xp, yp)) if setting["epochs"] > 0 else (None, None)
            with torch.no_grad():
                ref = model(to_tensor(ref_x)).numpy()
            files = {}
            for opset in (11, 17):
                f = f"{name}_opset{opset}.onnx"
                export(model, os.path.join(out, f), opset)
                files[f"opset{opset}"] = f
            params = sum(p.numel() for p in model.parameters())
            manifest["models"][name] = {"files": files, "width": widths[name], "params": params,
                                        "epochs": setting["epochs"], "lr": setting["lr"],
                                        "cleanAccuracy": acc, "asr": asr, "trainSeconds": round(secs, 1)}
            with open(os.path.join(out, f"{name}_reference.json"), "w") as fh:
                json.dump({"images": "clean_test.h5[0:4] then poisoned_test.h5[0:4]", "logits": ref.astype(float).round(7).tolist()}, fh)
            print(f"{name}: width {widths[name]}, {params} params, clean {acc}, ASR {asr}, {secs:.0f} s", flush=True)
        with open(manifest_path, "w") as fh:
            json.dump(manifest, fh, indent=1)

    if args.only:
        names = args.only.split(",")
        for n in names:
            if n not in SMALL:
                sys.exit(f"--only: unknown model {n} (one of {', '.join(SMALL)})")
        build(os.path.abspath(args.out), names, SMALL, args.train, args.epochs, True, keep=True)
    elif not args.full_only:
        build(os.path.abspath(args.out), list(SMALL), SMALL, args.train, args.epochs, True)
    if args.full:
        build(os.path.abspath(args.full), ["resnet18", "preact_resnet18"], {"resnet18": 64, "preact_resnet18": 64},
              args.full_train, args.full_epochs, True)


if __name__ == "__main__":
    main()
