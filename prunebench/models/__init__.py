"""Model registry. A model is rebuilt from its spec, a JSON-able dict of its
architecture (widths included), so a pruned model needs no code of its own."""
import json
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import torch
from omegaconf import OmegaConf
from torch import nn

from prunebench import atomic, plugins
from prunebench.config import (CifarModernModelConfig, DenseNetConfig, FactoryModelConfig, ImageNetResNetConfig,
                               ImageNetVGGConfig,
                               ModelConfig, PreResNetConfig, ResNetConfig, TimmModelConfig, TorchvisionModelConfig,
                               VGGConfig, ViTModelConfig)
from prunebench.errors import PrunebenchError
from prunebench.models import (cifar_modern, densenet, factory, imagenet_resnet, imagenet_vgg, preresnet, resnet,
                               torchvision_models, vgg)
from prunebench.models import timm_models, torchvision_transformers, vit
from prunebench.models.groups import (FAMILIES, ChannelGroup, ChannelSelection, Member, Residual, ResidualBlock,
                                      bn_channels, bn_weight, conv_groups, family_groups, filter_rows, group_width,
                                      groups_named, members, parameter_axes)
from prunebench.models.pretrained import load_pretrained


class Arch(NamedTuple):
    spec_for: Any  # (depth, width, in_channels, num_classes, **options) -> spec; None: FROM_CONFIG builds it
    cls: Any  # the module class, built from a spec
    schema: Any  # its config schema (prunebench.config); the options it takes are the fields beyond ModelConfig's


ARCHS: Dict[str, Arch] = {
    "vgg": Arch(vgg.spec_for, vgg.VGG, VGGConfig),
    "resnet": Arch(resnet.spec_for, resnet.ResNet, ResNetConfig),
    "preresnet": Arch(preresnet.spec_for, preresnet.PreResNet, PreResNetConfig),
    "densenet": Arch(densenet.spec_for, densenet.DenseNet, DenseNetConfig),
    "imagenet_vgg": Arch(None, imagenet_vgg.ImageNetVGG, ImageNetVGGConfig),
    "imagenet_resnet": Arch(None, imagenet_resnet.ImageNetResNet, ImageNetResNetConfig),
    "torchvision": Arch(None, torchvision_models.TorchvisionModel, TorchvisionModelConfig),
    "factory": Arch(None, factory.FactoryModel, FactoryModelConfig),
    "vit": Arch(None, vit.ViT, ViTModelConfig),
    "timm": Arch(None, timm_models.TimmModel, TimmModelConfig),
    "torchvision_transformer": Arch(None, torchvision_transformers.TorchvisionTransformer, TorchvisionModelConfig),
    "cifar_modern": Arch(None, cifar_modern.CifarModernModel, CifarModernModelConfig),
}
# archs whose spec needs more of the model config than depth, width and the options of its schema
FROM_CONFIG: Dict[str, Callable] = {
    "imagenet_vgg": imagenet_vgg.spec_from_config,
    "imagenet_resnet": imagenet_resnet.spec_from_config,
    "torchvision": torchvision_transformers.spec_from_config,  # a transformer's MLP units, else the graph
    "factory": factory.spec_from_config,
    "vit": vit.spec_from_config,
    "timm": timm_models.spec_from_config,
    "cifar_modern": cifar_modern.spec_from_config,
}
# FROM_CONFIG archs whose spec depends on the image size (a ViT's position embeddings)
SIZED = ("vit", "timm", "torchvision")
BASE_KEYS = {f.name for f in fields(ModelConfig)}


def options_of(arch: str) -> Tuple[str, ...]:
    """The settings an arch takes besides name, arch, depth and width."""
    return tuple(f.name for f in fields(ARCHS[arch].schema) if f.name not in BASE_KEYS)


