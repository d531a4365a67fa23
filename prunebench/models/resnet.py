"""ResNet for CIFAR with basic blocks (He et al., CVPR 2016): depth 6n+2, three
stages of 16/32/64 channels, parameter-free (option A) shortcuts.

As in L1-norm filter pruning (Li et al., ICLR 2017) only the first convolution of
each block is prunable: the residual channels are tied across every block of a
stage by the additions, so the block's inner width is what pruning changes."""
from typing import Any, Dict, List

import torch.nn.functional as F
from torch import nn

from prunebench.models.groups import ChannelGroup, ResidualBlock

STAGE_WIDTHS = (16, 32, 64)


def spec_for(depth: int, width: float, in_channels: int, num_classes: int) -> Dict[str, Any]:
    if (depth - 2) % 6 or depth < 8:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 56, 110), got {depth}")
    n = (depth - 2) // 6
    stages = [max(1, round(w * width)) for w in STAGE_WIDTHS]
    return {"arch": "resnet", "depth": depth, "stage_widths": stages,
            "block_widths": [w for w in stages for _ in range(n)],
            "in_channels": in_channels, "num_classes": num_classes}


class BasicBlock(nn.Module):
    def __init__(self, in_c: int, mid_c: int, out_c: int, stride: int):
        super().__init__()
        self.stride, self.extra, self.removed = stride, out_c - in_c, mid_c == 0
        if not self.removed:
            self.conv1 = nn.Conv2d(in_c, mid_c, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(mid_c)
            self.conv2 = nn.Conv2d(mid_c, out_c, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(out_c)

    def residual(self, x):
        return self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))

    def shortcut(self, x):
        """The parameter-free (option A) shortcut: subsampled, zero-padded with new channels."""
        s = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
        if self.extra:
            s = F.pad(s, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
        return s

    def forward(self, x):
        shortcut = self.shortcut(x)
        if self.removed:
            return shortcut  # already non-negative: it is a ReLU output
        return F.relu(self.residual(x) + shortcut)


class ResNet(nn.Module):
    def __init__(self, depth: int, stage_widths: List[int], block_widths: List[int],
                 in_channels: int, num_classes: int):
        super().__init__()
        n = (depth - 2) // 6
        if len(block_widths) != 3 * n:
            raise ValueError(f"ResNet-{depth} has {3 * n} blocks, got {len(block_widths)} block widths")
        self.spec = {"arch": "resnet", "depth": depth, "stage_widths": list(stage_widths),
                     "block_widths": list(block_widths), "in_channels": in_channels, "num_classes": num_classes}
        self.conv1 = nn.Conv2d(in_channels, stage_widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stage_widths[0])
        blocks, c = [], stage_widths[0]
        for s, w in enumerate(stage_widths):
            for b in range(n):
                blocks.append(BasicBlock(c, block_widths[s * n + b], w, 2 if s > 0 and b == 0 else 1))
                c = w
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        return self.classifier(self.pool(self.blocks(x)).flatten(1))

    def channel_groups(self) -> List[ChannelGroup]:
        return [ChannelGroup(f"block{k + 1}", f"blocks.{k}.conv1", f"blocks.{k}.bn1", (f"blocks.{k}.conv2",))
                for k, block in enumerate(self.blocks) if not block.removed]

    def residual_blocks(self) -> List[ResidualBlock]:
        return [ResidualBlock(f"block{k + 1}", f"blocks.{k}.bn2", (f"block{k + 1}",))
                for k, block in enumerate(self.blocks) if not block.removed]

    def spec_with_widths(self, widths: Dict[str, int]) -> Dict[str, Any]:
        return {**self.spec, "block_widths": [int(widths.get(f"block{k + 1}", w))
                                              for k, w in enumerate(self.spec["block_widths"])]}
