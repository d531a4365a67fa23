"""Your own model (``arch: factory``): ``model._target_`` names a function returning an
``nn.Module``, called as ``factory(in_channels=C, num_classes=K, **options)`` where the options
are the keys of its own schema (the function's ``Config`` attribute, a subclass of
:class:`prunebench.config.FactoryModelConfig`). Its channel groups come from torch-pruning's
dependency graph (:mod:`prunebench.models.depgraph`), traced on a ``TRACE_SIZE``-pixel image,
as for torchvision's models: every method and strategy applies to it. ``model.width`` scales
every group of the factory's model (its first ``round(width x channels)`` channels).

A pruned model is its spec, ``{"arch": "factory", "target", "in_channels", "num_classes",
"options", "keep"}``: building it calls the factory again and replays the pruning."""
from dataclasses import fields
from typing import Any, Dict, List, Optional

from torch import nn

from prunebench import plugins
from prunebench.config import FactoryModelConfig
from prunebench.errors import PrunebenchError
from prunebench.models.graph_model import GraphModel
from prunebench.models.torchvision_models import TRACE_SIZE, TorchvisionModel

BASE_KEYS = {f.name for f in fields(FactoryModelConfig)}


def schema_of(factory) -> type:
    """The factory's own schema: its ``Config`` attribute, or the base one (no options)."""
    schema = getattr(factory, "Config", FactoryModelConfig)
    if not (isinstance(schema, type) and issubclass(schema, FactoryModelConfig)):
        raise PrunebenchError(f"{factory.__module__}.{factory.__name__}.Config must be a dataclass subclassing "
                              f"prunebench.config.FactoryModelConfig")
    return schema


def spec_from_config(cfg, in_channels: int, num_classes: int) -> Dict[str, Any]:
    from omegaconf import OmegaConf

    if not cfg.get("_target_"):
        raise PrunebenchError("model.arch=factory needs model._target_: the import path of a function returning "
                              "an nn.Module (see docs/extending.md)")
    values = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    options = {k: v for k, v in values.items() if k not in BASE_KEYS}
    spec = {"arch": "factory", "target": cfg._target_, "in_channels": in_channels, "num_classes": num_classes,
            "options": options, "keep": {}}
    if cfg.width != 1.0:  # every channel group of the factory's model at that fraction of its channels
        model = FactoryModel(**{k: v for k, v in spec.items() if k != "arch"})
        spec = model.spec_with_widths({g.name: max(1, round(g.channels * cfg.width)) for g in model.graph_groups()})
    return spec


class FactoryModel(TorchvisionModel):
    """The module a factory returns, held as ``net``, pruned through its dependency graph."""

    def __init__(self, target: str, in_channels: int, num_classes: int, options: Optional[Dict[str, Any]] = None,
                 keep: Optional[Dict[str, List[int]]] = None):
        factory = plugins.load_path(target, "model._target_")
        options = dict(options or {})
        net = factory(in_channels=in_channels, num_classes=num_classes, **options)
        if not isinstance(net, nn.Module):
            raise PrunebenchError(f"model._target_={target} returned a {type(net).__name__}, not an nn.Module")
        GraphModel.__init__(self, net, {"arch": "factory", "target": target, "in_channels": in_channels,
                                        "num_classes": num_classes, "options": options}, keep, TRACE_SIZE,
                            in_channels)

    def torchvision_name(self) -> str:
        raise PrunebenchError("model.pretrained applies to torchvision's models, not to a model of your own")
