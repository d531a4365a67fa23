"""Pre-activation ResNet for CIFAR (He, Zhang, Ren, Sun, "Identity Mappings in Deep
Residual Networks", ECCV 2016), with network slimming's channel selection (Liu et
al., ICCV 2017), as the authors built it (Eric-mingjie/rethinking-network-pruning
cifar/network-slimming/models/preresnet.py).

A block is BN-ReLU-conv repeated: basic blocks (two 3x3 convolutions, depth 6n+2,
stages of 16/32/64 channels: PreResNet-56, -110) or bottlenecks (1x1, 3x3, 1x1 with
4x expansion, depth 9n+2, residual stages of 64/128/256: PreResNet-164, and the
PreResNet-110 of the authors' weight-level code, cifar/weight-level/models/cifar/
preresnet.py lines 89-91). Where a stage changes width or map size the shortcut is
a 1x1 convolution (stride 2 where the map halves) on the block's input (authors'
lines 95-99). The network ends with BN-ReLU, global average pooling and a linear
layer.

Every BatchNorm is prunable, as the authors' resprune.py does: the first BN of each
block and the final BN read the residual sum, which cannot be narrowed, so a
ChannelSelection after them picks the channels the next convolution reads (a
``select`` group; resprune.py lines 154-169); the other BNs follow a convolution
inside the block whose output channels are removed with them (``conv`` groups, the
only ones filter criteria prune; resprune.py lines 170-201). The last convolution
of a block writes the residual sum and keeps its width (lines 197-200).
Initialisation: convolutions Kaiming normal (fan-out), BatchNorm scale ``bn_init``
(the authors' slimming model: 0.5, line 90) and zero shift, the linear layer at
PyTorch's default."""
from typing import Any, Dict, List, Optional

import torch.nn.functional as F
from torch import nn

from prunebench.models.groups import ChannelGroup, ChannelSelection, Residual, selections_with_widths
from prunebench.models.init import he_init

PLANES = (16, 32, 64)  # inner widths of the three stages; residual widths are these x EXPANSION
EXPANSION = {"basic": 1, "bottleneck": 4}
CONVS = {"basic": 2, "bottleneck": 3}  # convolutions a block
PER_BLOCK = {"basic": 6, "bottleneck": 9}  # depth = PER_BLOCK x blocks a stage + 2


def spec_for(depth: int, width: float, in_channels: int, num_classes: int, bn_init: float = 1.0,
             block: str = "basic") -> Dict[str, Any]:
    if block not in EXPANSION:
        raise ValueError(f"model.block must be one of {', '.join(EXPANSION)}, got {block!r}")
    k = PER_BLOCK[block]
    if (depth - 2) % k or depth < k + 2:
        raise ValueError(f"PreResNet with {block} blocks needs depth {k}n+2 (basic: 56, 110; bottleneck: 110, 164), "
                         f"got {depth}")
    n = (depth - 2) // k
    planes = [max(1, round(p * width)) for p in PLANES]
    stages = [p * EXPANSION[block] for p in planes]
    inner = [[p] * (CONVS[block] - 1) for p in planes for _ in range(n)]
    spec = {"arch": "preresnet", "depth": depth, "block": block, "stem": planes[0], "stage_widths": stages,
            "block_widths": inner, "selections": {name: None for name in selection_names(3 * n)},
            "in_channels": in_channels, "num_classes": num_classes}
    if bn_init != 1.0:
        spec["bn_init"] = bn_init
    return spec


def selection_names(blocks: int) -> List[str]:
    return [f"block{k + 1}_bn1" for k in range(blocks)] + ["bn"]


