# The four PyTorch architectures of the fixture set, in the forms backdoor research uses (BackdoorBench's
# resnet/preact_resnet/vgg/mobilenet_v2 on 32x32 inputs), with the width as a parameter so the in-repo
# fixtures can stay small while the benchmark builds the full-width ResNet18/PreAct18.
import torch
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def add_resnet_stages(net, block, w, num_classes):
    """The four 2-block stages (widths w..8w, strides 1,2,2,2), global pooling and the linear head shared by
    the ResNet18 and PreActResNet18 families; modules are created in the same order as a hand-written __init__."""
    in_planes = w
    for i, (planes, stride) in enumerate(((w, 1), (2 * w, 2), (4 * w, 2), (8 * w, 2)), 1):
        blocks = []
        for s in (stride, 1):
            blocks.append(block(in_planes, planes, s))
            in_planes = planes
        setattr(net, f"layer{i}", nn.Sequential(*blocks))
    net.avgpool = nn.AdaptiveAvgPool2d((1, 1))
    net.linear = nn.Linear(8 * w, num_classes)


class ResNet18(nn.Module):
    def __init__(self, width=64, num_classes=10):
        super().__init__()
        w = width
        self.conv1 = nn.Conv2d(3, w, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        add_resnet_stages(self, BasicBlock, w, num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = self.avgpool(out)
        return self.linear(torch.flatten(out, 1))


class PreActBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False))

    def forward(self, x):
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if hasattr(self, "shortcut") else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet18(nn.Module):
    """BackdoorBench's PreActResNet18: no BatchNorm/ReLU after the last residual add."""

    def __init__(self, width=64, num_classes=10):
        super().__init__()
        w = width
        self.conv1 = nn.Conv2d(3, w, 3, 1, 1, bias=False)
        add_resnet_stages(self, PreActBlock, w, num_classes)

    def forward(self, x):
        out = self.conv1(x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = self.avgpool(out)
        return self.linear(torch.flatten(out, 1))


class VGGBN(nn.Module):
    """VGG with BatchNorm after every conv (VGG11's layout, widths scaled)."""

    def __init__(self, width=64, num_classes=10):
        super().__init__()
        w = width
        cfg = [w, "M", 2 * w, "M", 4 * w, 4 * w, "M", 8 * w, 8 * w, "M", 8 * w, 8 * w, "M"]
        layers, c = [], 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                c = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(8 * w, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


class InvertedResidual(nn.Module):
    def __init__(self, inp, oup, stride, expand):
        super().__init__()
        hidden = inp * expand
        self.use_res = stride == 1 and inp == oup
        layers = []
        if expand != 1:
            layers += [nn.Conv2d(inp, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),  # depthwise
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, oup, 1, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision's MobileNetV2 layout for 32x32 inputs (stride-1 stem), widths scaled by `width`/32."""

    def __init__(self, width=32, num_classes=10):
        super().__init__()
        s = width / 32
        ch = lambda c: max(4, int(round(c * s)))  # noqa: E731
        # torchvision's (t, c, n, s) with the repeats n cut to at most 2: the fixture is for depthwise convs and
        # inverted residuals, not for depth, and must train in minutes on a shared CPU.
        setting = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 2, 2), (6, 64, 2, 2), (6, 96, 1, 1), (6, 160, 2, 2), (6, 320, 1, 1)]
        c_in = ch(32)
        layers = [nn.Conv2d(3, c_in, 3, 1, 1, bias=False), nn.BatchNorm2d(c_in), nn.ReLU6(inplace=True)]
        for t, c, n, stride in setting:
            for i in range(n):
                layers.append(InvertedResidual(c_in, ch(c), stride if i == 0 else 1, t))
                c_in = ch(c)
        last = ch(1280)
        layers += [nn.Conv2d(c_in, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


ARCHS = {"resnet18": ResNet18, "preact_resnet18": PreActResNet18, "vgg_bn": VGGBN, "mobilenet_v2": MobileNetV2}
