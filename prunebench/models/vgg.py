"""VGG with BatchNorm for CIFAR (Simonyan & Zisserman, 2015), in the form used by
network slimming and "Rethinking the Value of Network Pruning": 3x3 conv-BN-ReLU
stacks, four max-pools, global average pooling and one linear classifier."""
from typing import Any, Dict, List

from torch import nn

from prunebench.models.groups import ChannelGroup

WIDTHS = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512],
}


def spec_for(depth: int, width: float, in_channels: int, num_classes: int) -> Dict[str, Any]:
    if depth not in WIDTHS:
        raise ValueError(f"VGG depth {depth} is not one of {sorted(WIDTHS)}")
    widths = [w if w == "M" else max(1, round(w * width)) for w in WIDTHS[depth]]
    return {"arch": "vgg", "widths": widths, "in_channels": in_channels, "num_classes": num_classes}


class VGG(nn.Module):
    def __init__(self, widths: List[Any], in_channels: int, num_classes: int):
        super().__init__()
        self.spec = {"arch": "vgg", "widths": list(widths), "in_channels": in_channels, "num_classes": num_classes}
        layers: List[nn.Module] = []
        c = in_channels
        for w in widths:
            if w == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
                c = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))

    def channel_groups(self) -> List[ChannelGroup]:
        convs = [i for i, m in enumerate(self.features) if isinstance(m, nn.Conv2d)]
        groups = []
        for k, i in enumerate(convs):
            consumer = f"features.{convs[k + 1]}" if k + 1 < len(convs) else "classifier"
            groups.append(ChannelGroup(f"conv{k + 1}", f"features.{i}", f"features.{i + 1}", (consumer,)))
        return groups

    def spec_with_widths(self, widths: Dict[str, int]) -> Dict[str, Any]:
        new, k = [], 0
        for w in self.spec["widths"]:
            if w == "M":
                new.append(w)
            else:
                k += 1
                new.append(int(widths.get(f"conv{k}", w)))
        return {**self.spec, "widths": new}
