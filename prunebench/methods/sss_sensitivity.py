"""SSS + gradient-based sensitivity analysis: the sparse stage of Sparse Structure
Selection (Huang & Wang, ECCV 2018), then the structures ranked by the first-order
sensitivity of the loss to their scaling factor instead of kept where the factor
is non-zero. One of the two SSS variants the survey behind prunebench proposes to
try next; the score is the first-order Taylor term of Molchanov et al. (CVPR 2019)
taken on SSS's factors.

For each factor lambda (a channel's, or a residual block's, see
:mod:`prunebench.methods.sss`):

    sensitivity = mean over mini-batches of | dL/dlambda * lambda |

with L the mean cross-entropy of a mini-batch of ``batch_size`` un-augmented
training images, over ``num_images`` images in all, BatchNorm on its running
statistics (the network as it is used). |dL/dlambda * lambda| is the first-order
change of the loss when lambda is set to 0, i.e. when the structure is removed.

Channel level: the shared selection removes ``pruning_ratio`` of the channels
(``selection: global`` by default, one ranking over all layers). Block level: one
global ranking of the blocks not in ``skip``; the lowest ``pruning_ratio`` of them
are removed whole. Gradients come from ``torch.autograd.grad``: no ``.grad`` is
written and the model is left as it was.
"""
from dataclasses import dataclass
import math
from typing import Dict

import torch
import torch.nn.functional as F

from prunebench.errors import PrunebenchError
from prunebench.methods.activations import evaluating
from prunebench.methods.sss import SSS, SSSConfig
from prunebench.pruning.selection import check_layer_names, check_ratio, select


@dataclass
class SSSSensitivityConfig(SSSConfig):
    num_images: int = 1000  # training images the sensitivities are averaged over
    batch_size: int = 250  # images per mini-batch: each batch's |dL/dlambda x lambda| is one sample


class SSSSensitivity(SSS):
    Config = SSSSensitivityConfig
    paper = "Huang & Wang, ECCV 2018 + first-order sensitivity"

    def sensitivities(self, model, data) -> Dict[str, torch.Tensor]:
        """mean over batches of |dL/dlambda * lambda|, by group name (one value per factor)."""
        f = self.factors(model)
        names = list(f.factors)
        params = [f.factors[n] for n in names]
        totals = [torch.zeros_like(p, dtype=torch.float64) for p in params]
        batches = 0
        gen = torch.Generator(device=data.device).manual_seed(self.seed)
        with evaluating(model), torch.enable_grad():
            for x, y in data.sample_batches(self.cfg.num_images, self.cfg.batch_size, gen):
                grads = torch.autograd.grad(F.cross_entropy(model(x), y), params, allow_unused=True)
                for t, p, g in zip(totals, params, grads):
                    if g is not None:  # None: the loss does not depend on this factor
                        t += (g * p.detach()).abs().double()
                batches += 1
        if batches == 0:
            raise PrunebenchError("sss_sensitivity saw no images: method.num_images must be >= 1 and the training "
                                  "set non-empty")
        return {n: (t / batches).float().cpu() for n, t in zip(names, totals)}

    def scores(self, model, data) -> Dict[str, torch.Tensor]:
        return self.per_group(model, self.sensitivities(model, data).__getitem__)

    def select(self, model, scores, cfg) -> Dict[str, torch.Tensor]:
        if self.cfg.level == "channel":
            return select(scores, cfg)
        check_ratio("method.pruning_ratio", cfg.pruning_ratio)
        check_layer_names(cfg.skip, scores, "method.skip")
        active = [g for g in scores if g not in cfg.skip]
        ranked = sorted(active, key=lambda g: float(scores[g].max()))  # stable: ties go in forward order
        removed = set(ranked[:math.floor(cfg.pruning_ratio * len(active) + 1e-9)])
        return {g: torch.zeros(0, dtype=torch.long) if g in removed else torch.arange(s.numel())
                for g, s in scores.items()}
