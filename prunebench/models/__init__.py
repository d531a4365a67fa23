"""Model registry. A model is rebuilt from its spec, a JSON-able dict of its
architecture (widths included), so a pruned model needs no code of its own."""
import json
from pathlib import Path
from typing import Any, Callable, Dict

import torch
from torch import nn

from prunebench.models import imagenet_resnet, imagenet_vgg, resnet, torchvision_models, vgg
from prunebench.models.groups import ChannelGroup, ResidualBlock, parameter_axes
from prunebench.models.pretrained import load_pretrained

# arch name -> (spec from depth/width, class built from a spec)
ARCHS: Dict[str, Any] = {
    "vgg": (vgg.spec_for, vgg.VGG),
    "resnet": (resnet.spec_for, resnet.ResNet),
    "imagenet_vgg": (imagenet_vgg.spec_for, imagenet_vgg.ImageNetVGG),
    "imagenet_resnet": (imagenet_resnet.spec_for, imagenet_resnet.ImageNetResNet),
    "torchvision": (None, torchvision_models.TorchvisionModel),
}
# archs whose spec needs more of the model config than depth and width
FROM_CONFIG: Dict[str, Callable] = {
    "imagenet_vgg": imagenet_vgg.spec_from_config,
    "imagenet_resnet": imagenet_resnet.spec_from_config,
    "torchvision": torchvision_models.spec_from_config,
}

__all__ = ["ARCHS", "ChannelGroup", "ResidualBlock", "load_pretrained", "parameter_axes", "spec_from_config", "build", "save", "load", "load_spec"]


def spec_from_config(model_cfg, in_channels: int, num_classes: int) -> Dict[str, Any]:
    if model_cfg.arch not in ARCHS:
        raise ValueError(f"unknown model arch {model_cfg.arch!r}; known: {', '.join(sorted(ARCHS))}")
    if model_cfg.arch in FROM_CONFIG:
        return FROM_CONFIG[model_cfg.arch](model_cfg, in_channels, num_classes)
    spec_for: Callable = ARCHS[model_cfg.arch][0]
    return spec_for(model_cfg.depth, model_cfg.width, in_channels, num_classes)


def build(spec: Dict[str, Any]) -> nn.Module:
    cls = ARCHS[spec["arch"]][1]
    return cls(**{k: v for k, v in spec.items() if k != "arch"})


def save(model: nn.Module, folder: Path) -> None:
    """Write ``arch.json`` (the spec) and ``model.pt`` (the state dict)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "arch.json").write_text(json.dumps(model.spec, indent=1))
    torch.save(model.state_dict(), folder / "model.pt")


def load_spec(folder: Path) -> Dict[str, Any]:
    return json.loads((Path(folder) / "arch.json").read_text())


def load(folder: Path, map_location="cpu") -> nn.Module:
    """Rebuild a (pruned or not) model saved by :func:`save`."""
    folder = Path(folder)
    model = build(load_spec(folder))
    model.load_state_dict(torch.load(folder / "model.pt", map_location=map_location, weights_only=True))
    return model
