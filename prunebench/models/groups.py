"""Channel groups: the prunable units every model describes about itself.

A group is a set of channels together with the layers that read them. Selection
picks indices per group; surgery slices every tensor along the axes listed here,
so pruning needs no model-specific code. Two kinds:

- ``conv``: the output channels of one convolution and its BatchNorm. Removing a
  channel slices the convolution's and the BatchNorm's axis 0 and the consumers'
  axis 1 (VGG's layers, a ResNet block's inner convolution).
- ``select``: the channels a channel-selection layer picks out of a BatchNorm's
  output, with no producing convolution (network slimming's PreResNet and
  DenseNet, Liu et al. ICCV 2017: the BatchNorm reads a residual sum or a
  concatenation that cannot be narrowed, so it stays whole and the selection
  after it passes on the kept channels; authors' code,
  Eric-mingjie/rethinking-network-pruning cifar/network-slimming/models/
  channel_selection.py and resprune.py lines 154-169). Removing a channel
  shortens the selection's index and slices the consumers' axis 1; the index is
  part of the architecture (the model's spec), so scratch training of a pruned
  model reads the same channels, as the authors' main_E.py copies ``indexes``.

Methods that score convolution filters use :func:`conv_groups`; network slimming
scores every group through its BatchNorm (:func:`bn_channels`).
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from prunebench.errors import PrunebenchError


@dataclass(frozen=True)
class ChannelGroup:
    name: str  # the key in widths and keep-index maps: conv3, block7, layer5_bn1
    conv: Optional[str]  # module path of the producing convolution; None for a selection group
    bn: str  # module path of the BatchNorm whose output channels these are
    consumers: Tuple[str, ...]  # module paths whose input channels are these channels
    select: Optional[str] = None  # module path of the ChannelSelection after ``bn`` (selection groups)

    def __post_init__(self):
        if (self.conv is None) == (self.select is None):
            raise ValueError(f"group {self.name}: give exactly one of a producing conv and a selection layer")

    @property
    def kind(self) -> str:
        return "conv" if self.conv is not None else "select"


@dataclass(frozen=True)
class Residual:
    """A residual block whose output is ``branch(x) + block.shortcut(x)`` (then, on a ResNet, a
    ReLU). ``block.shortcut`` must be linear in ``x`` (identity, subsampling with zero padding,
    average pooling, a 1x1 convolution without bias)."""
    block: str  # module path of the block
    conv: str  # the branch's last convolution
    bn: Optional[str]  # the BatchNorm after it, where the branch ends there (ResNet's bn2), else None


class ChannelSelection(nn.Module):
    """Passes on the input channels ``index`` lists, in order (all of them when it lists all).

    The index is a non-persistent buffer: it comes from the model's spec, not its state dict."""

    def __init__(self, channels: int, index: Optional[Sequence[int]] = None):
        super().__init__()
        self.channels = channels
        index = list(range(channels)) if index is None else [int(i) for i in index]
        if any(not 0 <= i < channels for i in index) or any(a >= b for a, b in zip(index, index[1:])):
            raise ValueError(f"a selection of {channels} channels needs increasing indices below {channels}")
        self.kept = index
        self.register_buffer("index", torch.tensor(index, dtype=torch.long), persistent=False)
        self.whole = len(index) == channels

    def reset_parameters(self) -> None:
        """Refill the index (after ``to_empty``, which leaves buffers uninitialised)."""
        with torch.no_grad():
            self.index.copy_(torch.tensor(self.kept, dtype=torch.long))

    def forward(self, x):
        return x if self.whole else x.index_select(1, self.index)

    def extra_repr(self) -> str:
        return f"{self.channels} -> {self.index.numel()}"


def selection_index(current: Optional[List[int]], channels: int, width: Optional[int],
                    chosen: Optional[List[int]]) -> Optional[List[int]]:
    """A spec's new selection out of ``channels``: the indices surgery ``chosen``, else the first
    ``width`` of the ``current`` ones (the uniform baseline); None stands for every channel."""
    if chosen is not None:
        index = [int(i) for i in chosen]
    elif width is None:
        index = current
    else:
        index = list(range(channels) if current is None else current)[:width]
    return None if index is None or index == list(range(channels)) else index


def selections_with_widths(model: nn.Module, widths: Dict[str, int],
                           selections: Optional[Dict[str, List[int]]] = None) -> Dict[str, Optional[List[int]]]:
    """Every selection group's new index (:func:`selection_index`) for a model whose spec keeps
    its ``selections`` (PreResNet, DenseNet)."""
    return {g.name: selection_index(model.spec["selections"].get(g.name), model.get_submodule(g.select).channels,
                                    widths.get(g.name), (selections or {}).get(g.name))
            for g in model.channel_groups() if g.kind == "select"}


def conv_groups(model: nn.Module) -> List[ChannelGroup]:
    """The groups a producing convolution's filters stand for: what filter criteria prune."""
    groups = [g for g in model.channel_groups() if g.kind == "conv"]
    if not groups:
        raise PrunebenchError(
            f"{type(model).__name__} has no convolution whose output channels can be removed: its channel groups "
            f"are BatchNorm channel selections (DenseNet's concatenations), which network slimming prunes; use "
            f"method=slimming, a weight-level method (magnitude, snip), or a model with such convolutions "
            f"(DenseNet-BC's bottlenecks, VGG, ResNet, PreResNet)")
    return groups


def group_width(model: nn.Module, g: ChannelGroup) -> int:
    if g.kind == "conv":
        return model.get_submodule(g.conv).out_channels
    return model.get_submodule(g.select).index.numel()


def bn_channels(model: nn.Module, g: ChannelGroup) -> Optional[torch.Tensor]:
    """Which of the BatchNorm's channels the group's channels are: the selection's index, or None (all)."""
    return model.get_submodule(g.select).index if g.kind == "select" else None


def bn_weight(model: nn.Module, g: ChannelGroup) -> torch.Tensor:
    """The BatchNorm scale (gamma) of each of the group's channels."""
    w = model.get_submodule(g.bn).weight
    index = bn_channels(model, g)
    return w if index is None else w.index_select(0, index.to(w.device))


def parameter_axes(groups: List[ChannelGroup]) -> Dict[str, Dict[int, str]]:
    """Map each state-dict entry touched by a group to {axis: group name}. A selection group
    touches only its consumers: its BatchNorm stays whole, its index lives in the spec."""
    axes: Dict[str, Dict[int, str]] = {}
    for g in groups:
        if g.kind == "conv":
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
