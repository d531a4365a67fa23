"""Soft Filter Pruning (He, Kang, Dong, Fu & Yang, "Soft Filter Pruning for
Accelerating Deep Convolutional Neural Networks", IJCAI 2018).

In the sparse stage the filters of lowest Lp norm (``norm``, 2 by default) are set to
zero, ``pruning_ratio`` of each layer (``layer_ratios`` and ``skip`` honoured); nothing
masks their gradients, so they keep training and may grow back, and the set is chosen
again after every epoch. Only the filter weights are zeroed, as the paper does, so the
BatchNorm shift of a zeroed channel still reaches the next layer. ``scope`` says which
convolutions:

- ``all`` (``method=sfp``'s default, the authors' code): every convolution, the stem and
  both convolutions of every residual block included, int(N p) of its N filters
  (``filter_pruned_num = int(N (1 - rate))``), zeroed before the first epoch and after
  every epoch, the last included (he-y/soft-filter-pruning, as copied in
  Eric-mingjie/rethinking-network-pruning cifar/soft-filter-pruning/pruning_cifar10_resnet.py:
  180-184 before training, 207-213 after each epoch, 380-395 the filter choice, 412-426 every
  conv's weight). The residual channels cannot be removed, so the result is the full
  network with those filters zeroed: a weight-level method whose masks are whole filters.
  The pruned row is the SFP model as trained; the retrainings keep the filters masked, and
  Scratch-E/B re-draw the kept weights at N(0, 2/n), n = kept weights / in_channels, as the
  authors' scratch scripts do (pruning_resnet_longer_scratch.py:171-177, 284-288).
- ``groups`` (prunebench's former rule): the prunable channel groups only (on a ResNet the
  first convolution of each block), through the shared layer selection (a layer keeps
  int(N (1 - p)) filters, at least ``min_channels``), zeroed after every epoch; pruning then
  removes exactly the filters zeroed last, and surgery carries each zeroed channel's
  BatchNorm shift into the next layer (prunebench/pruning/constants.py), so the pruned model
  computes what the sparse one did (exactly away from the 3x3 convs' borders)."""
from dataclasses import dataclass
from enum import StrEnum
import math
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from prunebench.config import MethodConfig
from prunebench.errors import PrunebenchError
from prunebench.methods.base import Method, refuse_transformer
from prunebench.models import conv_groups



def filter_count(ratio: float, n: int) -> int:
    """Filters zeroed of a convolution of ``n``: int(n x ratio), immune to float noise."""
    return math.floor(round(ratio * n, 6))


Scope = StrEnum("Scope", ["groups", "all"])


@dataclass
class SFPConfig(MethodConfig):
    norm: int = 2  # Lp norm of the filters ranked each epoch
    # groups: the prunable channel groups (ResNet: each block's first conv), removed at the end (the former rule)
    # all: every convolution, zeroed before the first epoch too, kept as filter masks (method=sfp's YAML)
    scope: Scope = Scope.groups


