"""Any timm model (``model=timm model.name=deit_tiny_patch16_224``; timm is an optional
extra: ``pip install prunebench[timm]``), random-initialised, pruned through two views:

- the transformer units of :mod:`prunebench.models.units` (attention heads, MLP hidden
  units), cut by the module's own rows and columns;
- the convolution-rooted groups of torch-pruning's dependency graph
  (:mod:`prunebench.models.depgraph`): a CNN's filters, and on a ViT the patch
  embedding's filters, i.e. the embedding width (the graph carries it through every
  LayerNorm, residual sum, the class token and the position embeddings).

A pruned model is its spec, ``{"arch": "timm", "name", "num_classes", "image_size",
"options", "keep": {group: [indices into the unpruned model's channels]}}``; building it
creates timm's model and replays the cuts (units first, then the graph's), so
``prunebench.models.load`` restores it in one call. ``options`` go to
``timm.create_model`` (``depth``, ``embed_dim``, ``num_heads``, ``patch_size`` ...). A
transformer's attention runs unfused (``fused_attn = False``: the same arithmetic, and
torch's FLOP counter sees its matrix products)."""
import copy
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from prunebench.errors import PrunebenchError
from prunebench.models import depgraph, units
from prunebench.models.groups import ChannelGroup


def _timm():
    try:
        import timm
    except ImportError as e:
        raise PrunebenchError("model=timm needs timm: pip install timm (or pip install prunebench[timm])") from e
    return timm


def spec_from_config(cfg, in_channels: int, num_classes: int, image_size: Optional[int] = None) -> Dict[str, Any]:
    if cfg.name == "timm":
        raise PrunebenchError("model=timm needs the timm model's name: model.name=deit_tiny_patch16_224 "
                              "(any of timm.list_models())")
    if cfg.width != 1.0:
        raise PrunebenchError("model.width does not apply to timm models; give their widths in model.options "
                              "(e.g. model.options={embed_dim:96}) or leave it at 1.0")
    if in_channels != 3:
        raise PrunebenchError(f"timm models here take RGB images; this data set has {in_channels} channels")
    return {"arch": "timm", "name": cfg.name, "num_classes": num_classes, "image_size": image_size,
            "options": dict(cfg.options), "keep": {}}


def create(name: str, num_classes: int, image_size: Optional[int], options: Dict[str, Any]) -> nn.Module:
    timm = _timm()
    if name not in timm.list_models():
        raise PrunebenchError(f"unknown timm model {name!r}; see timm.list_models() for the names")
    kwargs = {"pretrained": False, "num_classes": num_classes, **options}
    try:  # transformers size their position embeddings from the image; CNNs take no img_size
        net = timm.create_model(name, **({"img_size": image_size} if image_size and "img_size" not in options
                                         else {}), **kwargs)
    except TypeError:
        net = timm.create_model(name, **kwargs)
    for m in net.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False
    return net


class TimmModel(nn.Module):
    def __init__(self, name: str, num_classes: int, image_size: Optional[int] = None,
                 options: Optional[Dict[str, Any]] = None, keep: Optional[Dict[str, List[int]]] = None):
        super().__init__()
        options = dict(options or {})
        self.net = create(name, num_classes, image_size, options)
        keep = {g: [int(i) for i in idx] for g, idx in (keep or {}).items()}
        self.spec = {"arch": "timm", "name": name, "num_classes": num_classes, "image_size": image_size,
                     "options": options, "keep": keep}
        self._units = {u.name: u for u in units.find_units(self.net)}
        self.transformer = bool(self._units)  # structured methods must score heads and MLP units
        self._size = image_size or 224
        self._groups: Optional[List] = None
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

    def pruned(self, keep: Dict[str, torch.Tensor]) -> "TimmModel":
        """Surgery: a new model keeping the channels ``keep`` lists (indices into each group's
        current channels) with their weights."""
        current = self.widths()
        unknown = sorted(set(keep) - set(current))
        if unknown:
            raise PrunebenchError(f"no prunable group {unknown} in timm model {self.spec['name']}")
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
