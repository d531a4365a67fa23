"""ResNet for CIFAR with basic blocks (He et al., CVPR 2016): depth 6n+2, three
stages of 16/32/64 channels, parameter-free (option A) shortcuts.

Where a stage narrows the map and widens the channels, the shortcut
(``model.shortcut``) is one of

- ``subsample_pad``: every other pixel, the new channels zero, half before and
  half after the old ones;
- ``avgpool_pad``: 2x2 average pooling, the new channels zero after the old ones,
  as in the code of Liu et al. for L1-norm pruning
  (Eric-mingjie/rethinking-network-pruning cifar/l1-norm-pruning/models/resnet.py,
  ``downsample_basic_block``, lines 51-60), with the gradient flowing through it;
- ``avgpool_pad_detached``: the same, detached, as that code has it: it builds the
  padded tensor from ``x.data`` (line 58), so no gradient flows back through a
  downsampling shortcut; the identity shortcuts of the other blocks pass it (and
  were a downsampling block pruned away whole, nothing would reach the layers
  before it).

BatchNorm scales start at ``bn_init`` (the authors' ResNet: 1, line 97).

As in L1-norm filter pruning (Li et al., ICLR 2017) only the first convolution of
each block is prunable: the residual channels are tied across every block of a
stage by the additions, so the block's inner width is what pruning changes."""
from typing import Any, Dict, List, Optional

import torch.nn.functional as F
from torch import nn

from prunebench.models.groups import ChannelGroup, Residual, ResidualBlock
from prunebench.models.init import he_init

STAGE_WIDTHS = (16, 32, 64)


def subsample_pad(x, stride: int, extra: int):
    s = x[:, :, ::stride, ::stride] if stride > 1 else x
    return F.pad(s, (0, 0, 0, 0, extra // 2, extra - extra // 2)) if extra else s


def avgpool_pad(x, stride: int, extra: int):
    s = F.avg_pool2d(x, stride) if stride > 1 else x
    return F.pad(s, (0, 0, 0, 0, 0, extra)) if extra else s


def avgpool_pad_detached(x, stride: int, extra: int):
    return avgpool_pad(x.detach(), stride, extra) if stride > 1 or extra else x


SHORTCUTS = {"subsample_pad": subsample_pad, "avgpool_pad": avgpool_pad, "avgpool_pad_detached": avgpool_pad_detached}


def spec_for(depth: int, width: float, in_channels: int, num_classes: int, bn_init: float = 1.0,
             shortcut: str = "subsample_pad") -> Dict[str, Any]:
    if (depth - 2) % 6 or depth < 8:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 56, 110), got {depth}")
    if shortcut not in SHORTCUTS:
        raise ValueError(f"model.shortcut must be one of {', '.join(SHORTCUTS)}, got {shortcut!r}")
    n = (depth - 2) // 6
    stages = [max(1, round(w * width)) for w in STAGE_WIDTHS]
    spec = {"arch": "resnet", "depth": depth, "stage_widths": stages,
            "block_widths": [w for w in stages for _ in range(n)],
            "in_channels": in_channels, "num_classes": num_classes}
    if bn_init != 1.0:
        spec["bn_init"] = bn_init
    if shortcut != "subsample_pad":
        spec["shortcut"] = shortcut
    return spec


class BasicBlock(nn.Module):
    def __init__(self, in_c: int, mid_c: int, out_c: int, stride: int, shortcut: str = "subsample_pad"):
        super().__init__()
        self.stride, self.extra, self.removed = stride, out_c - in_c, mid_c == 0
        self.pad = SHORTCUTS[shortcut]
        if not self.removed:
            self.conv1 = nn.Conv2d(in_c, mid_c, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(mid_c)
            self.conv2 = nn.Conv2d(mid_c, out_c, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(out_c)

    def residual(self, x):
        return self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))

    def shortcut(self, x):
        """The parameter-free (option A) shortcut: downsampled, zero-padded with new channels."""
        return self.pad(x, self.stride, self.extra)

    def forward(self, x):
        shortcut = self.shortcut(x)
        if self.removed:
            return shortcut  # already non-negative: it is a ReLU output
        return F.relu(self.residual(x) + shortcut)


class ResNet(nn.Module):
    def __init__(self, depth: int, stage_widths: List[int], block_widths: List[int],
                 in_channels: int, num_classes: int, bn_init: float = 1.0, shortcut: str = "subsample_pad"):
        super().__init__()
        n = (depth - 2) // 6
        if len(block_widths) != 3 * n:
            raise ValueError(f"ResNet-{depth} has {3 * n} blocks, got {len(block_widths)} block widths")
        self.spec = {"arch": "resnet", "depth": depth, "stage_widths": list(stage_widths),
                     "block_widths": list(block_widths), "in_channels": in_channels, "num_classes": num_classes}
        if bn_init != 1.0:
            self.spec["bn_init"] = bn_init
        if shortcut != "subsample_pad":
            self.spec["shortcut"] = shortcut
        self.conv1 = nn.Conv2d(in_channels, stage_widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stage_widths[0])
        blocks, c = [], stage_widths[0]
        for s, w in enumerate(stage_widths):
            for b in range(n):
                blocks.append(BasicBlock(c, block_widths[s * n + b], w, 2 if s > 0 and b == 0 else 1, shortcut))
                c = w
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)
        he_init(self, bn_init)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        return self.classifier(self.pool(self.blocks(x)).flatten(1))

    def channel_groups(self) -> List[ChannelGroup]:
        return [ChannelGroup(f"block{k + 1}", f"blocks.{k}.conv1", f"blocks.{k}.bn1", (f"blocks.{k}.conv2",))
                for k, block in enumerate(self.blocks) if not block.removed]

    def residuals(self) -> List[Residual]:
        return [Residual(f"blocks.{k}", f"blocks.{k}.conv2", f"blocks.{k}.bn2")
                for k, block in enumerate(self.blocks) if not block.removed]

    def residual_blocks(self) -> List[ResidualBlock]:
        return [ResidualBlock(f"block{k + 1}", f"blocks.{k}.bn2", (f"block{k + 1}",))
                for k, block in enumerate(self.blocks) if not block.removed]

    def spec_with_widths(self, widths: Dict[str, int], selections: Optional[Dict] = None) -> Dict[str, Any]:
        return {**self.spec, "block_widths": [int(widths.get(f"block{k + 1}", w))
                                              for k, w in enumerate(self.spec["block_widths"])]}
