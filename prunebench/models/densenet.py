"""DenseNet for CIFAR (Huang, Liu, van der Maaten, Weinberger, "Densely Connected
Convolutional Networks", CVPR 2017), with network slimming's channel selection
(Liu et al., ICCV 2017), as the authors built it: DenseNet-40 after
Eric-mingjie/rethinking-network-pruning cifar/network-slimming/models/densenet.py,
DenseNet-BC-100 after cifar/weight-level/models/cifar/densenet.py (its Bottleneck,
lines 10-34) with the same channel selections.

A 3x3 stem of 2 x growth channels, three dense blocks joined by transitions, then
BN-ReLU, global average pooling and a linear layer. Each dense layer reads the
concatenation of everything before it in its block and appends ``growth``
channels: BN-ReLU-conv3x3 (``block: basic``, depth 3n+4: DenseNet-40), or
BN-ReLU-conv1x1 to 4 x growth, BN-ReLU-conv3x3 (``block: bottleneck``, depth 6n+4:
DenseNet-BC-100). A transition is BN-ReLU-conv1x1 to ``compression`` x its input
channels (BC: 0.5), then 2x2 average pooling.

Every BatchNorm that reads a concatenation stays whole and a ChannelSelection
after it picks the channels the next convolution reads (``select`` groups, as the
authors' denseprune.py: lines 154-170 set the selection, lines 178-191 slice the
next convolution's input; no convolution loses an output channel there). The
bottleneck's 1x1 convolution is an ordinary ``conv`` group (its output, bn2 and
the 3x3 convolution's input).

Filter criteria see the network as its convolutions' outputs (``filter_groups``):
the stem, each layer's 3x3 convolution (``growth`` channels, pruned ones list
theirs in ``layer_widths``), each bottleneck and each transition
(``transition_widths``). A layer's new channels are a slice of every later
layer's input in its block, of the transition's and, in the last block, of the
final BatchNorm's and the classifier's: the group lists each of those consumers
with the BatchNorm in front of it and the slice's offset, so removing a filter
removes that input channel everywhere. The two views are the same channels and
are not mixed: a model pruned one way has whole selections or default widths in
the other. Initialisation: convolutions Kaiming normal
(fan-out), BatchNorm scale ``bn_init`` (the authors' slimming model: 0.5, line
106) and zero shift, the linear layer at PyTorch's default."""
import math
from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from prunebench.models.groups import ChannelGroup, ChannelSelection, selections_with_widths
from prunebench.models.init import he_init

GROWTH = 12
PER_LAYER = {"basic": 3, "bottleneck": 6}  # depth = PER_LAYER x layers a block + 4
EXPANSION = 4  # bottleneck width = 4 x growth


def spec_for(depth: int, width: float, in_channels: int, num_classes: int, bn_init: float = 1.0,
             block: str = "basic", growth: int = GROWTH, compression: float = 1.0) -> Dict[str, Any]:
    if block not in PER_LAYER:
        raise ValueError(f"model.block must be one of {', '.join(PER_LAYER)}, got {block!r}")
    k = PER_LAYER[block]
    if (depth - 4) % k or depth < k + 4:
        raise ValueError(f"DenseNet with {block} layers needs depth {k}n+4 (basic: 40; bottleneck: 100), got {depth}")
    if not 0 < compression <= 1:
        raise ValueError(f"model.compression is the fraction of channels a transition keeps, in (0, 1]; "
                         f"got {compression}")
    n = (depth - 4) // k
    g = max(1, round(growth * width))
    spec = {"arch": "densenet", "depth": depth, "block": block, "growth": g, "compression": compression,
            "stem": 2 * g, "bottleneck_widths": [EXPANSION * g] * (3 * n) if block == "bottleneck" else [],
            "selections": {name: None for name in selection_names(3 * n)},
            "in_channels": in_channels, "num_classes": num_classes}
    if bn_init != 1.0:
        spec["bn_init"] = bn_init
    return spec


def selection_names(layers: int) -> List[str]:
    return [f"layer{k + 1}_bn1" for k in range(layers)] + ["trans1_bn1", "trans2_bn1", "bn"]


