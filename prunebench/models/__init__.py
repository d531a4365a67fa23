"""Model registry. A model is rebuilt from its spec, a JSON-able dict of its
architecture (widths included), so a pruned model needs no code of its own."""
import json
from pathlib import Path
from typing import Any, Callable, Dict

import torch
from torch import nn

from prunebench import atomic
from prunebench.models import resnet, vgg
from prunebench.models.groups import ChannelGroup, parameter_axes

# arch name -> (spec from depth/width, class built from a spec)
ARCHS: Dict[str, Any] = {
    "vgg": (vgg.spec_for, vgg.VGG),
    "resnet": (resnet.spec_for, resnet.ResNet),
}

__all__ = ["ARCHS", "ChannelGroup", "parameter_axes", "spec_from_config", "build", "save", "load", "load_spec", "load_state"]


def spec_from_config(model_cfg, in_channels: int, num_classes: int) -> Dict[str, Any]:
    if model_cfg.arch not in ARCHS:
        raise ValueError(f"unknown model arch {model_cfg.arch!r}; known: {', '.join(sorted(ARCHS))}")
    spec_for: Callable = ARCHS[model_cfg.arch][0]
    return spec_for(model_cfg.depth, model_cfg.width, in_channels, num_classes)


def build(spec: Dict[str, Any]) -> nn.Module:
    cls = ARCHS[spec["arch"]][1]
    return cls(**{k: v for k, v in spec.items() if k != "arch"})


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
