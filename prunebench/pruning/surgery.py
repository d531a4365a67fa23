"""Physical channel removal: build the narrower model from its spec and copy the
kept slices of every tensor, along the axes the model's channel groups name. A
selection group (PreResNet, DenseNet) keeps its BatchNorm whole: its new index,
the old one at the kept positions, goes into the spec. A group inside a
concatenation (DenseNet's filters) is a slice of its norms' and consumers' axes,
at its offset. Removed channels that
output a constant (zero filters) first have their contribution folded into their
consumers (:mod:`prunebench.pruning.constants`)."""
from typing import Dict, List, Tuple

import torch
from torch import nn

from prunebench import models
from prunebench.pruning.constants import carried


def widths(model: nn.Module, family: str = "channels") -> Dict[str, int]:
    """Width of every group of one family (:data:`prunebench.models.groups.FAMILIES`; channels a
    selection passes on, for selection groups), by name."""
    return {g.name: models.group_width(model, g) for g in models.family_groups(model, family)}


def is_layer(module: nn.Module) -> bool:
    """A convolution, a linear layer, or a model's own layer that counts its FLOPs (``own_flops``:
    a ViT's per-head q/k/v and projection)."""
    return isinstance(module, (nn.Conv2d, nn.Linear)) or hasattr(module, "own_flops")


def prunable_weights(model: nn.Module) -> Dict[str, torch.Tensor]:
    """The weights weight-level methods prune: every layer's (:func:`is_layer`)."""
    return {f"{name}.weight": m.weight for name, m in model.named_modules() if is_layer(m)}


def kept_positions(size: int, parts: List[Tuple[int, str]], keep: Dict[str, torch.Tensor],
                   width: Dict[str, int]) -> torch.Tensor:
    """The positions an axis of ``size`` keeps: each group's kept channels at its offset (in
    ``keep``'s order), every position outside the groups' slices."""
    pieces, at = [], 0
    for offset, g in sorted(parts):
        pieces += [torch.arange(at, offset), offset + keep[g].cpu().long()]
        at = offset + width[g]
    pieces.append(torch.arange(at, size))
    return torch.cat(pieces)


def prune(model: nn.Module, keep: Dict[str, torch.Tensor]) -> nn.Module:
    """A new, smaller model holding the channels ``keep`` lists (by group, of either family) and
    their weights; what removed constant channels fed their consumers is carried over. A model
    that cuts itself (``pruned``: torchvision models, through torch-pruning's graph) does so."""
    if hasattr(model, "pruned"):
        return model.pruned(keep)
    groups = models.groups_named(model, keep)
    selections = {g.name: models.bn_channels(model, g).cpu()[keep[g.name].cpu()].tolist()
                  for g in groups if g.kind == "select"}
    kept = {g: len(idx) for g, idx in keep.items()}
    # a model whose pruned architecture differs beyond widths is cut under its own layers first and takes
    # that architecture when pruning is done (models.pruned_form: ThiNet's VGG-GAP)
    with_widths = getattr(model, "cut_spec_with_widths", model.spec_with_widths)
    spec = with_widths(kept, selections) if selections else with_widths(kept)
    axes = models.parameter_axes(groups)
    width = {g.name: models.group_width(model, g) for g in groups}
    delta = carried(model, keep) if getattr(model, "folds_constants", True) else {}
    state = {}
    for name, tensor in model.state_dict().items():
        if name in delta:
            tensor = tensor + delta[name].to(tensor.device, tensor.dtype)
        for axis, parts in axes.get(name, {}).items():
            if len(parts) == 1 and parts[0][0] == 0 and width[parts[0][1]] == tensor.shape[axis]:
                index = keep[parts[0][1]]  # the whole axis is one group's
            else:
                index = kept_positions(tensor.shape[axis], parts, keep, width)
            tensor = tensor.index_select(axis, index.to(tensor.device))
        state[name] = tensor.clone()
    device = next(model.parameters()).device
    new = models.build(spec).to(device)
    wanted = new.state_dict().keys()  # a group cut to width 0 takes its layers with it (ResNet blocks)
    new.load_state_dict({k: v for k, v in state.items() if k in wanted})
    return new
