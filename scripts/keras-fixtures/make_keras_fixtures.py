#!/usr/bin/python3
"""Small Keras-layout HDF5 models for the loader tests, written by hand with h5py (Keras is not needed), and
their expected outputs computed independently with PyTorch.

- same_upsample_crop.h5: 'same' padding (Conv2D with stride, MaxPooling2D, AveragePooling2D on odd sizes),
  UpSampling2D and Cropping2D, as in an autoencoder-style detector.
- nested_g.h5: a G-style model holding a nested Functional model B and a nested Sequential model B2 whose
  inner layers share names, joined by Add.

- lzf_data.h5 (second argument's folder): CSAW-layout data compressed with h5py's LZF filter.

Run: /usr/bin/python3 scripts/keras-fixtures/make_keras_fixtures.py fixtures/keras fixtures/hdf5
"""
import json
import os
import sys

import h5py
import numpy as np
import torch
import torch.nn.functional as F

OUT = sys.argv[1] if len(sys.argv) > 1 else "fixtures/keras"
rng = np.random.RandomState(12)


def w(*shape):
    return (rng.standard_normal(shape) * 0.5).astype("float32")


def layer(cls, name, config, inbound):
    return {"class_name": cls, "name": name, "config": dict(name=name, **config),
            "inbound_nodes": [[[n, 0, 0, {}] for n in inbound]] if inbound else []}


def conv_cfg(filters, k, strides=1, padding="valid", activation="linear"):
    return {"trainable": True, "dtype": "float32", "filters": filters, "kernel_size": [k, k], "strides": [strides, strides],
            "padding": padding, "data_format": "channels_last", "dilation_rate": [1, 1], "groups": 1,
            "activation": activation, "use_bias": True}


def write_model(path, config, weights):
    """weights: {top-level group: [(weight name as Keras lists it, array)]}"""
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(config)
        f.attrs["keras_version"] = "2.4.0"
        f.attrs["backend"] = "tensorflow"
        mw = f.create_group("model_weights")
        names = [l["name"] for l in config["config"]["layers"]]
        mw.attrs["layer_names"] = np.array([n.encode() for n in names])
        mw.attrs["keras_version"] = "2.4.0"
        mw.attrs["backend"] = "tensorflow"
        for n in names:
            g = mw.create_group(n)
            ws = weights.get(n, [])
            g.attrs["weight_names"] = np.array([wn.encode() for wn, _ in ws]) if ws else np.zeros(0)
            for wn, a in ws:
                g.create_dataset(wn, data=a)


