"""Soft Filter Pruning (He, Kang, Dong, Fu & Yang, "Soft Filter Pruning for
Accelerating Deep Convolutional Neural Networks", IJCAI 2018).

In the sparse stage, at the end of every epoch, the filters of lowest Lp norm
(``norm``, 2 by default) in each layer are set to zero, ``pruning_ratio`` of the
layer (``layer_ratios`` and ``skip`` honoured, through the same selection as the
final cut); nothing masks their gradients, so they keep training and may grow
back, and the set is chosen again next epoch. After the last epoch the zeroed
filters are the lowest-norm ones, and pruning removes exactly them.

Departures: on a ResNet only the first convolution of each block is soft-pruned
(the channels the models let prunebench remove) where the paper zeroes filters of
every convolution; only the filter weights are zeroed, as the paper does, so the
BatchNorm shift of a zeroed channel still reaches the next layer; surgery carries
that constant into the next layer (prunebench/pruning/constants.py), so the pruned
model computes what the sparse one did (exactly away from the 3x3 convs' borders)."""
from typing import Dict

import torch
from torch import nn

from prunebench.errors import PrunebenchError
from prunebench.methods.base import Method
from prunebench.models import conv_groups


class SFP(Method):
    sparse = True
    paper = "He et al., IJCAI 2018"

    def __init__(self, cfg, seed: int = 0):
        super().__init__(cfg, seed)
        if cfg.norm < 1:
            raise PrunebenchError(f"method.norm must be a p >= 1 of the Lp filter norm, got {cfg.norm}")

    def sparse_settings(self) -> Dict:
        c = self.cfg
        return {"norm": c.norm, "pruning_ratio": c.pruning_ratio, "selection": c.selection,
                "layer_ratios": dict(c.layer_ratios), "skip": list(c.skip), "min_channels": c.min_channels,
                "round_to": c.round_to}

    def scores(self, model, data) -> Dict[str, torch.Tensor]:
        return {g.name: model.get_submodule(g.conv).weight.detach().flatten(1).norm(p=self.cfg.norm, dim=1)
                for g in conv_groups(model)}

    @torch.no_grad()
    def soft_prune(self, model: nn.Module) -> Dict[str, torch.Tensor]:
        """Zero, in every layer, the filters the selection would remove now; return the kept indices."""
        keep = self.select(model, self.scores(model, None), self.cfg)
        for g in conv_groups(model):
            weight = model.get_submodule(g.conv).weight
            zero = torch.ones(weight.shape[0], dtype=torch.bool, device=weight.device)
            zero[keep[g.name].to(weight.device)] = False
            weight[zero] = 0.0
        return keep

    def on_epoch_end(self, model: nn.Module, epoch: int) -> None:
        self.soft_prune(model)
