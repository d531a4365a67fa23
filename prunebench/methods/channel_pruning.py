"""Channel pruning (He, Zhang, Sun, "Channel Pruning for Accelerating Very Deep
Neural Networks", ICCV 2017): LASSO regression chooses the input channels of
layer i + 1 (hence the filters of layer i) that reconstruct its output, and least
squares refits layer i + 1 on the channels kept.

Selection: with Z_c the contribution of channel c to the consumer's output Y on
the sampled positions (every output channel), solve

    min_beta ||Y - sum_c beta_c Z_c||^2 + lambda ||beta||_1

(beta = 1 reproduces Y), raising lambda until at most the layer's target count of
beta is non-zero (the count the shared selection keeps under ``pruning_ratio`` /
``layer_ratios``); the scores are |beta| at that lambda. The LASSO works on G =
Z^T Z and g = Z^T Y only: FISTA, batched over a grid of lambdas that is refined
around the crossing. Channels whose beta is zero there are ranked, below every
non-zero one, by |beta| at the next smaller lambda of the grid.

Reconstruction (``reconstruct: true``): the consumer's whole weight on the kept
channels is refitted by least squares, from normal equations accumulated over
batches (with a tiny ridge), layer by layer in forward order on the pruned model.
Target: on VGG the original model's consumer output (pre-BN; for the classifier
its logits less the bias). On ResNets the consumer is conv2 of the block, whose
output goes through bn2 and is added to the shortcut; the target is the block's
full output in the original model (before the final ReLU): conv2's original
output plus (original shortcut - pruned shortcut) / bn2's scale, i.e. the
residual branch also makes up for what earlier pruning changed on the shortcut
(the paper's multi-branch reconstruction, Y1 + Y2 - Y2').

Departures from the paper: the paper alternates the LASSO step and the least
squares step on the (normalised) weights and prunes layer after layer, each
choice made on the already pruned network; here every group is chosen on the
unpruned model in one pass (the pipeline scores once, then prunes), with the
weights fixed during selection, and the layer-by-layer least squares comes after.
The linear classifier (VGG's last consumer) gives one sample per image, not
``positions_per_image``. With ``selection: global`` the LASSO targets still follow
the per-layer ratios.
"""
from dataclasses import dataclass
import math
from typing import Dict, Iterable, Tuple

import torch
from torch import nn

from prunebench.methods.activations import Samples
from prunebench.methods.base import StatisticsConfig
from prunebench.methods.regression import RegressionMethod
from prunebench.models import conv_groups
from prunebench.pruning.reconstruct import NormalEquations, set_layer_weight
from prunebench.pruning.selection import iteration_config

GRID = 16  # lambdas solved at once
ROUNDS = 4  # grid refinements around the lambda where the non-zero count reaches the target
MAX_ITERATIONS = 3000  # FISTA iterations per solve
TOLERANCE = 1e-9  # stop when no beta moves by more than this (relative to the largest)


def lasso(gram: torch.Tensor, cross: torch.Tensor, lambdas: torch.Tensor) -> torch.Tensor:
    """beta (len(lambdas), C) minimising beta^T G beta - 2 g^T beta + lambda |beta|_1 for
    every lambda at once (FISTA with restarts, float64)."""
    gram, cross, lambdas = gram.double(), cross.double(), lambdas.double()[:, None]
    step = 1.0 / (2 * torch.linalg.eigvalsh(gram)[-1].clamp_min(1e-300))
    beta = torch.zeros(lambdas.shape[0], gram.shape[0], dtype=gram.dtype)
    z, t = beta.clone(), 1.0
    for _ in range(MAX_ITERATIONS):
        grad = 2 * (z @ gram - cross)
        moved = z - step * grad
        new = torch.sign(moved) * (moved.abs() - step * lambdas).clamp_min(0)
        change = (new - beta).abs().max()
        if change <= TOLERANCE * max(float(new.abs().max()), 1e-300):
            return new
        if float(((z - new) * (new - beta)).sum()) > 0:  # momentum points uphill: restart it
            t = 1.0
        t_next = (1 + (1 + 4 * t * t) ** 0.5) / 2
        z = new + ((t - 1) / t_next) * (new - beta)
        beta, t = new, t_next
    return beta


def lasso_scores(gram: torch.Tensor, cross: torch.Tensor, count: int) -> Tuple[torch.Tensor, float]:
    """|beta| at the smallest lambda (on a refined grid) where at most ``count`` beta are
    non-zero; zeros ranked below by |beta| at the next smaller lambda. Also returns lambda."""
    top = float(2 * cross.abs().max())  # beta = 0 is the solution from here on
    if top == 0.0:
        return torch.zeros(gram.shape[0]), 0.0
    lo, hi = top * 1e-8, top
    best, below = None, None
    for _ in range(ROUNDS):
        lambdas = torch.logspace(math.log10(lo), math.log10(hi), GRID, dtype=torch.float64)
        betas = lasso(gram, cross, lambdas)
        ok = ((betas != 0).sum(dim=1) <= count).nonzero().flatten()
        j = int(ok[0]) if ok.numel() else GRID - 1
        best, lam = betas[j], float(lambdas[j])
        if j == 0:  # the bracket's low end already qualifies: keep the last smaller lambda seen, if any
            break
        below = betas[j - 1]
        lo, hi = float(lambdas[j - 1]), float(lambdas[j])
    scores = best.abs()
    nonzero = scores > 0
    if below is not None and (~nonzero).any():
        floor = float(scores[nonzero].min()) if nonzero.any() else 1.0
        rest = below.abs()
        if float(rest.max()) > 0:
            scores = torch.where(nonzero, scores, 0.5 * floor * rest / rest.max())
    return scores.float(), lam


@dataclass
class ChannelPruningConfig(StatisticsConfig):
    num_images: int = 5000  # paper: 5000 images, 10 positions each
    positions_per_image: int = 10
    reconstruct: bool = True  # least-squares refit of the next layer on the kept channels


class ChannelPruning(RegressionMethod):
    Config = ChannelPruningConfig
    paper = "He et al., ICCV 2017"
    residual_target = True

    def target_counts(self, model: nn.Module) -> Dict[str, int]:
        """Channels each group keeps under the shared per-layer selection (of one step when
        pruning iterates)."""
        cfg = iteration_config(self.cfg).copy()
        cfg.selection = "layer"
        sizes = {g.name: model.get_submodule(g.conv).out_channels for g in conv_groups(model)}
        keep = self.select(model, {g: torch.arange(n, dtype=torch.float32) for g, n in sizes.items()}, cfg)
        return {g: idx.numel() for g, idx in keep.items()}

    def scores(self, model, data) -> Dict[str, torch.Tensor]:
        counts = self.target_counts(model)
        return {name: lasso_scores(gram, cross, counts[name])[0]
                for name, (gram, cross) in self.contribution_stats(model, data).items()}

    def fit(self, layer: nn.Module, batches: Iterable[Samples]) -> None:
        eq = NormalEquations()
        for s in batches:
            eq.add(s.x, s.y)
        set_layer_weight(layer, eq.solve(layer.weight.shape[1]))
