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

Channels inside a concatenation (DenseNet's dense layers, Huang et al. CVPR
2017) are a ``conv`` group without a BatchNorm of their own: every later layer
reads them, each through its own BatchNorm, as a slice of its input. Such a group
lists, aligned with its consumers, the BatchNorm in front of each (``norms``) and
where the channels start in its input (``offsets``); its members (:func:`members`)
are the shape of torch-pruning's ``index_mapping`` (Torch-Pruning
``dependency/index_mapping.py``): (module path, axis, offset), the length being
the group's width. Removing a channel slices the producing convolution's axis 0,
every norm's axis 0 and every consumer's axis 1 at that offset.

Most models describe their widths one way, ``channel_groups()``; a model may also
list ``filter_groups()``, its convolutions' outputs, where the two views cannot be
mixed (DenseNet: a selection and the filters it reads are the same channels of a
concatenation). :func:`family_groups` gives the groups of one family
(``FAMILIES``): ``channels``, every group of ``channel_groups()`` (what network
slimming prunes: BatchNorm channels, selections included), or ``filters``, the
``filter_groups()`` where a model lists them and every group otherwise: the widths
of a run of a filter criterion (``widths.json``, the uniform and guided
baselines). Methods that score convolution filters use :func:`conv_groups` (the
``filter_groups()``, else the ``conv`` groups); network slimming scores every
group through its BatchNorm (:func:`bn_channels`).
"""
from dataclasses import dataclass
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import nn

from prunebench.errors import PrunebenchError


FAMILIES = ("channels", "filters")


class Member(NamedTuple):
    """One tensor axis a group slices: channels ``offset`` .. ``offset + width`` of ``module``'s
    outputs (axis 0: a convolution, a BatchNorm) or inputs (axis 1: a consumer)."""
    module: str
    axis: int
    offset: int


@dataclass(frozen=True)
class ChannelGroup:
    name: str  # the key in widths and keep-index maps: conv3, block7, layer5_bn1
    conv: Optional[str]  # module path of the producing convolution; None for a selection group
    bn: Optional[str]  # module path of the BatchNorm whose output channels these are; None inside a concatenation
    consumers: Tuple[str, ...]  # module paths whose input channels are these channels
    select: Optional[str] = None  # module path of the ChannelSelection after ``bn`` (selection groups)
    norms: Tuple[str, ...] = ()  # concatenations: the BatchNorm in front of each consumer, reading these channels
    offsets: Tuple[int, ...] = ()  # concatenations: where these channels start in each consumer's input and norm
    outputs: Tuple[str, ...] = ()  # other modules whose outputs are these channels (the branches of a residual sum)

    def __post_init__(self):
        if (self.conv is None) == (self.select is None):
            raise ValueError(f"group {self.name}: give exactly one of a producing conv and a selection layer")
        if (self.norms or self.offsets) and (self.conv is None or self.bn is not None or
                                             not len(self.norms) == len(self.offsets) == len(self.consumers)):
            raise ValueError(f"group {self.name}: channels inside a concatenation come from a convolution, have no "
                             f"BatchNorm of their own, and give a norm and an offset for each consumer")

    @property
    def kind(self) -> str:
        return "conv" if self.conv is not None else "select"

    def offset(self, k: int) -> int:
        """Where the channels start in consumer ``k``'s input (and its norm's channels)."""
        return self.offsets[k] if self.offsets else 0

    def normalized(self) -> List[Tuple[str, int]]:
        """(BatchNorm path, offset) of every place the channels come out of a BatchNorm: the
        group's own, or each consumer's norm inside a concatenation (the nearest first)."""
        if self.norms:
            return list(zip(self.norms, self.offsets))
        return [(self.bn, 0)] if self.bn else []


def members(g: ChannelGroup) -> List[Member]:
    """The tensor axes removing one of the group's channels slices. A selection group's
    BatchNorm stays whole: its index lives in the spec."""
    out = []
    if g.kind == "conv":
        out.append(Member(g.conv, 0, 0))
        out += [Member(bn, 0, offset) for bn, offset in g.normalized()]
        out += [Member(m, 0, 0) for m in g.outputs]
    out += [Member(c, 1, g.offset(k)) for k, c in enumerate(g.consumers)]
    return out


def scale_channels(output: torch.Tensor, offset: int, factor: torch.Tensor) -> torch.Tensor:
    """``output`` (N, C, ...) with channels ``offset`` .. ``offset + len(factor)`` multiplied by
    ``factor``, the others as they are."""
    shape = (1, -1) + (1,) * (output.dim() - 2)
    if offset == 0 and factor.numel() == output.shape[1]:
        return output * factor.view(shape)
    ones = torch.ones(output.shape[1], dtype=factor.dtype, device=factor.device)
    full = torch.cat([ones[:offset], factor, ones[offset + factor.numel():]])
    return output * full.view(shape)


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
    """The groups a producing convolution's filters stand for: what filter criteria prune (the
    model's ``filter_groups()`` where it lists them, else the ``conv`` groups of ``channel_groups()``)."""
    if hasattr(model, "filter_groups"):
        groups = model.filter_groups()
    else:
        groups = [g for g in model.channel_groups() if g.kind == "conv"]
    if not groups:
        raise PrunebenchError(
            f"{type(model).__name__} has no convolution whose output channels can be removed; use method=slimming "
            f"(BatchNorm channels), a weight-level method (magnitude, snip), or a model with such convolutions")
    return groups


