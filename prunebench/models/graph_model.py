"""A model pruned through torch-pruning's dependency graph (:mod:`prunebench.models.depgraph`):
the unpruned network ``net`` rebuilt from its spec, then the pruning replayed on it.

The spec holds what builds the unpruned network plus ``"keep": {group: [channel indices of
the unpruned model]}``, so ``prunebench.models.load`` restores a pruned model from
``arch.json`` and its weights in one call (no pickled module). The network is held as
``net`` (its parameter names prefixed by ``net.``). Subclasses build the network:
torchvision's models, the CIFAR ResNets and MobileNetV2 (:mod:`.cifar_modern`)."""
import copy
import json
from contextlib import contextmanager
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from prunebench.models import depgraph
from prunebench.models.groups import ChannelGroup


@contextmanager
def materialized(net: nn.Module):
    """``net`` on the CPU for a traced forward when it lives on the meta device (a shell built for
    counting: :mod:`prunebench.measure`), back on the meta device after. Its weights have no values
    either way; tracing needs shapes only, and a CPU forward is many times faster than a meta one."""
    meta = any(p.is_meta for p in net.parameters()) or any(b.is_meta for b in net.buffers())
    if not meta:
        yield
        return
    net.to_empty(device="cpu")
    try:
        yield
    finally:
        net.to("meta")


_TRACED: Dict[str, List] = {}  # spec (JSON) -> its graph groups: one trace per architecture in a process
_TRACED_MAX = 64


class GraphModel(nn.Module):
    """``net`` with the channels of ``keep`` kept; ``spec`` is ``base`` plus ``keep``. ``size``: the
    side of the (3-channel unless ``in_channels``) image the graph is traced on (no effect on results)."""

    def __init__(self, net: nn.Module, base: Dict[str, Any], keep: Optional[Dict[str, List[int]]], size: int,
                 in_channels: int = 3):
        super().__init__()
        self.net = net
        keep = {g: [int(i) for i in idx] for g, idx in (keep or {}).items()}
        self.spec = {**base, "keep": keep}
        self._size, self._in = size, in_channels
        self._groups: Optional[List] = None
        if keep:
            with materialized(self.net):
                depgraph.prune_groups(self.net, keep, self._size, base["num_classes"], self._in)

    def forward(self, x):
        return self.net(x)

    def graph_groups(self) -> List:
        if self._groups is None:  # traced once per architecture (a model's structure never changes in place)
            key = json.dumps(self.spec, sort_keys=True)
            if key not in _TRACED:
                if len(_TRACED) >= _TRACED_MAX:
                    _TRACED.pop(next(iter(_TRACED)))
                with materialized(self.net):
                    _TRACED[key] = depgraph.graph_groups(self.net, self._size, self.spec["num_classes"],
                                                         in_channels=self._in)
            self._groups = _TRACED[key]
        return self._groups

    def channel_groups(self) -> List[ChannelGroup]:
        return [ChannelGroup(g.name, f"net.{g.root}", f"net.{g.bn}" if g.bn else "",
                             tuple(f"net.{p}" for p in g.inputs),
                             outputs=tuple(f"net.{p}" for p in g.outputs if p not in (g.root, g.bn)))
                for g in self.graph_groups()]

    def original_indices(self, name: str, channels: int) -> List[int]:
        """The unpruned model's indices of a group's current channels."""
        return self.spec["keep"].get(name, list(range(channels)))

    def spec_with_widths(self, widths: Dict[str, int]) -> Dict[str, Any]:
        """The spec keeping the first ``widths[g]`` of each group's current channels."""
        keep = dict(self.spec["keep"])
        for g in self.graph_groups():
            if g.name in widths and widths[g.name] != g.channels:
                keep[g.name] = self.original_indices(g.name, g.channels)[:int(widths[g.name])]
        return {**self.spec, "keep": keep}

    def pruned(self, keep: Dict[str, torch.Tensor]) -> "GraphModel":
        """Surgery: a new model keeping the channels ``keep`` lists (indices into each group's
        current channels) with their weights, cut through the dependency graph."""
        channels = {g.name: g.channels for g in self.graph_groups()}
        new_keep = dict(self.spec["keep"])
        for name, idx in keep.items():
            original = self.original_indices(name, channels[name])
            if len(idx) != channels[name]:
                new_keep[name] = [original[int(i)] for i in idx]
        new = copy.deepcopy(self)
        depgraph.prune_groups(new.net, {g: i for g, i in keep.items() if len(i) != channels[g]}, self._size,
                              self.spec["num_classes"], self._in)
        new.spec = {**self.spec, "keep": new_keep}
        new._groups = None
        return new

    def width_counter(self, input_shape, measure: str = "flops"):
        """widths -> FLOPs or parameters, without rebuilding the model (the uniform search)."""
        groups = self.graph_groups()
        with materialized(self.net):
            return depgraph.width_counter(self.net, input_shape, groups, measure)
