"""Network slimming (Liu et al., "Learning Efficient Convolutional Networks through
Network Slimming", ICCV 2017): train with an L1 penalty on the BatchNorm scaling
factors, then remove the channels whose |gamma| falls under one global threshold."""
from typing import Dict

import torch
from torch import nn

from prunebench.methods.base import Method


class Slimming(Method):
    sparse = True
    paper = "Liu et al., ICCV 2017"

    def sparse_settings(self) -> Dict:
        return {"sparsity": self.cfg.sparsity}

    def regularize(self, model: nn.Module) -> None:
        # subgradient of sparsity * sum |gamma|, added to the loss gradient
        for g in model.channel_groups():
            gamma = model.get_submodule(g.bn).weight
            if gamma.grad is not None:
                gamma.grad.add_(torch.sign(gamma.detach()), alpha=self.cfg.sparsity)

    def scores(self, model, data) -> Dict[str, torch.Tensor]:
        return {g.name: model.get_submodule(g.bn).weight.detach().abs() for g in model.channel_groups()}
