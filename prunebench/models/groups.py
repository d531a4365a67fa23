"""Channel groups: the prunable units every model describes about itself.

A group is the output channels of one convolution (and its BatchNorm) together
with the layers that read them. Selection picks indices per group; surgery slices
every tensor along the axes listed here, so pruning needs no model-specific code.
"""
from dataclasses import dataclass
from typing import Dict, List, Tuple


@dataclass(frozen=True)
class ChannelGroup:
    name: str  # the key in widths and keep-index maps: conv3, block7
    conv: str  # module path of the producing convolution
    bn: str  # module path of its BatchNorm
    consumers: Tuple[str, ...]  # module paths whose input channels are these channels


def parameter_axes(groups: List[ChannelGroup]) -> Dict[str, Dict[int, str]]:
    """Map each state-dict entry touched by a group to {axis: group name}."""
    axes: Dict[str, Dict[int, str]] = {}
    for g in groups:
        for suffix in ("weight", "bias"):
            axes.setdefault(f"{g.conv}.{suffix}", {})[0] = g.name
        for suffix in ("weight", "bias", "running_mean", "running_var"):
            axes.setdefault(f"{g.bn}.{suffix}", {})[0] = g.name
        for c in g.consumers:
            axes.setdefault(f"{c}.weight", {})[1] = g.name
    return axes


@dataclass(frozen=True)
class ResidualBlock:
    """A residual block as block-level methods see it (SSS): removing it leaves its shortcut."""
    name: str  # the key of the block's scaling factor: block7, layer3_2
    bn: str  # module path of the BatchNorm that ends the residual branch (scaled before the addition)
    groups: Tuple[str, ...]  # the channel groups inside the block: width 0 for all removes the block