def schema_of(model_cfg) -> Any:
    """The schema of a model node: its arch's, or (``_target_``) its factory's."""
    if model_cfg.get("_target_"):
        return factory.schema_of(plugins.load_path(model_cfg._target_, "model._target_"))
    arch = model_cfg.get("arch")
    if arch not in ARCHS:
        raise PrunebenchError(f"unknown model.arch {arch!r}; known: {', '.join(sorted(ARCHS))} (or a model of your "
                              f"own: model._target_=package.module.function, see docs/extending.md)")
    return ARCHS[arch].schema

__all__ = ["ARCHS", "FAMILIES", "ChannelGroup", "ChannelSelection", "Member", "Residual", "ResidualBlock",
           "bn_channels", "bn_weight", "conv_groups", "family_groups", "filter_rows", "group_width", "groups_named",
           "members",
           "load_pretrained", "options_of", "parameter_axes", "schema_of", "spec_from_config", "build", "save", "load", "load_spec", "load_state",
           "pruned_form"]


def spec_from_config(model_cfg, in_channels: int, num_classes: int,
                     image_size: Optional[int] = None) -> Dict[str, Any]:
    """The spec of the unpruned model a (typed) model node describes."""
    if model_cfg.arch not in ARCHS:
        raise PrunebenchError(f"unknown model arch {model_cfg.arch!r}; known: {', '.join(sorted(ARCHS))}")
    if model_cfg.arch in SIZED:
        return FROM_CONFIG[model_cfg.arch](model_cfg, in_channels, num_classes, image_size)
    if model_cfg.arch in FROM_CONFIG:
        return FROM_CONFIG[model_cfg.arch](model_cfg, in_channels, num_classes)
    arch = ARCHS[model_cfg.arch]
    values = OmegaConf.to_container(model_cfg, resolve=True, enum_to_str=True)
    options = {k: values[k] for k in options_of(model_cfg.arch)}
    try:
        return arch.spec_for(model_cfg.depth, model_cfg.width, in_channels, num_classes, **options)
    except ValueError as e:
        raise PrunebenchError(f"model {model_cfg.get('name', model_cfg.arch)}: {e}") from e


def build(spec: Dict[str, Any]) -> nn.Module:
    cls = ARCHS[spec["arch"]].cls
    return cls(**{k: v for k, v in spec.items() if k != "arch"})


def pruned_form(model: nn.Module, fresh: Callable[[Dict[str, Any]], nn.Module]) -> nn.Module:
    """A pruned model in its final architecture, where that differs beyond widths from the one
    surgery cut (``model.final_spec()``; ThiNet's VGG-GAP, whose fc head gives way to global
    average pooling and a new linear layer): ``fresh(spec)`` holding every tensor the two share,
    the new layers at their initialisation. Any other model is returned as it is."""
    final = model.final_spec() if hasattr(model, "final_spec") else None
    if final is None:
        return model
    new = fresh(final)
    own = new.state_dict()
    shared = {k: v for k, v in model.state_dict().items() if k in own and own[k].shape == v.shape}
    new.load_state_dict({**own, **shared})
    return new


def save(model: nn.Module, folder: Path) -> None:
    """Write ``arch.json`` (the spec) and ``model.pt`` (the state dict)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic.write_text(folder / "arch.json", json.dumps(model.spec, indent=1))
    atomic.save(model.state_dict(), folder / "model.pt")


def load_spec(folder: Path) -> Dict[str, Any]:
    return atomic.read_json(Path(folder) / "arch.json")


def load_state(folder: Path, map_location="cpu") -> Dict[str, torch.Tensor]:
    """The state dict in ``folder/model.pt``, read with weights_only=True."""
    return atomic.load(Path(folder) / "model.pt", map_location=map_location)


def load(folder: Path, map_location="cpu") -> nn.Module:
    """Rebuild a (pruned or not) model saved by :func:`save`."""
    folder = Path(folder)
    model = build(load_spec(folder))
    model.load_state_dict(load_state(folder, map_location))
    return model
