"""A library's network (timm, torchvision) pruned through two views of its channels:

- the transformer units of :mod:`prunebench.models.units` (attention heads, MLP hidden
  units), cut by the layers' own rows and columns;
- where ``graph`` is on, the convolution-rooted groups of torch-pruning's dependency
  graph (:mod:`prunebench.models.depgraph`): a CNN's filters, a timm ViT's embedding
  width (the patch embedding's filters, carried through every LayerNorm, residual sum,
  the class token and the position embeddings).

A pruned model is its spec: what builds the unpruned network plus ``"keep": {group:
[indices into the unpruned model's channels]}``; building it replays the cuts (units
first, then the graph's), so ``prunebench.models.load`` restores it from ``arch.json``
and its weights in one call. The network is held as ``net``."""
import copy
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from prunebench.errors import PrunebenchError
from prunebench.models import depgraph, units
from prunebench.models.groups import ChannelGroup


class LibraryModel(nn.Module):
    """``net`` with ``keep`` replayed; ``spec`` is ``base`` plus ``keep``; ``size``: the side of the
    image the graph is traced on."""

    def __init__(self, net: nn.Module, base: Dict[str, Any], keep: Optional[Dict[str, List[int]]], size: int,
                 graph: bool = True):
        super().__init__()
        self.net = net
        keep = {g: [int(i) for i in idx] for g, idx in (keep or {}).items()}
        self.spec = {**base, "keep": keep}
        self._units = {u.name: u for u in units.find_units(self.net)}
        self.transformer = bool(self._units)  # structured methods must score heads and MLP units
        self.graph = graph
        self._size = size
        self._groups: Optional[List] = None
        unknown = sorted(g for g in keep if g not in self._units and not graph)
        if unknown:
            raise PrunebenchError(f"no prunable group {unknown} in {base['arch']} model {base['name']}")
        self._cut(keep)

    def _cut(self, keep: Dict[str, List[int]]) -> None:
        """Keep ``keep``'s channels (indices into each group's current channels): units, then the graph's."""
        for name, idx in keep.items():
            if name in self._units:
                units.cut(self.net, self._units[name], idx)
        graph_keep = {g: idx for g, idx in keep.items() if g not in self._units}
        if graph_keep:  # torch-pruning makes index tensors on the default device: the CPU, also for a meta model
            with torch.device("cpu"):
                depgraph.prune_groups(self.net, graph_keep, self._size, self.spec["num_classes"])
        self._groups = None

    def forward(self, x):
        return self.net(x)

    def graph_groups(self) -> List:
        if not self.graph:
            return []
        if self._groups is None:
            self._groups = depgraph.graph_groups(self.net, self._size, self.spec["num_classes"])
        return self._groups

    def channel_groups(self) -> List[ChannelGroup]:
        out = [ChannelGroup(u.name, f"net.{u.producer}", None, (f"net.{u.consumer}",)) for u in self._units.values()]
        return out + [ChannelGroup(g.name, f"net.{g.root}", f"net.{g.bn}" if g.bn else "",
                                   tuple(f"net.{p}" for p in g.inputs),
                                   outputs=tuple(f"net.{p}" for p in g.outputs if p not in (g.root, g.bn)))
                      for g in self.graph_groups()]

    def unit_width(self, g: ChannelGroup) -> Optional[int]:
        u = self._units.get(g.name)
        return units.width(self.net, u) if u is not None and u.kind == "heads" else None

    def unit_rows(self, g: ChannelGroup, weight: torch.Tensor) -> Optional[torch.Tensor]:
        u = self._units.get(g.name)
        return units.unit_rows(self.net, u, weight) if u is not None else None

    def widths(self) -> Dict[str, int]:
        out = {name: units.width(self.net, u) for name, u in self._units.items()}
        out.update({g.name: g.channels for g in self.graph_groups()})
        return out

    def original_indices(self, name: str, channels: int) -> List[int]:
        return self.spec["keep"].get(name, list(range(channels)))

    def spec_with_widths(self, widths: Dict[str, int], selections: Optional[Dict] = None) -> Dict[str, Any]:
        """The spec keeping the first ``widths[g]`` of each group's current channels."""
        keep = dict(self.spec["keep"])
        for name, n in self.widths().items():
            if name in widths and int(widths[name]) != n:
                keep[name] = self.original_indices(name, n)[:int(widths[name])]
        return {**self.spec, "keep": keep}

    def pruned(self, keep: Dict[str, torch.Tensor]) -> "LibraryModel":
        """Surgery: a new model keeping the channels ``keep`` lists (indices into each group's
        current channels) with their weights."""
        current = self.widths()
        unknown = sorted(set(keep) - set(current))
        if unknown:
            raise PrunebenchError(f"no prunable group {unknown} in {self.spec['arch']} model {self.spec['name']}")
        cuts = {}
        new_keep = dict(self.spec["keep"])
        for name, idx in keep.items():
            idx = [int(i) for i in (idx.tolist() if torch.is_tensor(idx) else idx)]
            if len(idx) != current[name]:
                if not idx:
                    raise PrunebenchError(f"group {name} would lose all {current[name]} channels; keep at least one")
                original = self.original_indices(name, current[name])
                new_keep[name] = [original[i] for i in idx]
                cuts[name] = idx
        new = copy.deepcopy(self)
        new._cut(cuts)
        new.spec = {**self.spec, "keep": new_keep}
        return new
