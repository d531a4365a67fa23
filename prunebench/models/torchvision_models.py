"""Any torchvision classification model (``model=torchvision model.name=NAME``),
pruned through torch-pruning's dependency graph (:mod:`prunebench.models.depgraph`).

A pruned model is its spec: ``{"arch": "torchvision", "name", "num_classes",
"keep": {group: [channel indices of the unpruned model]}}``; building it rebuilds
torchvision's unpruned model and replays the pruning, so ``prunebench.models.load``
restores a pruned model in one call. The torchvision model is held as ``net`` (its
parameter names prefixed by ``net.``)."""
from typing import Any, Dict, List, Optional

from prunebench.errors import PrunebenchError
from prunebench.models.graph_model import GraphModel


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


class TorchvisionModel(GraphModel):
    def __init__(self, name: str, num_classes: int, keep: Optional[Dict[str, List[int]]] = None,
                 width_mult: Optional[float] = None):
        import torchvision

        if name not in torchvision.models.list_models(module=torchvision.models):
            raise PrunebenchError(f"unknown torchvision classification model {name!r}; known: "
                                  f"{', '.join(torchvision.models.list_models(module=torchvision.models))}")
        widen = {} if width_mult is None else {"width_mult": float(width_mult)}  # mobilenet_v2 width 0.75
        net = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **widen)
        if hasattr(net, "aux_logits") and net.aux_logits:  # googlenet / inception: one output
            net.aux_logits = False
            for aux in ("aux1", "aux2", "AuxLogits"):
                if hasattr(net, aux):
                    setattr(net, aux, None)
        super().__init__(net, {"arch": "torchvision", "name": name, "num_classes": num_classes, **widen}, keep,
                         trace_size(name))

    def torchvision_name(self) -> str:
        return self.spec["name"]

    def load_torchvision_state_dict(self, state: Dict) -> None:
        self.net.load_state_dict(state)