def same_pad(x, k, s):
    """TF 'same' padding of an NCHW tensor: the extra row/column goes at the end."""
    def total(n, kk, ss):
        return max((-(-n // ss) - 1) * ss + kk - n, 0)
    th, tw = total(x.shape[2], k[0], s[0]), total(x.shape[3], k[1], s[1])
    return (tw // 2, tw - tw // 2, th // 2, th - th // 2)


def tconv(x, kernel, bias, stride=1, same=False):
    k = torch.from_numpy(kernel).permute(3, 2, 0, 1)  # [kh,kw,ci,co] -> [co,ci,kh,kw]
    if same:
        x = F.pad(x, same_pad(x, kernel.shape[:2], (stride, stride)))
    return F.conv2d(x, k, torch.from_numpy(bias), stride=stride)


def keras_flatten(x):
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)


def dense(x, kernel, bias):
    return x @ torch.from_numpy(kernel) + torch.from_numpy(bias)


def same_upsample_crop():
    H, W, C = 7, 9, 2
    k1, b1 = w(3, 3, C, 4), w(4)
    k2, b2 = w(2, 2, 4, 3), w(3)
    kd, bd = w(2 * 3 * 3, 4), w(4)
    layers = [
        layer("InputLayer", "input_1", {"batch_input_shape": [None, H, W, C], "dtype": "float32", "sparse": False, "ragged": False}, []),
        layer("Conv2D", "conv2d", conv_cfg(4, 3, strides=2, padding="same", activation="relu"), ["input_1"]),
        layer("MaxPooling2D", "max_pooling2d", {"pool_size": [2, 2], "strides": [2, 2], "padding": "same", "data_format": "channels_last"}, ["conv2d"]),
        layer("UpSampling2D", "up_sampling2d", {"size": [2, 3], "data_format": "channels_last", "interpolation": "nearest"}, ["max_pooling2d"]),
        layer("Cropping2D", "cropping2d", {"cropping": [[1, 0], [2, 1]], "data_format": "channels_last"}, ["up_sampling2d"]),
        layer("Conv2D", "conv2d_1", conv_cfg(3, 2, padding="same", activation="tanh"), ["cropping2d"]),
        layer("AveragePooling2D", "average_pooling2d", {"pool_size": [2, 2], "strides": [2, 2], "padding": "same", "data_format": "channels_last"}, ["conv2d_1"]),
        layer("Flatten", "flatten", {"data_format": "channels_last"}, ["average_pooling2d"]),
        layer("Dense", "dense", {"units": 4, "activation": "softmax", "use_bias": True}, ["flatten"]),
    ]
    config = {"class_name": "Functional", "config": {"name": "detector", "layers": layers,
              "input_layers": [["input_1", 0, 0]], "output_layers": [["dense", 0, 0]]}}
    weights = {"conv2d": [("conv2d/kernel:0", k1), ("conv2d/bias:0", b1)],
               "conv2d_1": [("conv2d_1/kernel:0", k2), ("conv2d_1/bias:0", b2)],
               "dense": [("dense/kernel:0", kd), ("dense/bias:0", bd)]}
    x = rng.uniform(0, 1, (3, H, W, C)).astype("float32")
    t = torch.from_numpy(x).permute(0, 3, 1, 2)
    y = F.relu(tconv(t, k1, b1, stride=2, same=True))                          # 4x5
    y = F.max_pool2d(F.pad(y, same_pad(y, (2, 2), (2, 2)), value=-float("inf")), 2, 2)  # 2x3
    y = y.repeat_interleave(2, dim=2).repeat_interleave(3, dim=3)              # 4x9
    y = y[:, :, 1:, 2:-1]                                                       # 3x6
    y = torch.tanh(tconv(y, k2, b2, same=True))                                 # 3x6
    # 'same' average pooling divides by the number of real (unpadded) values in each window.
    pad = same_pad(y, (2, 2), (2, 2))
    s = F.avg_pool2d(F.pad(y, pad), 2, 2, divisor_override=1)
    n = F.avg_pool2d(F.pad(torch.ones_like(y), pad), 2, 2, divisor_override=1)
    y = s / n                                                                    # 2x3
    logits = dense(keras_flatten(y), kd, bd)
    return config, weights, x, logits


def nested_g():
    H, W, C = 6, 6, 1
    kb, bb, kdb, bdb = w(3, 3, C, 2), w(2), w(4 * 4 * 2, 3), w(3)
    kc, bc, kdc, bdc = w(3, 3, C, 2), w(2), w(4 * 4 * 2, 3), w(3)
    inner = lambda: [  # noqa: E731 - the same layer names in both nested models
        layer("Conv2D", "conv", conv_cfg(2, 3, activation="relu"), None),
        layer("Flatten", "flat", {"data_format": "channels_last"}, None),
        layer("Dense", "fc", {"units": 3, "activation": "linear", "use_bias": True}, None),
    ]
    b_layers = [layer("InputLayer", "b_in", {"batch_input_shape": [None, H, W, C], "dtype": "float32"}, [])]
    prev = "b_in"
    for l in inner():
        l["inbound_nodes"] = [[[prev, 0, 0, {}]]]
        prev = l["name"]
        b_layers.append(l)
    b = {"class_name": "Functional", "name": "B",
         "config": {"name": "B", "layers": b_layers, "input_layers": [["b_in", 0, 0]], "output_layers": [["fc", 0, 0]]},
         "inbound_nodes": [[["input", 0, 0, {}]]]}
    seq_layers = [{"class_name": l["class_name"], "config": l["config"]} for l in inner()]
    seq_layers[0]["config"]["batch_input_shape"] = [None, H, W, C]
    b2 = {"class_name": "Sequential", "name": "B2", "config": {"name": "B2", "layers": seq_layers},
          "inbound_nodes": [[["input", 0, 0, {}]]]}
    layers = [
        layer("InputLayer", "input", {"batch_input_shape": [None, H, W, C], "dtype": "float32"}, []),
        b, b2,
        layer("Add", "add", {}, ["B", "B2"]),
        layer("Activation", "act", {"activation": "softmax"}, ["add"]),
    ]
    config = {"class_name": "Functional", "config": {"name": "g", "layers": layers,
              "input_layers": [["input", 0, 0]], "output_layers": [["act", 0, 0]]}}
    weights = {"B": [("conv/kernel:0", kb), ("conv/bias:0", bb), ("fc/kernel:0", kdb), ("fc/bias:0", bdb)],
               "B2": [("conv/kernel:0", kc), ("conv/bias:0", bc), ("fc/kernel:0", kdc), ("fc/bias:0", bdc)]}
    x = rng.uniform(0, 1, (3, H, W, C)).astype("float32")
    t = torch.from_numpy(x).permute(0, 3, 1, 2)
    yb = dense(keras_flatten(F.relu(tconv(t, kb, bb))), kdb, bdb)
    yc = dense(keras_flatten(F.relu(tconv(t, kc, bc))), kdc, bdc)
    return config, weights, x, yb + yc


def main():
    os.makedirs(OUT, exist_ok=True)
    expected = {}
    for name, make in [("same_upsample_crop", same_upsample_crop), ("nested_g", nested_g)]:
        config, weights, x, logits = make()
        write_model(os.path.join(OUT, name + ".h5"), config, weights)
        expected[name + ".h5"] = {
            "input_nhwc": list(x.shape), "input": [float(v) for v in x.reshape(-1)],
            "logits": [[float(v) for v in row] for row in logits.detach().numpy()],
        }
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()


def lzf_data(out_dir):
    """A CSAW-layout data file whose `data` is LZF-compressed (h5py's own filter, absent from other HDF5 builds)."""
    with h5py.File(os.path.join(out_dir, "lzf_data.h5"), "w") as f:
        f.create_dataset("data", data=np.zeros((8, 1, 28, 28), dtype="uint8"), compression="lzf", chunks=(4, 1, 28, 28))
        f.create_dataset("label", data=np.arange(8, dtype="float64") % 10)


if __name__ == "__main__" and len(sys.argv) > 2:
    lzf_data(sys.argv[2])
