"""Network slimming (Liu et al., "Learning Efficient Convolutional Networks through
Network Slimming", ICCV 2017): train with an L1 penalty on the BatchNorm scaling
factors, then remove the channels whose |gamma| falls under one global threshold.

Every channel group is scored through its BatchNorm: on PreResNet and DenseNet that
is every BatchNorm of the network, as the authors' resprune.py / denseprune.py
prune them (Eric-mingjie/rethinking-network-pruning cifar/network-slimming): the
channels a selection layer passes on are scored by their BatchNorm's gammas at the
selected positions. The penalty covers every BatchNorm of a group whole, as the
authors' ``updateBN`` (main.py line 122) covers every BatchNorm2d."""
from dataclasses import dataclass
from typing import Dict

import torch
from torch import nn

from prunebench.config import MethodConfig
from prunebench.errors import PrunebenchError
from prunebench.methods.base import Method
from prunebench.models import bn_weight


def batch_norms(model: nn.Module):
    """(group, its BatchNorm) of every group; an error where a group has none."""
    groups = model.channel_groups()
    missing = [g.name for g in groups if not g.bn]
    if missing:
        raise PrunebenchError(f"slimming scores BatchNorm scaling factors, and groups {missing[:5]} have no "
                              f"BatchNorm; use a model with BatchNorm (e.g. vgg16_bn) or another method")
    return [(g, model.get_submodule(g.bn)) for g in groups]


@dataclass
class SlimmingConfig(MethodConfig):
    sparsity: float = 1e-4  # L1 weight on BN gammas in the sparse stage (paper: 1e-4 VGG, 1e-5 ResNet)


class Slimming(Method):
    Config = SlimmingConfig
    sparse = True
    prunes = "channels"  # every group: BatchNorm channels, selections included
    paper = "Liu et al., ICCV 2017"

    def check_model(self, model: nn.Module) -> None:
        batch_norms(model)

    def sparse_settings(self) -> Dict:
        return {"sparsity": self.cfg.sparsity}

    def regularize(self, model: nn.Module) -> None:
        # subgradient of sparsity * sum |gamma|, added to the loss gradient
        for _, bn in batch_norms(model):
            gamma = bn.weight
            if gamma.grad is not None:
                gamma.grad.add_(torch.sign(gamma.detach()), alpha=self.cfg.sparsity)

    def scores(self, model, data) -> Dict[str, torch.Tensor]:
        return {g.name: bn_weight(model, g).detach().abs() for g, _ in batch_norms(model)}
