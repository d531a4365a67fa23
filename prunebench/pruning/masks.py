"""Weight-level pruning: boolean masks over the convolution and linear weights.

The architecture stays whole; pruned weights are zero and stay zero through
retraining (:class:`prunebench.train.MaskHook`). Masks are keyed by parameter
name (``features.0.weight``); ``layer_ratios`` name the module (``features.0``);
``skip`` names modules too, each covering every prunable layer in it
(``classifier`` is a one-layer classifier or all of Li et al.'s two). Iterated pruning
passes the masks so far (``kept``): each iteration removes its ratio of what is left."""
import logging
import math
from typing import Dict, Optional

import torch
from torch import nn

from prunebench.errors import PrunebenchError
from prunebench.pruning.selection import check_layer_names, check_ratio, lowest, removes_inclusive
from prunebench.pruning.surgery import prunable_weights

log = logging.getLogger(__name__)


def _layer(param_name: str) -> str:
    return param_name.rsplit(".", 1)[0]


def _within(layer: str, modules) -> bool:
    """Whether ``layer`` is one of ``modules`` or inside one of them."""
    return any(layer == m or layer.startswith(m + ".") for m in modules)


def _count(ratio: float, n: int) -> int:
    """floor(ratio x n), immune to float noise such as 0.29 x 100 = 28.999999999999996."""
    return math.floor(round(ratio * n, 6))


def _among(scores: torch.Tensor, kept: torch.Tensor, ratio: float, inclusive: bool) -> torch.Tensor:
    """What a threshold removing ``ratio`` of the still ``kept`` entries of the flat ``scores``
    removes, the entries already pruned included (the authors' iterative pruning skips them:
    ``thre_index = total - total_nonzero + int(total_nonzero p)``,
    rethinking-network-pruning cifar/lottery-ticket/weight-level/cifar_prune_iterative.py:205)."""
    removed = ~kept
    live = scores[kept]
    removed[kept] = lowest(live, _count(ratio, live.numel()), inclusive and ratio > 0)
    return removed


def select_weights(scores: Dict[str, torch.Tensor], cfg,
                   kept: Optional[Dict[str, torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
    """Masks (True = kept) removing the lowest-scoring ``pruning_ratio`` of the weights,
    over all layers at once (``selection: global``; ``global_threshold: inclusive`` removes
    every weight at or below the int(N p)-th lowest, as Liu et al.'s weight-level code) or in
    every layer (``layer``, where ``layer_ratios`` overrides the ratio of the layers it names).
    Layers in ``skip`` keep every weight and are left out of the count. With ``kept`` (the masks
    of an earlier iteration) the ratio applies to the weights still kept, and what was pruned
    stays pruned."""
    check_ratio("method.pruning_ratio", cfg.pruning_ratio)
    layers = [_layer(n) for n in scores]
    check_layer_names([s for s in cfg.skip if not any(_within(l, [s]) for l in layers)], layers, "method.skip")
    check_layer_names(cfg.layer_ratios, layers, "method.layer_ratios")
    for name, r in cfg.layer_ratios.items():
        check_ratio(f"method.layer_ratios.{name}", r)
    active = [n for n in scores if not _within(_layer(n), cfg.skip)]
    masks = {n: torch.ones_like(s, dtype=torch.bool) for n, s in scores.items()}
    before = {n: (kept[n] if kept is not None and n in kept else torch.ones_like(s, dtype=torch.bool)).to(s.device)
              for n, s in scores.items()}
    if cfg.selection == "global":
        if cfg.layer_ratios:
            raise PrunebenchError("method.layer_ratios applies to selection: layer; with selection: global one "
                                  "threshold over all layers removes method.pruning_ratio of their weights")
        if active:
            device = scores[active[0]].device
            flat = torch.cat([scores[n].detach().flatten().float().to(device) for n in active])
            live = torch.cat([before[n].flatten().to(device) for n in active])
            removed = _among(flat, live, cfg.pruning_ratio, removes_inclusive(cfg, cfg.pruning_ratio))
            offset = 0
            for n in active:
                k = scores[n].numel()
                masks[n] = ~removed[offset:offset + k].view_as(scores[n]).to(scores[n].device)
                offset += k
    elif cfg.selection == "layer":
        for n in active:
            ratio = cfg.layer_ratios.get(_layer(n), cfg.pruning_ratio)
            flat = scores[n].detach().flatten().float()
            masks[n] = ~_among(flat, before[n].flatten(), ratio, False).view_as(scores[n])
    else:
        raise PrunebenchError(f"weight-level method.selection must be 'global' or 'layer', got {cfg.selection!r}")
    masks = {n: m & before[n] for n, m in masks.items()}  # skipped layers keep what earlier iterations pruned
    empty = [_layer(n) for n, m in masks.items() if not m.any()]
    if empty:
        log.warning("weight-level selection removed every weight of %s: those layers output zeros", ", ".join(empty))
    return masks


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Dict[str, torch.Tensor]) -> None:
    """Zero the pruned weights of ``model`` in place."""
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        params[name].mul_(mask.to(params[name].device, params[name].dtype))


def density(masks: Dict[str, torch.Tensor]) -> Dict[str, float]:
    """Fraction of weights kept, per layer."""
    return {_layer(n): round(m.float().mean().item(), 6) for n, m in masks.items()}


def uniform_masks(model: nn.Module, keep_fraction: float, seed: int) -> Dict[str, torch.Tensor]:
    """Random masks keeping the same fraction of every prunable weight tensor (at least one
    weight each), drawn from ``seed``: the uniform baseline of weight-level methods."""
    if not 0.0 < keep_fraction <= 1.0:
        raise PrunebenchError(f"the uniform baseline keeps a fraction in (0, 1] of every layer, got {keep_fraction}")
    gen = torch.Generator().manual_seed(seed)
    masks = {}
    for name, w in prunable_weights(model).items():
        k = max(1, round(keep_fraction * w.numel()))
        flat = torch.zeros(w.numel(), dtype=torch.bool)
        flat[torch.randperm(w.numel(), generator=gen)[:k]] = True
        masks[name] = flat.view(w.shape).to(w.device)
    return masks


def shuffled_masks(masks: Dict[str, torch.Tensor], seed: int) -> Dict[str, torch.Tensor]:
    """Each layer's mask with its entries permuted at random (drawn from ``seed``): the same number
    of weights kept in every layer, at other positions (Frankle et al., ICLR 2021's shuffling)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, mask in masks.items():
        flat = mask.reshape(-1)
        order = torch.randperm(flat.numel(), generator=gen).to(flat.device)
        out[name] = flat[order].view(mask.shape).clone()
    return out


@torch.no_grad()
def sparse_init(model: nn.Module, masks: Dict[str, torch.Tensor]) -> None:
    """Re-draw the kept weights of every masked convolution at the density-corrected He
    scale, std = sqrt(2 / (density x k^2 x C_out)), i.e. the fan-out of the weights that
    remain, and zero the others: the init of the authors' weight-level Scratch-E/B
    (rethinking-network-pruning, cifar/weight-level/cifar_E.py and cifar_B.py, where the
    reference model's mask sets ``n = mask.sum() / in_channels``). Masked linear layers
    keep the model's own init, masked."""
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        module = modules[_layer(name)]
        weight = module.weight
        m = mask.to(weight.device, weight.dtype)
        if isinstance(module, nn.Conv2d):
            fan = float(m.sum()) / module.in_channels
            if fan > 0:
                weight.normal_(0.0, math.sqrt(2.0 / fan))
        weight.mul_(m)