class Block(nn.Module):
    """bn1 -> select -> ReLU -> conv1 -> bn2 -> ReLU -> conv2 [-> bn3 -> ReLU -> conv3], plus the shortcut."""

    def __init__(self, in_c: int, inner: List[int], out_c: int, stride: int, index: Optional[List[int]]):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_c)
        self.select = ChannelSelection(in_c, index)
        widths = [self.select.index.numel(), *inner, out_c]
        bottleneck = len(inner) == 2
        for j in range(len(widths) - 1):
            if j > 0:
                self.add_module(f"bn{j + 1}", nn.BatchNorm2d(widths[j]))
            k = 1 if bottleneck and j != 1 else 3
            s = stride if j == (1 if bottleneck else 0) else 1  # the 3x3 convolution strides
            self.add_module(f"conv{j + 1}", nn.Conv2d(widths[j], widths[j + 1], k, s, k // 2, bias=False))
        self.depth = len(widths) - 1
        self.downsample = nn.Conv2d(in_c, out_c, 1, stride, bias=False) if stride != 1 or in_c != out_c else None

    def branch(self, x):
        out = self.conv1(F.relu(self.select(self.bn1(x))))
        for j in range(2, self.depth + 1):
            out = getattr(self, f"conv{j}")(F.relu(getattr(self, f"bn{j}")(out)))
        return out

    def shortcut(self, x):
        return x if self.downsample is None else self.downsample(x)

    def forward(self, x):
        return self.branch(x) + self.shortcut(x)


class PreResNet(nn.Module):
    def __init__(self, depth: int, block: str, stem: int, stage_widths: List[int], block_widths: List[List[int]],
                 selections: Dict[str, Optional[List[int]]], in_channels: int, num_classes: int,
                 bn_init: float = 1.0):
        super().__init__()
        n = (depth - 2) // PER_BLOCK[block]
        if len(block_widths) != 3 * n or any(len(w) != CONVS[block] - 1 for w in block_widths):
            raise ValueError(f"PreResNet-{depth} has {3 * n} {block} blocks of {CONVS[block] - 1} inner widths, "
                             f"got {block_widths}")
        self.spec = {"arch": "preresnet", "depth": depth, "block": block, "stem": stem,
                     "stage_widths": list(stage_widths), "block_widths": [list(w) for w in block_widths],
                     "selections": dict(selections), "in_channels": in_channels, "num_classes": num_classes}
        if bn_init != 1.0:
            self.spec["bn_init"] = bn_init
        self.conv1 = nn.Conv2d(in_channels, stem, 3, 1, 1, bias=False)
        blocks, c = [], stem
        for s, w in enumerate(stage_widths):
            for b in range(n):
                k = s * n + b
                blocks.append(Block(c, block_widths[k], w, 2 if s > 0 and b == 0 else 1,
                                    selections.get(f"block{k + 1}_bn1")))
                c = w
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(c)
        self.select = ChannelSelection(c, selections.get("bn"))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(self.select.index.numel(), num_classes)
        he_init(self, bn_init)

    def forward(self, x):
        x = self.blocks(self.conv1(x))
        return self.classifier(self.pool(F.relu(self.select(self.bn(x)))).flatten(1))

    def channel_groups(self) -> List[ChannelGroup]:
        groups = []
        for k, block in enumerate(self.blocks):
            p = f"blocks.{k}"
            groups.append(ChannelGroup(f"block{k + 1}_bn1", None, f"{p}.bn1", (f"{p}.conv1",), select=f"{p}.select"))
            for j in range(1, block.depth):
                groups.append(ChannelGroup(f"block{k + 1}_conv{j}", f"{p}.conv{j}", f"{p}.bn{j + 1}",
                                           (f"{p}.conv{j + 1}",)))
        groups.append(ChannelGroup("bn", None, "bn", ("classifier",), select="select"))
        return groups

    def residuals(self) -> List[Residual]:
        return [Residual(f"blocks.{k}", f"blocks.{k}.conv{b.depth}", None) for k, b in enumerate(self.blocks)]

    def spec_with_widths(self, widths: Dict[str, int], selections: Optional[Dict[str, List[int]]] = None
                         ) -> Dict[str, Any]:
        inner = [[int(widths.get(f"block{k + 1}_conv{j + 1}", w)) for j, w in enumerate(ws)]
                 for k, ws in enumerate(self.spec["block_widths"])]
        chosen = selections_with_widths(self, widths, selections)
        return {**self.spec, "block_widths": inner, "selections": chosen}
