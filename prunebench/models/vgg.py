"""VGG with BatchNorm for CIFAR (Simonyan & Zisserman, 2015), in the form used by
network slimming and "Rethinking the Value of Network Pruning": 3x3 conv-BN-ReLU
stacks, four max-pools, global average pooling and a classifier.

Classifiers (``model.classifier``): ``linear``, one linear layer (network
slimming's VGG); ``li``, Linear(C, 512)-BatchNorm1d-ReLU-Linear, the VGG-16 of
L1-norm filter pruning (Li et al., ICLR 2017; authors' code
Eric-mingjie/rethinking-network-pruning cifar/l1-norm-pruning/models/vgg.py lines
31-36), whose hidden layer is never pruned.

Initialisation as the authors' code (both vgg.py files, ``_initialize_weights``):
convolutions without bias, normal with std sqrt(2 / (k*k*out)) (Kaiming, fan-out);
linear layers normal(0, 0.01) with zero bias; BatchNorm2d scale ``bn_init`` and
zero shift. The authors set the scale to 0.5 (cifar/network-slimming/models/vgg.py
line 63, cifar/l1-norm-pruning/models/vgg.py line 70; BatchNorm1d keeps 1);
prunebench's default is PyTorch's 1.0 and ``model.bn_init=0.5`` gives theirs. The
authors pool with AvgPool2d(2) on the 2x2 map of a 32x32 image; global average
pooling is the same there and also takes other image sizes."""
from typing import Any, Dict, List, Optional

from torch import nn

from prunebench.models.groups import ChannelGroup
from prunebench.models.init import he_init

WIDTHS = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512],
}
LI_HIDDEN = 512  # Li et al.'s hidden linear layer, scaled by model.width


def linear_classifier(c: int, hidden: int, num_classes: int) -> nn.Module:
    return nn.Linear(c, num_classes)


def li_classifier(c: int, hidden: int, num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Linear(c, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, num_classes))


# name -> (builder, path of the layer that reads the last convolution's channels)
CLASSIFIERS = {"linear": (linear_classifier, "classifier"), "li": (li_classifier, "classifier.0")}


def spec_for(depth: int, width: float, in_channels: int, num_classes: int, bn_init: float = 1.0,
             classifier: str = "linear") -> Dict[str, Any]:
    if depth not in WIDTHS:
        raise ValueError(f"VGG depth {depth} is not one of {sorted(WIDTHS)}")
    if classifier not in CLASSIFIERS:
        raise ValueError(f"model.classifier must be one of {', '.join(CLASSIFIERS)}, got {classifier!r}")
    widths = [w if w == "M" else max(1, round(w * width)) for w in WIDTHS[depth]]
    spec = {"arch": "vgg", "widths": widths, "in_channels": in_channels, "num_classes": num_classes}
    if bn_init != 1.0:
        spec["bn_init"] = bn_init
    if classifier != "linear":
        spec["classifier"] = classifier
        spec["hidden"] = max(1, round(LI_HIDDEN * width))
    return spec


def layout_with_widths(layout: List[Any], widths: Dict[str, int]) -> List[Any]:
    """A VGG layout (widths and "M" pools) with the k-th convolution's width replaced by
    ``widths["conv<k>"]`` where given."""
    new, k = [], 0
    for w in layout:
        if w == "M":
            new.append(w)
        else:
            k += 1
            new.append(int(widths.get(f"conv{k}", w)))
    return new


class VGG(nn.Module):
    def __init__(self, widths: List[Any], in_channels: int, num_classes: int, bn_init: float = 1.0,
                 classifier: str = "linear", hidden: Optional[int] = None):
        super().__init__()
        self.spec = {"arch": "vgg", "widths": list(widths), "in_channels": in_channels, "num_classes": num_classes}
        if bn_init != 1.0:
            self.spec["bn_init"] = bn_init
        if classifier != "linear":
            self.spec.update(classifier=classifier, hidden=hidden)
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
        build, self.reader = CLASSIFIERS[classifier]
        self.classifier = build(c, hidden or LI_HIDDEN, num_classes)
        he_init(self, bn_init, linear_std=0.01)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))

    def channel_groups(self) -> List[ChannelGroup]:
        convs = [i for i, m in enumerate(self.features) if isinstance(m, nn.Conv2d)]
        groups = []
        for k, i in enumerate(convs):
            consumer = f"features.{convs[k + 1]}" if k + 1 < len(convs) else self.reader
            groups.append(ChannelGroup(f"conv{k + 1}", f"features.{i}", f"features.{i + 1}", (consumer,)))
        return groups

    def spec_with_widths(self, widths: Dict[str, int], selections: Optional[Dict] = None) -> Dict[str, Any]:
        return {**self.spec, "widths": layout_with_widths(self.spec["widths"], widths)}
