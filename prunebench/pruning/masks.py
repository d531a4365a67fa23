"""Weight-level pruning: boolean masks over the convolution and linear weights.

The architecture stays whole; pruned weights are zero and stay zero through
retraining (:class:`prunebench.train.MaskHook`). Masks are keyed by parameter
name (``features.0.weight``); ``skip`` and ``layer_ratios`` name the module
(``features.0``)."""
from typing import Dict

import torch
from torch import nn

from prunebench.pruning.selection import check_layer_names, check_ratio
from prunebench.pruning.surgery import prunable_weights


def _layer(param_name: str) -> str:
    return param_name.rsplit(".", 1)[0]


def select_weights(scores: Dict[str, torch.Tensor], cfg) -> Dict[str, torch.Tensor]:
    """Masks (True = kept) removing the lowest-scoring ``pruning_ratio`` of the weights,
    over all layers at once (``selection: global``) or in every layer (``layer``)."""
    check_ratio("method.pruning_ratio", cfg.pruning_ratio)
    layers = [_layer(n) for n in scores]
    check_layer_names(cfg.skip, layers, "method.skip")
    check_layer_names(cfg.layer_ratios, layers, "method.layer_ratios")
    active = [n for n in scores if _layer(n) not in cfg.skip]
    masks = {n: torch.ones_like(s, dtype=torch.bool) for n, s in scores.items()}
    if cfg.selection == "global":
        flat = torch.cat([scores[n].flatten().float() for n in active])
        n_remove = int(cfg.pruning_ratio * flat.numel())
        if n_remove:
            removed = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
            removed[torch.argsort(flat, stable=True)[:n_remove]] = True
            offset = 0
            for n in active:
                k = scores[n].numel()
                masks[n] = ~removed[offset:offset + k].view_as(scores[n])
                offset += k
    elif cfg.selection == "layer":
        for n in active:
            ratio = cfg.layer_ratios.get(_layer(n), cfg.pruning_ratio)
            check_ratio(f"method.layer_ratios.{_layer(n)}", ratio)
            k = int(ratio * scores[n].numel())
            flat = torch.ones(scores[n].numel(), dtype=torch.bool, device=scores[n].device)
            flat[torch.argsort(scores[n].flatten().float(), stable=True)[:k]] = False
            masks[n] = flat.view_as(scores[n])
    else:
        raise ValueError(f"weight-level selection must be 'global' or 'layer', got {cfg.selection!r}")
    return masks


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        params[name].mul_(mask.to(params[name].device, params[name].dtype))


def density(masks: Dict[str, torch.Tensor]) -> Dict[str, float]:
    """Fraction of weights kept, per layer."""
    return {_layer(n): round(m.float().mean().item(), 6) for n, m in masks.items()}


def uniform_masks(model: nn.Module, keep_fraction: float, seed: int) -> Dict[str, torch.Tensor]:
    """Random masks keeping the same fraction of every prunable weight tensor."""
    gen = torch.Generator().manual_seed(seed)
    masks = {}
    for name, w in prunable_weights(model).items():
        k = max(1, round(keep_fraction * w.numel()))
        flat = torch.zeros(w.numel(), dtype=torch.bool)
        flat[torch.randperm(w.numel(), generator=gen)[:k]] = True
        masks[name] = flat.view(w.shape).to(w.device)
    return masks
