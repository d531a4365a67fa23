"""Selection policies: from per-channel scores to the channel indices each layer keeps.

``global``: one threshold over the scores of every prunable layer removes
``pruning_ratio`` of all their channels (network slimming). ``layer``: each layer
removes its own ratio (``layer_ratios`` overrides ``pruning_ratio``; L1-norm
pruning). ``threshold``: each layer removes the channels whose score is <=
``threshold`` (automatic methods whose training drives scores to exactly zero:
SSS, AutoPruner; ``pruning_ratio`` plays no part). In every case a layer keeps at
least ``min_channels`` channels and, with ``round_to`` > 1, a multiple of it;
layers in ``skip`` keep everything."""
import math
from typing import Dict, Iterable

import torch

from prunebench.errors import PrunebenchError


def check_ratio(name: str, ratio: float) -> None:
    if not 0.0 <= ratio < 1.0:
        raise PrunebenchError(f"{name} must lie in [0, 1) (the fraction of channels removed), got {ratio}")


def check_layer_names(names: Iterable[str], known: Iterable[str], what: str) -> None:
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise PrunebenchError(f"{what} names unknown layers {unknown}; this model's prunable layers: "
                              f"{', '.join(known)}")


def iteration_config(cfg):
    """The method config of one of ``cfg.iterations`` pruning steps: each step removes
    1 - (1 - r)^(1/n) of what is left, so that n steps remove r in all."""
    n = cfg.iterations
    if n == 1:
        return cfg
    step = cfg.copy()
    step.pruning_ratio = 1 - (1 - cfg.pruning_ratio) ** (1 / n)
    for name, r in cfg.layer_ratios.items():
        step.layer_ratios[name] = 1 - (1 - r) ** (1 / n)
    return step


def keep_count(n_keep: int, width: int, min_channels: int, round_to: int) -> int:
    """How many channels a layer of ``width`` keeps when ``n_keep`` pass the policy."""
    n_keep = max(n_keep, min(min_channels, width))
    if round_to > 1:
        n_keep = min(width, math.ceil(n_keep / round_to) * round_to)
    return n_keep


def select(scores: Dict[str, torch.Tensor], cfg) -> Dict[str, torch.Tensor]:
    """Return, for each scored layer, the sorted indices of the channels it keeps."""
    check_ratio("method.pruning_ratio", cfg.pruning_ratio)
    check_layer_names(cfg.skip, scores, "method.skip")
    check_layer_names(cfg.layer_ratios, scores, "method.layer_ratios")
    for name, r in cfg.layer_ratios.items():
        check_ratio(f"method.layer_ratios.{name}", r)
    active = [g for g in scores if g not in cfg.skip]
    counts = {g: scores[g].numel() for g in scores}
    if cfg.selection == "global" and active:
        flat = torch.cat([scores[g].flatten().float().cpu() for g in active])
        n_remove = int(cfg.pruning_ratio * flat.numel())
        removed = torch.zeros(flat.numel(), dtype=torch.bool)
        removed[torch.argsort(flat, stable=True)[:n_remove]] = True
        offset = 0
        for g in active:
            counts[g] = int((~removed[offset:offset + counts[g]]).sum())
            offset += scores[g].numel()
    elif cfg.selection == "layer":
        for g in active:
            ratio = cfg.layer_ratios.get(g, cfg.pruning_ratio)
            counts[g] = math.floor(scores[g].numel() * (1 - ratio) + 1e-9)  # as Li et al.'s code: int(n(1-p))
    elif cfg.selection == "threshold":
        for g in active:
            counts[g] = int((scores[g].flatten().float() > cfg.threshold).sum())
    elif cfg.selection != "global":
        raise PrunebenchError(f"method.selection must be 'global', 'layer' or 'threshold', got {cfg.selection!r}")
    keep = {}
    for g, s in scores.items():
        n = s.numel() if g in cfg.skip else keep_count(counts[g], s.numel(), cfg.min_channels, cfg.round_to)
        top = torch.argsort(s.flatten().float().cpu(), descending=True, stable=True)[:n]
        keep[g] = torch.sort(top).values
    return keep
