"""Selection policies: from per-channel scores to the channel indices each layer keeps.

``global``: one threshold over the scores of every prunable layer removes
``pruning_ratio`` of all their channels (network slimming): ``global_threshold: exact``
removes int(N p) of the N channels, ``inclusive`` takes the score at position int(N p)
of the ascending order as the threshold and removes every channel scoring at or below
it, int(N p) + 1 where no score ties it (:func:`lowest`). ``layer``: each layer
removes its own ratio (``layer_ratios`` overrides ``pruning_ratio``; L1-norm
pruning). ``threshold``: each layer removes the channels whose score is <=
``threshold`` (automatic methods whose training drives scores to exactly zero:
SSS, AutoPruner; ``pruning_ratio`` plays no part). In every case a layer keeps at
least ``min_channels`` channels and, with ``round_to`` > 1, a multiple of it;
layers in ``skip`` keep everything."""
import math
from typing import Dict, Iterable

import torch

from prunebench.bounds import within
from prunebench.errors import PrunebenchError


def check_ratio(name: str, ratio: float) -> None:
    within(name, ratio, 0, 1, open_high=True, what="the fraction of channels removed")


GLOBAL_THRESHOLDS = ("exact", "inclusive")


def lowest(scores: torch.Tensor, k: int, inclusive: bool = False) -> torch.Tensor:
    """A boolean tensor marking what a global threshold removes of the flat ``scores``: the ``k``
    lowest (ties: the earlier first), or with ``inclusive`` every score at or below the k-th
    lowest (0-based), k + 1 of them where none ties it: the rule of Liu et al.'s code, which
    sorts the scores, takes ``thre = y[int(N p)]`` and keeps what is ``> thre``
    (network-slimming vggprune.py:64-65,73; rethinking-network-pruning
    cifar/weight-level/cifar_prune.py:196-198,205)."""
    out = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    if inclusive and scores.numel():
        return scores <= torch.sort(scores).values[k]
    if k:
        out[torch.argsort(scores, stable=True)[:k]] = True
    return out


def removes_inclusive(cfg, ratio: float) -> bool:
    """Whether a global threshold of ``cfg`` removing ``ratio`` is the inclusive one (a ratio of 0
    removes nothing under either rule)."""
    rule = getattr(cfg, "global_threshold", "exact")
    if rule not in GLOBAL_THRESHOLDS:
        raise PrunebenchError(f"method.global_threshold must be one of {', '.join(GLOBAL_THRESHOLDS)}, got {rule!r}")
    return rule == "inclusive" and ratio > 0


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
        removed = lowest(flat, int(cfg.pruning_ratio * flat.numel()), removes_inclusive(cfg, cfg.pruning_ratio))
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