class DenseLayer(nn.Module):
    """bn1 -> select -> ReLU -> conv [-> bn2 -> ReLU -> conv2]; output: input and new channels concatenated."""

    def __init__(self, in_c: int, growth: int, bottleneck: Optional[int], index: Optional[List[int]]):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_c)
        self.select = ChannelSelection(in_c, index)
        c = self.select.index.numel()
        if bottleneck is None:
            self.conv1 = nn.Conv2d(c, growth, 3, 1, 1, bias=False)
        else:
            self.conv1 = nn.Conv2d(c, bottleneck, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(bottleneck)
            self.conv2 = nn.Conv2d(bottleneck, growth, 3, 1, 1, bias=False)
        self.bottleneck = bottleneck is not None

    def forward(self, x):
        out = self.conv1(F.relu(self.select(self.bn1(x))))
        if self.bottleneck:
            out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat((x, out), 1)


class Transition(nn.Module):
    def __init__(self, in_c: int, out_c: int, index: Optional[List[int]]):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_c)
        self.select = ChannelSelection(in_c, index)
        self.conv1 = nn.Conv2d(self.select.index.numel(), out_c, 1, bias=False)

    def forward(self, x):
        return F.avg_pool2d(self.conv1(F.relu(self.select(self.bn1(x)))), 2)