class SFP(Method):
    Config = SFPConfig
    sparse = True
    paper = "He et al., IJCAI 2018"

    def __init__(self, cfg, seed: int = 0):
        super().__init__(cfg, seed)
        if cfg.norm < 1:
            raise PrunebenchError(f"method.norm must be a p >= 1 of the Lp filter norm, got {cfg.norm}")
        if cfg.scope == "all" and cfg.selection != "layer":
            raise PrunebenchError(f"method.scope=all zeroes pruning_ratio of every convolution's filters: use "
                                  f"method.selection=layer (got {cfg.selection!r}), or method.scope=groups")
        if cfg.scope == "all" and cfg.iterations != 1:
            raise PrunebenchError(f"method.scope=all keeps the filters SFP zeroed in its sparse stage: "
                                  f"method.iterations must be 1, got {cfg.iterations}")

    def check_transformer(self, model: nn.Module) -> None:
        if getattr(model, "transformer", False):  # scope=all too: it zeroes convolution filters only
            refuse_transformer(self.cfg.name)

    @classmethod
    def kind_of(cls, cfg) -> str:
        return "weight" if cfg.scope == "all" else "structured"

    def sparse_settings(self) -> Dict:
        c = self.cfg
        out = {"norm": c.norm, "pruning_ratio": c.pruning_ratio, "selection": c.selection,
               "layer_ratios": dict(c.layer_ratios), "skip": list(c.skip), "min_channels": c.min_channels,
               "round_to": c.round_to}
        if c.scope != "groups":  # groups, the former rule, keeps its former key
            out["scope"] = c.scope
        return out

    def scores(self, model, data) -> Dict[str, torch.Tensor]:
        """Structured (``groups``): the Lp norm of each group's filters, by group name.
        ``all``: the Lp norm of each convolution's filters, by its weight's name."""
        if self.cfg.scope == "all":
            return {f"{name}.weight": conv.weight.detach().flatten(1).norm(p=self.cfg.norm, dim=1)
                    for name, conv in self.convolutions(model)}
        return {g.name: model.get_submodule(g.conv).weight.detach().flatten(1).norm(p=self.cfg.norm, dim=1)
                for g in conv_groups(model)}

    def convolutions(self, model: nn.Module) -> List[Tuple[str, nn.Conv2d]]:
        """The convolutions ``scope: all`` zeroes: every one not in ``skip`` (nor inside a skipped module)."""
        skip = list(self.cfg.skip)
        return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)
                and not any(name == s or name.startswith(s + ".") for s in skip)]

    def ratio(self, name: str) -> float:
        return self.cfg.layer_ratios.get(name, self.cfg.pruning_ratio)

    def filter_masks(self, model: nn.Module) -> Dict[str, torch.Tensor]:
        """``scope: all``: per convolution, True for its filters that stay, the int(N p) of lowest
        norm False (ties: the earlier first), by weight name; shaped like the weight."""
        scores = self.scores(model, None)
        masks = {}
        for name, conv in self.convolutions(model):
            norms = scores[f"{name}.weight"]
            keep = torch.ones(norms.numel(), dtype=torch.bool, device=norms.device)
            keep[torch.argsort(norms, stable=True)[:filter_count(self.ratio(name), norms.numel())]] = False
            masks[f"{name}.weight"] = keep.view(-1, 1, 1, 1).expand_as(conv.weight).clone()
        return masks

    @torch.no_grad()
    def soft_prune(self, model: nn.Module) -> Dict[str, torch.Tensor]:
        """Zero the filters the rule would remove now. ``all``: return the filter masks by weight
        name; ``groups``: the kept indices by group name."""
        if self.cfg.scope == "all":
            masks = self.filter_masks(model)
            params = dict(model.named_parameters())
            for name, mask in masks.items():
                params[name].mul_(mask.to(params[name].dtype))
            return masks
        keep = self.select(model, self.scores(model, None), self.cfg)
        for g in conv_groups(model):
            weight = model.get_submodule(g.conv).weight
            zero = torch.ones(weight.shape[0], dtype=torch.bool, device=weight.device)
            zero[keep[g.name].to(weight.device)] = False
            weight[zero] = 0.0
        return keep

    def before_training(self, model: nn.Module) -> None:
        if self.cfg.scope == "all":  # the authors zero the initial model too (pruning_cifar10_resnet.py:180-184)
            self.soft_prune(model)

    def on_epoch_end(self, model: nn.Module, epoch: int) -> None:
        self.soft_prune(model)

    def weight_masks(self, model, data, cfg, kept=None) -> Dict[str, torch.Tensor]:
        """The filters zeroed after the last epoch (the lowest-norm ones, at norm 0), as masks."""
        return self.filter_masks(model)

    def predicted_masks(self, model: nn.Module) -> Optional[Dict[str, torch.Tensor]]:
        """Every convolution's count of zeroed filters is fixed by the configuration (which ones is not)."""
        if self.cfg.scope != "all":
            return None
        masks = {}
        for name, conv in self.convolutions(model):
            keep = torch.ones(conv.out_channels, dtype=torch.bool)
            keep[:filter_count(self.ratio(name), conv.out_channels)] = False
            masks[f"{name}.weight"] = keep.view(-1, 1, 1, 1).expand(tuple(conv.weight.shape)).clone()
        return masks
