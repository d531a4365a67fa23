"""ThiNet (Luo, Wu, Lin, "ThiNet: A Filter Level Pruning Method for Deep Neural
Network Compression", ICCV 2017): a filter of layer i goes when the output of
layer i + 1 can do without its channel. With x_c the contribution of input
channel c to a sampled output of layer i + 1 (the kernel window's sum of w * x;
w * x for the linear classifier), ThiNet greedily grows the removed set T by the
channel that keeps ||sum_{c in T} x_c||^2 smallest over all samples; the kept
weights of layer i + 1 are then rescaled per channel by least squares (w-hat).

Here the greedy runs over every channel, and its removal order is the score
(removed first = lowest), so the shared ``layer`` selection removes exactly
ThiNet's set T for any ratio. The squared norms come from the Gram matrix G of
the contributions: ||sum_T x||^2 = sum_{c,c' in T} G[c, c'].

Departures from the paper: at each sampled location every output channel of
layer i + 1 is used, not one random channel (same objective, more samples, and
no cost: G is accumulated from the input patches' moments); every group is scored
on the unpruned model in one pass and pruned at once, with no fine-tuning between
layers (the pipeline prunes once; ``iterations`` / ``iteration_epochs`` give the
paper's prune / fine-tune alternation at the granularity of whole steps); the
w-hat rescaling is done layer by layer in forward order on the pruned model
(inputs from the pruned model, targets from the original), so each layer also
absorbs the error of the layers before it. On ResNets only the first convolution
of a block is a group; its consumer is conv2 and the target is conv2's own output.
"""
from dataclasses import dataclass
from typing import Dict, Iterable

import torch
from torch import nn

from prunebench.methods.activations import Samples
from prunebench.methods.base import StatisticsConfig
from prunebench.methods.regression import RegressionMethod
from prunebench.pruning.reconstruct import ContributionGram, channel_scales, layer_weight, rescale_channels


def removal_order(gram: torch.Tensor) -> torch.Tensor:
    """ThiNet's greedy on the whole layer: channel indices in the order they are
    removed, each step adding the channel c that minimises ||sum_{T + c} x||^2
    = total + 2 sum_{t in T} G[t, c] + G[c, c]."""
    n = gram.shape[0]
    gram = gram.double()
    diag = gram.diagonal()
    pulled = torch.zeros(n, dtype=gram.dtype, device=gram.device)  # sum_{t in T} G[t, c]
    removed = torch.zeros(n, dtype=torch.bool, device=gram.device)
    order = []
    for _ in range(n):
        cost = torch.where(removed, torch.full_like(diag, float("inf")), 2 * pulled + diag)
        c = int(torch.argmin(cost))
        order.append(c)
        removed[c] = True
        pulled += gram[c]
    return torch.tensor(order, dtype=torch.long)


def order_scores(order: torch.Tensor) -> torch.Tensor:
    """Scores in (0, 1] from a removal order: the first removed scores lowest."""
    n = order.numel()
    scores = torch.empty(n)
    scores[order] = torch.arange(1, n + 1, dtype=torch.float32) / n
    return scores


@dataclass
class ThiNetConfig(StatisticsConfig):
    positions_per_image: int = 10  # sampled output positions per image
    reconstruct: bool = True  # least-squares rescaling of the kept weights of the next layer


class ThiNet(RegressionMethod):
    Config = ThiNetConfig
    paper = "Luo et al., ICCV 2017"

    def scores(self, model, data) -> Dict[str, torch.Tensor]:
        return {name: order_scores(removal_order(gram))
                for name, (gram, _) in self.contribution_stats(model, data).items()}

    def fit(self, layer: nn.Module, batches: Iterable[Samples]) -> None:
        stats = ContributionGram(layer_weight(layer))
        for s in batches:
            stats.add(s.x, s.y)
        rescale_channels(layer, channel_scales(stats.gram, stats.cross))
