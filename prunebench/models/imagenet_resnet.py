"""ResNet-34 and ResNet-50 for ImageNet (He et al., CVPR 2016) in torchvision's
architecture and parameter names (7x7 stem, max-pool, four stages; basic blocks for
34, bottlenecks with the stride on the 3x3 convolution for 50, projection shortcuts
where the shape changes), built from widths so that a pruned one rebuilds from JSON.

Prunable: the block's inner convolutions (conv1 of a basic block; conv1 and conv2 of
a bottleneck), whose channels nothing outside the block reads; the residual channels
are tied across a stage by the additions. A block whose inner width is 0 is removed:
it passes its shortcut on (SSS's block-level pruning)."""
from typing import Any, Dict, List

import torch.nn.functional as F
from torch import nn

from prunebench.errors import PrunebenchError
from prunebench.models import depgraph
from prunebench.models.groups import ChannelGroup, ResidualBlock
from prunebench.models.init import he_init

BLOCKS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3)),
          101: ("bottleneck", (3, 4, 23, 3))}
PLANES = (64, 128, 256, 512)  # inner width of each stage; outputs x1 (basic) or x4 (bottleneck)
EXPANSION = {"basic": 1, "bottleneck": 4}
INNER = {"basic": 1, "bottleneck": 2}  # prunable convolutions per block


def spec_for(depth: int, width: float, in_channels: int, num_classes: int) -> Dict[str, Any]:
    if depth not in BLOCKS:
        raise PrunebenchError(f"ImageNet ResNet depth must be one of {sorted(BLOCKS)}, got {depth}")
    kind, counts = BLOCKS[depth]
    planes = [max(1, round(p * width)) for p in PLANES]
    return {"arch": "imagenet_resnet", "depth": depth, "stem": max(1, round(64 * width)),
            "stage_widths": [p * EXPANSION[kind] for p in planes],
            "block_widths": [[p] * INNER[kind] for p, n in zip(planes, counts) for _ in range(n)],
            "in_channels": in_channels, "num_classes": num_classes}


def spec_from_config(cfg, in_channels: int, num_classes: int) -> Dict[str, Any]:
    return spec_for(cfg.depth, cfg.width, in_channels, num_classes)


class Block(nn.Module):
    """A basic block (``inner`` = [w]) or a bottleneck ([w1, w2]); names as torchvision's."""

    def __init__(self, kind: str, in_c: int, inner: List[int], out_c: int, stride: int):
        super().__init__()
        self.removed = min(inner) == 0
        if not self.removed:
            if kind == "basic":
                self.conv1 = nn.Conv2d(in_c, inner[0], 3, stride, 1, bias=False)
                self.bn1 = nn.BatchNorm2d(inner[0])
                self.conv2 = nn.Conv2d(inner[0], out_c, 3, 1, 1, bias=False)
                self.bn2 = nn.BatchNorm2d(out_c)
            else:
                self.conv1 = nn.Conv2d(in_c, inner[0], 1, bias=False)
                self.bn1 = nn.BatchNorm2d(inner[0])
                self.conv2 = nn.Conv2d(inner[0], inner[1], 3, stride, 1, bias=False)
                self.bn2 = nn.BatchNorm2d(inner[1])
                self.conv3 = nn.Conv2d(inner[1], out_c, 1, bias=False)
                self.bn3 = nn.BatchNorm2d(out_c)
        self.downsample = None
        if stride != 1 or in_c != out_c:
            self.downsample = nn.Sequential(nn.Conv2d(in_c, out_c, 1, stride, bias=False), nn.BatchNorm2d(out_c))
        self.kind = kind

    def residual(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        if self.kind == "basic":
            return self.bn2(self.conv2(out))
        out = F.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        if self.removed:  # relu(0 + shortcut); an identity shortcut is already non-negative
            return F.relu(shortcut)
        return F.relu(self.residual(x) + shortcut)


class ImageNetResNet(nn.Module):
    def __init__(self, depth: int, stem: int, stage_widths: List[int], block_widths: List[List[int]],
                 in_channels: int, num_classes: int):
        super().__init__()
        if depth not in BLOCKS:
            raise PrunebenchError(f"ImageNet ResNet depth must be one of {sorted(BLOCKS)}, got {depth}")
        kind, counts = BLOCKS[depth]
        if len(block_widths) != sum(counts) or any(len(w) != INNER[kind] for w in block_widths):
            raise PrunebenchError(f"ResNet-{depth} has {sum(counts)} blocks of {INNER[kind]} prunable "
                                  f"convolutions, got block widths {block_widths}")
        self.spec = {"arch": "imagenet_resnet", "depth": depth, "stem": stem, "stage_widths": list(stage_widths),
                     "block_widths": [list(w) for w in block_widths], "in_channels": in_channels,
                     "num_classes": num_classes}
        self.kind = kind
        self.conv1 = nn.Conv2d(in_channels, stem, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        c, k = stem, 0
        self.paths: List[str] = []  # module path of every block, in order: layer1.0, ...
        for s, (out_c, n) in enumerate(zip(stage_widths, counts)):
            blocks = []
            for b in range(n):
                blocks.append(Block(kind, c, block_widths[k], out_c, 2 if s > 0 and b == 0 else 1))
                self.paths.append(f"layer{s + 1}.{b}")
                c, k = out_c, k + 1
            self.add_module(f"layer{s + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)
        he_init(self)  # as torchvision's ResNet: He fan-out convolutions, BatchNorm 1 / 0, default linear

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))

    @staticmethod
    def group_name(path: str, conv: int) -> str:
        return f"{path.replace('.', '_')}_conv{conv}"  # layer3_2_conv1: no dots, a valid Hydra key

    def channel_groups(self) -> List[ChannelGroup]:
        groups = []
        for path in self.paths:
            if self.get_submodule(path).removed:
                continue
            for i in range(1, INNER[self.kind] + 1):
                groups.append(ChannelGroup(self.group_name(path, i), f"{path}.conv{i}", f"{path}.bn{i}",
                                           (f"{path}.conv{i + 1}",)))
        return groups

    def residual_blocks(self) -> List[ResidualBlock]:
        last = "bn2" if self.kind == "basic" else "bn3"
        return [ResidualBlock(path.replace(".", "_"), f"{path}.{last}",
                              tuple(self.group_name(path, i) for i in range(1, INNER[self.kind] + 1)))
                for path in self.paths if not self.get_submodule(path).removed]

    def spec_with_widths(self, widths: Dict[str, int]) -> Dict[str, Any]:
        new = [[int(widths.get(self.group_name(path, i + 1), w)) for i, w in enumerate(ws)]
               for path, ws in zip(self.paths, self.spec["block_widths"])]
        return {**self.spec, "block_widths": new}

    def width_counter(self, input_shape, measure: str = "flops"):
        """widths -> FLOPs or parameters from one traced pass (the uniform search; a removed block counts 0)."""
        return depgraph.group_counter(self, input_shape, measure)

    def torchvision_name(self) -> str:
        return f"resnet{self.spec['depth']}"

    def load_torchvision_state_dict(self, state: Dict) -> None:
        """Load a torchvision ResNet's state dict (same names and shapes at full width)."""
        self.load_state_dict(state)