def family_groups(model: nn.Module, family: str) -> List[ChannelGroup]:
    """The groups that describe the widths of ``model`` for a method of ``family`` (``FAMILIES``):
    the model's own ``filter_groups()`` for ``filters`` where it lists them, else every group."""
    if family not in FAMILIES:
        raise ValueError(f"a group family is one of {', '.join(FAMILIES)}, got {family!r}")
    if family == "filters" and hasattr(model, "filter_groups"):
        return model.filter_groups()
    return model.channel_groups()


def groups_named(model: nn.Module, names) -> List[ChannelGroup]:
    """The groups of either family that ``names`` name, in the model's order; unknown names are an error."""
    wanted = set(names)
    groups = [g for g in model.channel_groups() if g.name in wanted]
    missing = wanted - {g.name for g in groups}
    if missing and hasattr(model, "filter_groups"):
        groups += [g for g in model.filter_groups() if g.name in missing]
        missing -= {g.name for g in groups}
    if missing:
        raise PrunebenchError(f"{type(model).__name__} has no channel groups {sorted(missing)}")
    return groups


def group_width(model: nn.Module, g: ChannelGroup) -> int:
    if g.kind == "conv":
        if hasattr(model, "unit_width") and model.unit_width(g) is not None:  # a library transformer's heads
            return model.unit_width(g)
        producer = model.get_submodule(g.conv)  # a convolution, or a linear layer (a transformer's MLP)
        return producer.out_features if isinstance(producer, nn.Linear) else producer.out_channels
    return model.get_submodule(g.select).index.numel()


def filter_rows(model: nn.Module, g: ChannelGroup, weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``weight`` (the producer's weight, or a tensor shaped like it) as one row per channel of the
    group: a filter; a head's q, k and v rows where the model lays them out otherwise (``unit_rows``)."""
    weight = model.get_submodule(g.conv).weight if weight is None else weight
    rows = model.unit_rows(g, weight) if hasattr(model, "unit_rows") else None
    return weight.flatten(1) if rows is None else rows


def bn_channels(model: nn.Module, g: ChannelGroup) -> Optional[torch.Tensor]:
    """Which of the BatchNorm's channels the group's channels are: the selection's index, or None (all)."""
    return model.get_submodule(g.select).index if g.kind == "select" else None


def bn_weight(model: nn.Module, g: ChannelGroup) -> torch.Tensor:
    """The BatchNorm scale (gamma) of each of the group's channels."""
    w = model.get_submodule(g.bn).weight
    index = bn_channels(model, g)
    return w if index is None else w.index_select(0, index.to(w.device))


def parameter_axes(groups: List[ChannelGroup]) -> Dict[str, Dict[int, List[Tuple[int, str]]]]:
    """Map each state-dict entry touched by a group to {axis: [(offset, group name), ...]} (one
    entry per group whose channels lie on that axis: several inside a concatenation)."""
    axes: Dict[str, Dict[int, List[Tuple[int, str]]]] = {}
    for g in groups:
        for m in members(g):
            if m.axis == 1:
                suffixes = ("weight",)
            elif m.module == g.conv:
                suffixes = ("weight", "bias")
            else:
                suffixes = ("weight", "bias", "running_mean", "running_var")
            for suffix in suffixes:
                axes.setdefault(f"{m.module}.{suffix}", {}).setdefault(m.axis, []).append((m.offset, g.name))
    return axes


@dataclass(frozen=True)
class ResidualBlock:
    """A residual block as block-level methods see it (SSS): removing it leaves its shortcut."""
    name: str  # the key of the block's scaling factor: block7, layer3_2
    bn: str  # module path of the BatchNorm that ends the residual branch (scaled before the addition)
    groups: Tuple[str, ...]  # the channel groups inside the block: width 0 for all removes the block
