"""Builds the tiny PyTorch exports the ONNX import tests read (run with Debian's /usr/bin/python3 + torch 1.13).

tiny_mobile: a MobileNet-style net with BatchNorm between a ReLU and a conv (so the exporter cannot fold it into
a conv and keeps a BatchNormalization node), a depthwise conv, a grouped conv, a residual add, and two convs whose zero biases the
exporter shares through an Identity node. Untrained weights with non-trivial BatchNorm statistics.
Writes tiny_mobile_opset{11,17}.onnx and tiny_mobile.json (input, PyTorch logits, trainable parameter count).
"""
import json, os, sys
import torch
import torch.nn as nn

torch.manual_seed(0)
here = os.path.dirname(os.path.abspath(__file__))


class TinyMobile(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8)
        self.bn2 = nn.BatchNorm2d(8)
        self.gc = nn.Conv2d(8, 16, 3, padding=1, groups=2)
        self.pw1 = nn.Conv2d(16, 16, 1)
        self.pw2 = nn.Conv2d(16, 16, 1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.relu(self.dw(self.bn1(x)))
        x = self.gc(self.bn2(x))
        x = x + self.pw2(torch.relu(self.pw1(x)))
        return self.fc(torch.relu(x).mean((2, 3)))


m = TinyMobile()
for c in (m.pw1, m.pw2):
    nn.init.zeros_(c.bias)  # equal initializers: the exporter shares them through Identity
for bn in (m.bn1, m.bn2):
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-0.2, 0.2)
m.eval()
x = torch.rand(2, 3, 12, 12)
for opset in (11, 17):
    torch.onnx.export(m, x, os.path.join(here, f"tiny_mobile_opset{opset}.onnx"), opset_version=opset,
                      input_names=["image"], output_names=["scores"],
                      dynamic_axes={"image": {0: "batch"}, "scores": {0: "batch"}})
with torch.no_grad():
    y = m(x)
json.dump({
    "input_shape": list(x.shape),
    "input": [round(v, 8) for v in x.flatten().tolist()],
    "logits": y.flatten().tolist(),
    "trainable_params": sum(p.numel() for p in m.parameters()),
}, open(os.path.join(here, "tiny_mobile.json"), "w"))
print("ok", sys.argv[0])