class DenseNet(nn.Module):
    def __init__(self, depth: int, block: str, growth: int, compression: float, stem: int,
                 bottleneck_widths: List[int], selections: Dict[str, Optional[List[int]]], in_channels: int,
                 num_classes: int, bn_init: float = 1.0, layer_widths: Optional[List[int]] = None,
                 transition_widths: Optional[List[int]] = None):
        super().__init__()
        n = (depth - 4) // PER_LAYER[block]
        if block == "bottleneck" and len(bottleneck_widths) != 3 * n:
            raise ValueError(f"DenseNet-BC-{depth} has {3 * n} bottlenecks, got {len(bottleneck_widths)} widths")
        if layer_widths is not None and len(layer_widths) != 3 * n:
            raise ValueError(f"DenseNet-{depth} has {3 * n} layers, got {len(layer_widths)} layer widths")
        if transition_widths is not None and len(transition_widths) != 2:
            raise ValueError(f"DenseNet has 2 transitions, got {len(transition_widths)} transition widths")
        self.spec = {"arch": "densenet", "depth": depth, "block": block, "growth": growth, "compression": compression,
                     "stem": stem, "bottleneck_widths": list(bottleneck_widths), "selections": dict(selections),
                     "in_channels": in_channels, "num_classes": num_classes}
        if bn_init != 1.0:
            self.spec["bn_init"] = bn_init
        if layer_widths is not None:  # filter-pruned: each layer's new channels, each transition's output
            self.spec["layer_widths"] = [int(w) for w in layer_widths]
        if transition_widths is not None:
            self.spec["transition_widths"] = [int(w) for w in transition_widths]
        self.layers_per_block = n
        self.conv1 = nn.Conv2d(in_channels, stem, 3, 1, 1, bias=False)
        c = stem
        for b in range(3):
            layers = []
            for i in range(n):
                k = b * n + i
                width = bottleneck_widths[k] if block == "bottleneck" else None
                new = growth if layer_widths is None else layer_widths[k]
                layers.append(DenseLayer(c, new, width, selections.get(f"layer{k + 1}_bn1")))
                c += new
            self.add_module(f"dense{b + 1}", nn.Sequential(*layers))
            if b < 2:
                out = int(math.floor(c * compression)) if transition_widths is None else transition_widths[b]
                self.add_module(f"trans{b + 1}", Transition(c, out, selections.get(f"trans{b + 1}_bn1")))
                c = out
        self.bn = nn.BatchNorm2d(c)
        self.select = ChannelSelection(c, selections.get("bn"))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(self.select.index.numel(), num_classes)
        he_init(self, bn_init)

    def forward(self, x):
        x = self.trans1(self.dense1(self.conv1(x)))
        x = self.trans2(self.dense2(x))
        x = self.dense3(x)
        return self.classifier(self.pool(F.relu(self.select(self.bn(x)))).flatten(1))

    def channel_groups(self) -> List[ChannelGroup]:
        groups, n = [], self.layers_per_block
        for b in range(3):
            for i, layer in enumerate(getattr(self, f"dense{b + 1}")):
                p, k = f"dense{b + 1}.{i}", b * n + i + 1
                groups.append(ChannelGroup(f"layer{k}_bn1", None, f"{p}.bn1", (f"{p}.conv1",), select=f"{p}.select"))
                if layer.bottleneck:
                    groups.append(ChannelGroup(f"layer{k}_conv1", f"{p}.conv1", f"{p}.bn2", (f"{p}.conv2",)))
            if b < 2:
                p = f"trans{b + 1}"
                groups.append(ChannelGroup(f"{p}_bn1", None, f"{p}.bn1", (f"{p}.conv1",), select=f"{p}.select"))
        groups.append(ChannelGroup("bn", None, "bn", ("classifier",), select="select"))
        return groups

    def readers(self, b: int, start: int) -> List[str]:
        """The layers that read the channels of block ``b`` (0-based) from its layer ``start`` on,
        through the BatchNorm in front of each: those layers, then the transition after the block
        (the final BatchNorm and the classifier after the last)."""
        layers = [f"dense{b + 1}.{i}" for i in range(start, self.layers_per_block)]
        return layers + ([f"trans{b + 1}"] if b < 2 else [""])

    def filter_groups(self) -> List[ChannelGroup]:
        """The convolutions' outputs, in forward order: the stem (``conv1``), each layer's
        bottleneck (``layer{k}_conv1``) and new channels (``layer{k}_conv1``, on DenseNet-BC
        ``layer{k}_conv2``), each transition (``trans{b}_conv1``). Their consumers read them
        through the concatenations at the offsets listed (every selection whole)."""
        partial = [name for name, index in self.spec["selections"].items() if index is not None]
        if partial:
            raise ValueError(f"the selections {partial} pass on part of their BatchNorm's channels (a model pruned "
                             f"by network slimming): its filters cannot be pruned as well")
        n = self.layers_per_block

        def group(name: str, conv: str, b: int, start: int, offset: int) -> ChannelGroup:
            readers = self.readers(b, start)
            norms = tuple(f"{r}.bn1" if r else "bn" for r in readers)
            consumers = tuple(f"{r}.conv1" if r else "classifier" for r in readers)
            return ChannelGroup(name, conv, None, consumers, norms=norms, offsets=(offset,) * len(readers))

        groups = [group("conv1", "conv1", 0, 0, 0)]
        for b in range(3):
            offset = getattr(self, f"dense{b + 1}")[0].bn1.num_features  # the block's input channels
            for i, layer in enumerate(getattr(self, f"dense{b + 1}")):
                p, k = f"dense{b + 1}.{i}", b * n + i + 1
                if layer.bottleneck:
                    groups.append(ChannelGroup(f"layer{k}_conv1", f"{p}.conv1", f"{p}.bn2", (f"{p}.conv2",)))
                conv = f"{p}.conv2" if layer.bottleneck else f"{p}.conv1"
                groups.append(group(f"layer{k}_{conv.rsplit('.', 1)[1]}", conv, b, i + 1, offset))
                offset += self.get_submodule(conv).out_channels
            if b < 2:
                groups.append(group(f"trans{b + 1}_conv1", f"trans{b + 1}.conv1", b + 1, 0, 0))
        return groups

    def spec_with_widths(self, widths: Dict[str, int], selections: Optional[Dict[str, List[int]]] = None
                         ) -> Dict[str, Any]:
        """The spec with new widths of either view's groups (selections: their first channels, or
        ``selections``' indices). Layer and transition widths enter the spec where they are not
        the defaults (``growth``; the compressed input)."""
        spec = self.spec
        n = self.layers_per_block
        bottlenecks = [int(widths.get(f"layer{k + 1}_conv1", w)) for k, w in enumerate(spec["bottleneck_widths"])]
        chosen = selections_with_widths(self, widths, selections)
        conv = "conv2" if spec["block"] == "bottleneck" else "conv1"
        layers = [int(widths.get(f"layer{k + 1}_{conv}", w)) for k, w in
                  enumerate(spec.get("layer_widths", [spec["growth"]] * 3 * n))]
        stem = int(widths.get("conv1", spec["stem"]))
        current = [self.get_submodule(f"trans{b + 1}.conv1").out_channels for b in range(2)]
        transitions = [int(widths.get(f"trans{b + 1}_conv1", w)) for b, w in enumerate(current)]
        out = {k: v for k, v in spec.items() if k not in ("layer_widths", "transition_widths")}
        out.update(stem=stem, bottleneck_widths=bottlenecks, selections=chosen)
        if layers != [spec["growth"]] * 3 * n:
            out["layer_widths"] = layers
        c, default = stem, []
        for b in range(3):
            c += sum(layers[b * n:(b + 1) * n])
            if b < 2:
                default.append(int(math.floor(c * spec["compression"])))
                c = transitions[b]
        if transitions != default:
            out["transition_widths"] = transitions
        return out
