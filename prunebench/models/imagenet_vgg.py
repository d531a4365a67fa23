"""VGG for ImageNet (Simonyan & Zisserman, ICLR 2015) in torchvision's architecture
and parameter names: 3x3 convolutions with bias (each followed by BatchNorm in the
``_bn`` variants), five max-pools, a 7x7 adaptive average pool and the 4096-4096
fully connected head with dropout; built from widths so a pruned one rebuilds from
JSON. BatchNorm scales start at ``bn_init`` (torchvision: 1).

The head's three linear layers are held as convolutions (7x7, 1x1, 1x1) on the pooled
7x7 map: the same function and FLOPs, and torchvision's weights map onto them by a
reshape, but the first one's weight keeps an input-channel axis, so pruning the last
convolution's channels slices it like any consumer. ``head: fc_bn`` is the VGG-11 of
network slimming on ImageNet (authors' imagenet/network-slimming/vgg.py lines 20-28, 38-52):
each hidden layer followed by BatchNorm1d and ReLU, no dropout, every BatchNorm's scale
0.5 (``bn_init``); its hidden widths are channel groups ``fc1`` and ``fc2``, which
network slimming ranks with the convolutions' channels (prune.py lines 59-82), and
rebuild from ``hidden`` (one width a layer). ``head: gap`` replaces the head by
global average pooling and one linear layer (ThiNet's VGG-GAP / VGG-Tiny, authors'
imagenet/thinet/models/thinetvgg.py lines 21-31, which also drops the last max-pool:
leave "M" off the end of ``widths``).

``pruned_head: gap`` makes the pruned architecture such a network while the unpruned
one keeps the fc head, as ThiNet builds VGG-GAP: the convolutions are pruned (and
reconstructed) under the fc head, then the head gives way to global average pooling
and a new linear layer and the last max-pool goes. :meth:`ImageNetVGG.spec_with_widths`
is that final architecture, :meth:`ImageNetVGG.cut_spec_with_widths` the one surgery
cuts, and :meth:`ImageNetVGG.final_spec` the one a cut model takes after pruning
(:func:`prunebench.models.pruned_form`)."""
from typing import Any, Dict, List, Optional

import torch
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
HEADS = ("fc", "fc_bn", "gap")
PRUNED_HEADS = ("gap",)
HIDDEN = 4096  # units of the two hidden fully connected layers
POOL = 7  # the adaptive average pool's output side before the fc head


def spec_for(depth: int, width: float, in_channels: int, num_classes: int, batch_norm: bool = True,
             head: str = "fc", pruned_head: Optional[str] = None, bn_init: float = 1.0) -> Dict[str, Any]:
    if depth not in WIDTHS:
        raise PrunebenchError(f"ImageNet VGG depth must be one of {sorted(WIDTHS)}, got {depth}")
    if head not in HEADS:
        raise PrunebenchError(f"model.head must be one of {', '.join(HEADS)}, got {head!r}")
    if pruned_head is not None and (pruned_head not in PRUNED_HEADS or head != "fc"):
        raise PrunebenchError(f"model.pruned_head must be null or one of {', '.join(PRUNED_HEADS)}, with "
                              f"model.head=fc; got pruned_head={pruned_head!r}, head={head!r}")
    widths = [w if w == "M" else max(1, round(w * width)) for w in WIDTHS[depth]]
    hidden = max(1, round(HIDDEN * width))
    spec = {"arch": "imagenet_vgg", "widths": widths, "batch_norm": batch_norm, "head": head,
            "hidden": {"fc": hidden, "fc_bn": [hidden, hidden], "gap": 0}[head],
            "in_channels": in_channels, "num_classes": num_classes}
    if pruned_head is not None:
        spec["pruned_head"] = pruned_head
    if bn_init != 1.0:
        spec["bn_init"] = bn_init
    return spec


def spec_from_config(cfg, in_channels: int, num_classes: int) -> Dict[str, Any]:
    return spec_for(cfg.depth, cfg.width, in_channels, num_classes, cfg.batch_norm, cfg.head, cfg.pruned_head,
                    cfg.bn_init)


class UnitBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d over the units of a fully connected layer held as a convolution: its
    (N, C, 1, 1) output is normalised as the (N, C) output of the linear layer would be."""

    def forward(self, x):
        return super().forward(x.flatten(1)).view_as(x)


def gap_form(spec: Dict[str, Any]) -> Dict[str, Any]:
    """``spec`` with global average pooling and one linear layer for its head and without a last max-pool."""
    widths = list(spec["widths"])
    while widths and widths[-1] == "M":
        widths.pop()
    return {**{k: v for k, v in spec.items() if k != "pruned_head"}, "widths": widths, "head": "gap", "hidden": 0}


class ImageNetVGG(nn.Module):
    def __init__(self, widths: List[Any], batch_norm: bool, head: str, hidden, in_channels: int,
                 num_classes: int, pruned_head: Optional[str] = None, bn_init: float = 1.0):
        super().__init__()
        if head not in HEADS:
            raise PrunebenchError(f"model.head must be one of {', '.join(HEADS)}, got {head!r}")
        self.spec = {"arch": "imagenet_vgg", "widths": list(widths), "batch_norm": batch_norm, "head": head,
                     "hidden": list(hidden) if head == "fc_bn" else hidden, "in_channels": in_channels,
                     "num_classes": num_classes}
        if pruned_head is not None:
            self.spec["pruned_head"] = pruned_head
        if bn_init != 1.0:
            self.spec["bn_init"] = bn_init
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
        elif head == "fc_bn":
            h1, h2 = hidden
            self.avgpool = nn.AdaptiveAvgPool2d(POOL)
            self.classifier = nn.Sequential(
                nn.Conv2d(c, h1, POOL), UnitBatchNorm1d(h1), nn.ReLU(inplace=True),
                nn.Conv2d(h1, h2, 1), UnitBatchNorm1d(h2), nn.ReLU(inplace=True),
                nn.Conv2d(h2, num_classes, 1))
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
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.constant_(m.weight, bn_init)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(x.flatten(1)) if self.spec["head"] == "gap" else self.classifier(x).flatten(1)

    def channel_groups(self) -> List[ChannelGroup]:
        convs = [i for i, m in enumerate(self.features) if isinstance(m, nn.Conv2d)]
        groups = []
        for k, i in enumerate(convs):
            consumer = f"features.{convs[k + 1]}" if k + 1 < len(convs) else \
                ("classifier.0" if self.spec["head"] == "fc" else "classifier")
            bn = f"features.{i + 1}" if self.spec["batch_norm"] else ""
            groups.append(ChannelGroup(f"conv{k + 1}", f"features.{i}", bn, (consumer,)))
        if self.spec["head"] == "fc_bn":  # the hidden units, through their BatchNorm1d
            groups += [ChannelGroup("fc1", "classifier.0", "classifier.1", ("classifier.3",)),
                       ChannelGroup("fc2", "classifier.3", "classifier.4", ("classifier.6",))]
        return groups

    def cut_spec_with_widths(self, widths: Dict[str, int]) -> Dict[str, Any]:
        """The architecture surgery cuts: these widths under this model's own head."""
        spec = {**self.spec, "widths": layout_with_widths(self.spec["widths"], widths)}
        if self.spec["head"] == "fc_bn":
            spec["hidden"] = [int(widths.get(f"fc{k + 1}", h)) for k, h in enumerate(self.spec["hidden"])]
        return spec

    def spec_with_widths(self, widths: Dict[str, int]) -> Dict[str, Any]:
        """The pruned architecture of these widths (with ``pruned_head``, its head)."""
        cut = self.cut_spec_with_widths(widths)
        return gap_form(cut) if "pruned_head" in cut else cut

    def final_spec(self) -> Optional[Dict[str, Any]]:
        """The architecture this (cut) model takes once pruning is done; None: its own."""
        return gap_form(self.spec) if "pruned_head" in self.spec else None

    def width_counter(self, input_shape, measure: str = "flops"):
        """widths -> FLOPs or parameters of the pruned architecture (:meth:`spec_with_widths`) from one
        traced pass (the uniform search; a removed block counts 0)."""
        final = self.final_spec()
        if final is None:
            return depgraph.group_counter(self, input_shape, measure)
        with torch.device("meta"):
            shaped = ImageNetVGG(**{k: v for k, v in final.items() if k != "arch"})
        return depgraph.group_counter(shaped, input_shape, measure)

    def torchvision_name(self) -> str:
        depth = sum(1 for w in self.spec["widths"] if w != "M") + 3
        return f"vgg{depth}" + ("_bn" if self.spec["batch_norm"] else "")

    def load_torchvision_state_dict(self, state: Dict) -> None:
        """Load a torchvision VGG's state dict: its linear head reshaped onto the convolutions."""
        if self.spec["head"] != "fc":
            raise PrunebenchError(f"torchvision's VGG weights need model.head=fc, not {self.spec['head']}")
        own = self.state_dict()
        self.load_state_dict({k: v.reshape(own[k].shape) if k in own else v for k, v in state.items()})

