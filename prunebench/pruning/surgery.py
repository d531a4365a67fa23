"""Physical channel removal: build the narrower model from its spec and copy the
kept slices of every tensor, along the axes the model's channel groups name."""
from typing import Dict

import torch
from torch import nn

from prunebench import models


def widths(model: nn.Module) -> Dict[str, int]:
    """Width of every prunable layer, by group name."""
    return {g.name: model.get_submodule(g.conv).out_channels for g in model.channel_groups()}


def prunable_weights(model: nn.Module) -> Dict[str, torch.Tensor]:
    """The weights weight-level methods prune: every convolution's and linear layer's."""
    return {f"{name}.weight": m.weight for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def prune(model: nn.Module, keep: Dict[str, torch.Tensor]) -> nn.Module:
    """A new, smaller model holding the channels ``keep`` lists (by group) and their weights.
    A model that cuts itself (``pruned``: torchvision models, through torch-pruning's graph) does so."""
    if hasattr(model, "pruned"):
        return model.pruned(keep)
    groups = model.channel_groups()
    spec = model.spec_with_widths({g: len(idx) for g, idx in keep.items()})
    axes = models.parameter_axes(groups)
    state = {}
    for name, tensor in model.state_dict().items():
        for axis, group in axes.get(name, {}).items():
            if group in keep:
                tensor = tensor.index_select(axis, keep[group].to(tensor.device))
        state[name] = tensor.clone()
    device = next(model.parameters()).device
    new = models.build(spec).to(device)
    wanted = new.state_dict().keys()  # a group cut to width 0 takes its layers with it (ResNet blocks)
    new.load_state_dict({k: v for k, v in state.items() if k in wanted})
    return new
