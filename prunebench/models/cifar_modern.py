"""CIFAR-size versions of modern ImageNet networks (``model=resnet18_cifar``, ``resnet50_cifar``,
``mobilenet_v2_cifar``), pruned through the dependency graph (:class:`GraphModel`):

- ResNet-18/50 for CIFAR: He et al.'s ImageNet ResNets (CVPR 2016, Table 1: basic blocks
  [2, 2, 2, 2] / bottlenecks [3, 4, 6, 3] at widths 64-128-256-512, bottleneck expansion 4)
  with the stem every CIFAR reproduction uses: one 3x3 convolution at stride 1, no max-pool
  (so a 32x32 image reaches the last stage at 4x4); projection shortcuts (1x1 conv + BN)
  where the shape changes.
- MobileNetV2 for CIFAR: Sandler et al.'s network (CVPR 2018, Table 2: inverted residuals
  t, c, n, s = 1-16-1-1, 6-24-2-2, 6-32-3-2, 6-64-4-2, 6-96-3-1, 6-160-3-2, 6-320-1-1, a
  1280-channel last convolution) with the usual CIFAR adaptation: the stem at stride 1 and the
  second stage (24 channels) at stride 1, so the network downsamples 8x in all.

``model.width`` multiplies every width (MobileNetV2: rounded to a multiple of 8 as the paper's
width multiplier; its last convolution keeps 1280 below width 1). Global average pooling makes
any input size work (the digits' 16x16 included). Depthwise convolutions and the residual sums
join their channels in one group through the graph."""
from typing import Any, Dict, List, Optional

from torch import nn

from prunebench.bounds import positive
from prunebench.errors import PrunebenchError
from prunebench.models.graph_model import GraphModel

TRACE_SIZE = 32  # pixels: the side of the image the dependency graph is traced on (no effect on results)


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, relu: Optional[nn.Module] = None):
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, *([relu] if relu is not None else []))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = _conv_bn(cin, planes, 3, stride, relu=nn.ReLU(inplace=True))
        self.conv2 = _conv_bn(planes, planes, 3)
        self.shortcut = _conv_bn(cin, planes, 1, stride) if stride != 1 or cin != planes else nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = _conv_bn(cin, planes, 1, relu=nn.ReLU(inplace=True))
        self.conv2 = _conv_bn(planes, planes, 3, stride, relu=nn.ReLU(inplace=True))
        self.conv3 = _conv_bn(planes, out, 1)
        self.shortcut = _conv_bn(cin, out, 1, stride) if stride != 1 or cin != out else nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.conv3(self.conv2(self.conv1(x))) + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, block, blocks: List[int], width: float, in_channels: int, num_classes: int):
        super().__init__()
        widths = [max(1, round(w * width)) for w in (64, 128, 256, 512)]
        self.stem = _conv_bn(in_channels, widths[0], 3, relu=nn.ReLU(inplace=True))
        cin, stages = widths[0], []
        for i, (planes, n) in enumerate(zip(widths, blocks)):
            layer = []
            for j in range(n):
                layer.append(block(cin, planes, 2 if i > 0 and j == 0 else 1))
                cin = planes * block.expansion
            stages.append(nn.Sequential(*layer))
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        return self.fc(self.pool(self.layers(self.stem(x))).flatten(1))


def _divisible(v: float, divisor: int = 8) -> int:
    """A width rounded to a multiple of ``divisor``, never below 90% of ``v`` (MobileNetV2's rule)."""
    out = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * v else out


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers = [] if expand == 1 else [_conv_bn(cin, hidden, 1, relu=nn.ReLU6(inplace=True))]
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden, relu=nn.ReLU6(inplace=True)),
                   _conv_bn(hidden, cout, 1)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.block(x) if self.residual else self.block(x)


# (expansion t, channels c, blocks n, stride s) of Sandler et al. Table 2, the second stage at stride 1 for CIFAR
MOBILENET_V2_CIFAR = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                      (6, 320, 1, 1)]


class CifarMobileNetV2(nn.Module):
    def __init__(self, width: float, in_channels: int, num_classes: int):
        super().__init__()
        cin = _divisible(32 * width)
        last = _divisible(1280 * max(1.0, width))
        blocks = [_conv_bn(in_channels, cin, 3, 1, relu=nn.ReLU6(inplace=True))]
        for t, c, n, s in MOBILENET_V2_CIFAR:
            cout = _divisible(c * width)
            for i in range(n):
                blocks.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        blocks.append(_conv_bn(cin, last, 1, relu=nn.ReLU6(inplace=True)))
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))


NETS = {
    "resnet18": lambda width, cin, classes: CifarResNet(BasicBlock, [2, 2, 2, 2], width, cin, classes),
    "resnet50": lambda width, cin, classes: CifarResNet(Bottleneck, [3, 4, 6, 3], width, cin, classes),
    "mobilenet_v2": lambda width, cin, classes: CifarMobileNetV2(width, cin, classes),
}


def spec_from_config(cfg, in_channels: int, num_classes: int) -> Dict[str, Any]:
    if cfg.net not in NETS:
        raise PrunebenchError(f"model.net={cfg.net!r} is no CIFAR network; choose one of {', '.join(NETS)}")
    positive("model.width", cfg.width)
    return {"arch": "cifar_modern", "net": cfg.net, "width": float(cfg.width), "in_channels": in_channels,
            "num_classes": num_classes, "keep": {}}


class CifarModernModel(GraphModel):
    def __init__(self, net: str, width: float, in_channels: int, num_classes: int,
                 keep: Optional[Dict[str, List[int]]] = None):
        if net not in NETS:
            raise PrunebenchError(f"unknown CIFAR network {net!r}; known: {', '.join(NETS)}")
        base = {"arch": "cifar_modern", "net": net, "width": width, "in_channels": in_channels,
                "num_classes": num_classes}
        super().__init__(NETS[net](width, in_channels, num_classes), base, keep, TRACE_SIZE, in_channels)
