"""FPGM (He, Liu, Wang, Hu, Yang, "Filter Pruning via Geometric Median for Deep
Convolutional Neural Networks Acceleration", CVPR 2019): the filters nearest the
geometric median of a layer's filters are the most replaceable by the others, so
they go first, whatever their norm. As the paper does in practice, each filter is
scored by the sum of its Euclidean distances to all the other filters of its layer;
each layer removes the ``pruning_ratio`` of its filters with the smallest sums.

Departures from the paper: FPGM prunes softly (the selected filters are zeroed after
every training epoch and may grow back, as in soft filter pruning, and the network
is cut only at the end); here the trained model's filters are removed once, hard,
and the protocol's retraining strategies follow. On ResNets only the first convolution
of each block is prunable (the models expose no other group), where the paper also
zeroes filters of the second. On a ViT a head is the vector of its q, k and v rows
and an MLP unit its fc1 row; their distances are taken within each block's heads or units.
"""
from dataclasses import dataclass
from typing import Dict

import torch

from prunebench.config import MethodConfig
from prunebench.methods.base import Method
from prunebench.models import conv_groups, filter_rows


def distance_sums(weight: torch.Tensor) -> torch.Tensor:
    """For each filter (first axis of ``weight``), the sum of its Euclidean distances to all filters."""
    w = weight.detach().flatten(1).double()
    return torch.cdist(w, w, compute_mode="donot_use_mm_for_euclid_dist").sum(dim=1)


@dataclass
class FPGMConfig(MethodConfig):
    pass


class FPGM(Method):
    Config = FPGMConfig
    scores_units = True
    paper = "He et al., CVPR 2019"

    def scores(self, model, data) -> Dict[str, torch.Tensor]:
        return {g.name: distance_sums(filter_rows(model, g)).float().cpu()
                for g in conv_groups(model)}
