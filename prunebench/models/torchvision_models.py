"""Any torchvision classification model (``model=torchvision model.name=NAME``),
pruned through torch-pruning's dependency graph (:mod:`prunebench.models.depgraph`).

A pruned model is its spec: ``{"arch": "torchvision", "name", "num_classes",
"keep": {group: [channel indices of the unpruned model]}}``; building it rebuilds
torchvision's unpruned model and replays the pruning, so ``prunebench.models.load``
restores a pruned model in one call. The torchvision model is held as ``net`` (its
parameter names prefixed by ``net.``)."""
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from prunebench.errors import PrunebenchError
from prunebench.models import depgraph
from prunebench.models.groups import ChannelGroup


WIDTH_MULT_MODELS = ("mobilenet_v2", "mobilenet_v3")  # torchvision builders taking width_mult (model.width)
TRACE_SIZE = 64  # pixels: the side of the image the dependency graph is traced on (no effect on results)


def spec_from_config(cfg, in_channels: int, num_classes: int) -> Dict[str, Any]:
    if cfg.name == "torchvision":
        raise PrunebenchError("model=torchvision needs the torchvision model's name: model.name=mobilenet_v2 "
                              "(any of torchvision.models.list_models(module=torchvision.models))")
    if in_channels != 3:
        raise PrunebenchError(f"torchvision models take RGB images; this data set has {in_channels} channels")
    if cfg.width != 1.0:
        if not cfg.name.startswith(WIDTH_MULT_MODELS):
            raise PrunebenchError(f"model.width applies to the torchvision models with a width multiplier "
                                  f"({', '.join(WIDTH_MULT_MODELS)}*), not {cfg.name}; leave it at 1.0")
        if cfg.get("pretrained", False):
            raise PrunebenchError(f"model.width={cfg.width}: torchvision has no pretrained weights for {cfg.name} at "
                                  f"another width; set model.pretrained=false or model.width=1.0")
        return {"arch": "torchvision", "name": cfg.name, "num_classes": num_classes, "keep": {},
                "width_mult": float(cfg.width)}
    return {"arch": "torchvision", "name": cfg.name, "num_classes": num_classes, "keep": {}}


def trace_size(name: str) -> int:
    """The tracing image side: TRACE_SIZE, or more where the model needs more (inception_v3)."""
    import torchvision

    try:
        meta = torchvision.models.get_model_weights(name).DEFAULT.meta
    except Exception:  # a model without registered weights
        return TRACE_SIZE
    return max(TRACE_SIZE, *meta.get("min_size", (0, 0)))


class TorchvisionModel(nn.Module):
    def __init__(self, name: str, num_classes: int, keep: Optional[Dict[str, List[int]]] = None,
                 width_mult: Optional[float] = None):
        super().__init__()
        import torchvision

        if name not in torchvision.models.list_models(module=torchvision.models):
            raise PrunebenchError(f"unknown torchvision classification model {name!r}; known: "
                                  f"{', '.join(torchvision.models.list_models(module=torchvision.models))}")
        widen = {} if width_mult is None else {"width_mult": float(width_mult)}  # mobilenet_v2 width 0.75
        self.net = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **widen)
        if hasattr(self.net, "aux_logits") and self.net.aux_logits:  # googlenet / inception: one output
            self.net.aux_logits = False
            for aux in ("aux1", "aux2", "AuxLogits"):
                if hasattr(self.net, aux):
                    setattr(self.net, aux, None)
        keep = {g: [int(i) for i in idx] for g, idx in (keep or {}).items()}
        self.spec = {"arch": "torchvision", "name": name, "num_classes": num_classes, "keep": keep, **widen}
        self._size = trace_size(name)
        self._channels = 3
        self._groups: Optional[List] = None
        if keep:
            depgraph.prune_groups(self.net, keep, self._size, num_classes)

    def forward(self, x):
        return self.net(x)

    def graph_groups(self) -> List:
        if self._groups is None:  # traced once per model (its structure never changes in place)
            self._groups = depgraph.graph_groups(self.net, self._size, self.spec["num_classes"],
                                                 in_channels=self._channels)
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

    def pruned(self, keep: Dict[str, torch.Tensor]) -> "TorchvisionModel":
        """Surgery: a new model keeping the channels ``keep`` lists (indices into each group's
        current channels) with their weights, cut through the dependency graph."""
        import copy

        channels = {g.name: g.channels for g in self.graph_groups()}
        new_keep = dict(self.spec["keep"])
        for name, idx in keep.items():
            original = self.original_indices(name, channels[name])
            if len(idx) != channels[name]:
                new_keep[name] = [original[int(i)] for i in idx]
        new = copy.deepcopy(self)
        depgraph.prune_groups(new.net, {g: i for g, i in keep.items() if len(i) != channels[g]}, self._size,
                              self.spec["num_classes"], self._channels)
        new.spec = {**self.spec, "keep": new_keep}
        new._groups = None
        return new

    def width_counter(self, input_shape, measure: str = "flops"):
        """widths -> FLOPs or parameters, without rebuilding the model (the uniform search)."""
        return depgraph.width_counter(self.net, input_shape, self.graph_groups(), measure)

    def torchvision_name(self) -> str:
        return self.spec["name"]

    def load_torchvision_state_dict(self, state: Dict) -> None:
        self.net.load_state_dict(state)
