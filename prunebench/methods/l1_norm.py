"""L1-norm filter pruning (Li et al., "Pruning Filters for Efficient ConvNets",
ICLR 2017): in each layer remove the filters with the smallest sum of absolute
weights, with per-layer ratios and layers left alone. On ResNets only the first
convolution of each block is pruned (the models expose no other group). On a ViT
(:mod:`prunebench.models.vit`) a head's "filter" is its q, k and v rows, an MLP
unit's its fc1 row: the sum of their absolute weights scores the head or unit."""
from dataclasses import dataclass
from typing import Dict

import torch

from prunebench.config import MethodConfig
from prunebench.methods.base import Method
from prunebench.models import conv_groups, filter_rows


@dataclass
class L1NormConfig(MethodConfig):
    pass


class L1Norm(Method):
    Config = L1NormConfig
    scores_units = True
    paper = "Li et al., ICLR 2017"

    def scores(self, model, data) -> Dict[str, torch.Tensor]:
        return {g.name: filter_rows(model, g).detach().abs().sum(1) for g in conv_groups(model)}
