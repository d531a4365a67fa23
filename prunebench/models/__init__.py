"""Model registry. A model is rebuilt from its spec, a JSON-able dict of its
architecture (widths included), so a pruned model needs no code of its own."""
import json
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable, Dict, NamedTuple, Tuple

import torch
from torch import nn

from prunebench import atomic
from prunebench.errors import PrunebenchError
from prunebench.models import cifar_modern, densenet, imagenet_resnet, imagenet_vgg, preresnet, resnet, torchvision_models, vgg
from prunebench.models.groups import (FAMILIES, ChannelGroup, ChannelSelection, Member, Residual, ResidualBlock,
                                      bn_channels, bn_weight, conv_groups, family_groups, group_width, groups_named,
                                      members, parameter_axes)
from prunebench.models.pretrained import load_pretrained


class Arch(NamedTuple):
    spec_for: Any  # (depth, width, in_channels, num_classes, **options) -> spec; None: FROM_CONFIG builds it
    cls: Any  # the module class, built from a spec
    options: Tuple[str, ...]  # the ModelConfig fields it takes besides depth and width


ARCHS: Dict[str, Arch] = {
    "vgg": Arch(vgg.spec_for, vgg.VGG, ("bn_init", "classifier")),
    "resnet": Arch(resnet.spec_for, resnet.ResNet, ("bn_init", "shortcut")),
    "preresnet": Arch(preresnet.spec_for, preresnet.PreResNet, ("bn_init", "block")),
    "densenet": Arch(densenet.spec_for, densenet.DenseNet, ("bn_init", "block", "growth", "compression")),
    "imagenet_vgg": Arch(None, imagenet_vgg.ImageNetVGG, ()),
    "imagenet_resnet": Arch(None, imagenet_resnet.ImageNetResNet, ()),
    "torchvision": Arch(None, torchvision_models.TorchvisionModel, ()),
    "cifar_modern": Arch(None, cifar_modern.CifarModernModel, ()),
}
# archs whose spec needs more of the model config than depth, width and the options above
FROM_CONFIG: Dict[str, Callable] = {
    "imagenet_vgg": imagenet_vgg.spec_from_config,
    "imagenet_resnet": imagenet_resnet.spec_from_config,
    "torchvision": torchvision_models.spec_from_config,
    "cifar_modern": cifar_modern.spec_from_config,
}

__all__ = ["ARCHS", "FAMILIES", "ChannelGroup", "ChannelSelection", "Member", "Residual", "ResidualBlock",
           "bn_channels", "bn_weight", "conv_groups", "family_groups", "group_width", "groups_named", "members",
           "load_pretrained", "parameter_axes", "spec_from_config", "build", "save", "load", "load_spec", "load_state",
           "pruned_form"]


def spec_from_config(model_cfg, in_channels: int, num_classes: int) -> Dict[str, Any]:
    from prunebench.config import ModelConfig  # the config module imports nothing of ours

    if model_cfg.arch not in ARCHS:
        raise PrunebenchError(f"unknown model arch {model_cfg.arch!r}; known: {', '.join(sorted(ARCHS))}")
    if model_cfg.arch in FROM_CONFIG:
        return FROM_CONFIG[model_cfg.arch](model_cfg, in_channels, num_classes)
    arch = ARCHS[model_cfg.arch]
    defaults = {f.name: f.default for f in fields(ModelConfig) if f.name not in ("name", "arch", "depth", "width")}
    foreign = [k for k, v in defaults.items() if k not in arch.options and model_cfg.get(k, v) != v]
    if foreign:
        raise PrunebenchError(f"model.{', model.'.join(foreign)} does not apply to arch {model_cfg.arch!r} (it takes "
                              f"{', '.join(arch.options)}); remove the override")
    options = {k: model_cfg.get(k, defaults[k]) for k in arch.options}
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
