"""VGG for ImageNet (Simonyan & Zisserman, ICLR 2015) in torchvision's architecture
and parameter names: 3x3 convolutions with bias (each followed by BatchNorm in the
``_bn`` variants), five max-pools, a 7x7 adaptive average pool and the 4096-4096
fully connected head with dropout; built from widths so a pruned one rebuilds from
JSON.

The head's three linear layers are held as convolutions (7x7, 1x1, 1x1) on the pooled
7x7 map: the same function and FLOPs, and torchvision's weights map onto them by a
reshape, but the first one's weight keeps an input-channel axis, so pruning the last
convolution's channels slices it like any consumer. ``head: gap`` replaces the head by
global average pooling and one linear layer (ThiNet's VGG-GAP / VGG-Tiny, authors'
imagenet/thinet/models/thinetvgg.py, which also drops the last max-pool: leave "M" off
the end of ``widths``)."""
from typing import Any, Dict, List

from torch import nn

from prunebench.errors import PrunebenchError
from prunebench.models import depgraph
from prunebench.models.groups import ChannelGroup
from prunebench.models.vgg import layout_with_widths

WIDTHS = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}
HEADS = ("fc", "gap")
HIDDEN = 4096  # units of the two hidden fully connected layers
POOL = 7  # the adaptive average pool's output side before the fc head


def spec_for(depth: int, width: float, in_channels: int, num_classes: int, batch_norm: bool = True,
             head: str = "fc") -> Dict[str, Any]:
    if depth not in WIDTHS:
        raise PrunebenchError(f"ImageNet VGG depth must be one of {sorted(WIDTHS)}, got {depth}")
    widths = [w if w == "M" else max(1, round(w * width)) for w in WIDTHS[depth]]
    return {"arch": "imagenet_vgg", "widths": widths, "batch_norm": batch_norm, "head": head,
            "hidden": max(1, round(HIDDEN * width)) if head == "fc" else 0,
            "in_channels": in_channels, "num_classes": num_classes}


def spec_from_config(cfg, in_channels: int, num_classes: int) -> Dict[str, Any]:
    return spec_for(cfg.depth, cfg.width, in_channels, num_classes, cfg.batch_norm, cfg.head)


class ImageNetVGG(nn.Module):
    def __init__(self, widths: List[Any], batch_norm: bool, head: str, hidden: int, in_channels: int,
                 num_classes: int):
        super().__init__()
        if head not in HEADS:
            raise PrunebenchError(f"model.head must be one of {', '.join(HEADS)}, got {head!r}")
        self.spec = {"arch": "imagenet_vgg", "widths": list(widths), "batch_norm": batch_norm, "head": head,
                     "hidden": hidden, "in_channels": in_channels, "num_classes": num_classes}
        layers: List[nn.Module] = []
        c = in_channels
        for w in widths:
            if w == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            layers.append(nn.Conv2d(c, w, 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(w))
            layers.append(nn.ReLU(inplace=True))
            c = w
        self.features = nn.Sequential(*layers)
        if head == "fc":
            self.avgpool = nn.AdaptiveAvgPool2d(POOL)
            self.classifier = nn.Sequential(
                nn.Conv2d(c, hidden, POOL), nn.ReLU(inplace=True), nn.Dropout(),
                nn.Conv2d(hidden, hidden, 1), nn.ReLU(inplace=True), nn.Dropout(),
                nn.Conv2d(hidden, num_classes, 1))
        else:
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Linear(c, num_classes)
        for m in self.modules():  # as torchvision's VGG (the head's convolutions as its linear layers)
            if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x))).flatten(1)

    def channel_groups(self) -> List[ChannelGroup]:
        convs = [i for i, m in enumerate(self.features) if isinstance(m, nn.Conv2d)]
        groups = []
        for k, i in enumerate(convs):
            consumer = f"features.{convs[k + 1]}" if k + 1 < len(convs) else \
                ("classifier.0" if self.spec["head"] == "fc" else "classifier")
            bn = f"features.{i + 1}" if self.spec["batch_norm"] else ""
            groups.append(ChannelGroup(f"conv{k + 1}", f"features.{i}", bn, (consumer,)))
        return groups

    def spec_with_widths(self, widths: Dict[str, int]) -> Dict[str, Any]:
        return {**self.spec, "widths": layout_with_widths(self.spec["widths"], widths)}

    def width_counter(self, input_shape, measure: str = "flops"):
        """widths -> FLOPs or parameters from one traced pass (the uniform search; a removed block counts 0)."""
        return depgraph.group_counter(self, input_shape, measure)

    def torchvision_name(self) -> str:
        depth = sum(1 for w in self.spec["widths"] if w != "M") + 3
        return f"vgg{depth}" + ("_bn" if self.spec["batch_norm"] else "")

    def load_torchvision_state_dict(self, state: Dict) -> None:
        """Load a torchvision VGG's state dict: its linear head reshaped onto the convolutions."""
        if self.spec["head"] != "fc":
            raise PrunebenchError("torchvision's VGG weights need model.head=fc")
        own = self.state_dict()
        self.load_state_dict({k: v.reshape(own[k].shape) if k in own else v for k, v in state.items()})

