"""L1-norm filter pruning (Li et al., "Pruning Filters for Efficient ConvNets",
ICLR 2017): in each layer remove the filters with the smallest sum of absolute
weights, with per-layer ratios and layers left alone. On ResNets only the first
convolution of each block is pruned (the models expose no other group)."""
from dataclasses import dataclass
from typing import Dict

import torch

from prunebench.config import MethodConfig
from prunebench.methods.base import Method
from prunebench.models import conv_groups


@dataclass
class L1NormConfig(MethodConfig):
    pass


class L1Norm(Method):
    Config = L1NormConfig
    paper = "Li et al., ICLR 2017"

    def scores(self, model, data) -> Dict[str, torch.Tensor]:
        return {g.name: model.get_submodule(g.conv).weight.detach().abs().sum(dim=(1, 2, 3))
                for g in conv_groups(model)}
