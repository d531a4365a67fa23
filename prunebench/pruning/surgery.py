"""Physical channel removal: build the narrower model from its spec and copy the
kept slices of every tensor, along the axes the model's channel groups name. A
selection group (PreResNet, DenseNet) keeps its BatchNorm whole: its new index,
the old one at the kept positions, goes into the spec. Removed channels that
output a constant (zero filters) first have their contribution folded into their
consumers (:mod:`prunebench.pruning.constants`)."""
from typing import Dict

import torch
from torch import nn

from prunebench import models
from prunebench.pruning.constants import carried


def widths(model: nn.Module) -> Dict[str, int]:
    """Width of every prunable group (channels a selection passes on, for selection groups), by name."""
    return {g.name: models.group_width(model, g) for g in model.channel_groups()}


def prunable_weights(model: nn.Module) -> Dict[str, torch.Tensor]:
    """The weights weight-level methods prune: every convolution's and linear layer's."""
    return {f"{name}.weight": m.weight for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def prune(model: nn.Module, keep: Dict[str, torch.Tensor]) -> nn.Module:
    """A new, smaller model holding the channels ``keep`` lists (by group) and their weights;
    what removed constant channels fed their consumers is carried over. A model that cuts
    itself (``pruned``: torchvision models, through torch-pruning's graph) does so."""
    if hasattr(model, "pruned"):
        return model.pruned(keep)
    groups = model.channel_groups()
    selections = {g.name: models.bn_channels(model, g).cpu()[keep[g.name].cpu()].tolist()
                  for g in groups if g.kind == "select" and g.name in keep}
    kept = {g: len(idx) for g, idx in keep.items()}
    # a model whose pruned architecture differs beyond widths is cut under its own layers first and takes
    # that architecture when pruning is done (models.pruned_form: ThiNet's VGG-GAP)
    with_widths = getattr(model, "cut_spec_with_widths", model.spec_with_widths)
    spec = with_widths(kept, selections) if selections else with_widths(kept)
    axes = models.parameter_axes(groups)
    delta = carried(model, keep)
    state = {}
    for name, tensor in model.state_dict().items():
        if name in delta:
            tensor = tensor + delta[name].to(tensor.device, tensor.dtype)
        for axis, group in axes.get(name, {}).items():
            if group in keep:
                tensor = tensor.index_select(axis, keep[group].to(tensor.device))
        state[name] = tensor.clone()
    device = next(model.parameters()).device
    new = models.build(spec).to(device)
    wanted = new.state_dict().keys()  # a group cut to width 0 takes its layers with it (ResNet blocks)
    new.load_state_dict({k: v for k, v in state.items() if k in wanted})
    return new
