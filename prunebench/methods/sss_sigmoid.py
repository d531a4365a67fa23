"""SSS + alpha-sigmoid: Sparse Structure Selection (Huang & Wang, ECCV 2018) with its
scaling factors replaced by AutoPruner's binarising gates (Luo & Wu, Pattern
Recognition 2020). One of the two SSS variants the survey behind prunebench
proposes to try next.

Each structure (a channel after each prunable group's BatchNorm, or a residual
block's branch, as :mod:`prunebench.methods.sss`) is multiplied by the gate

    g = sigmoid(alpha * s)

of a trainable factor s (initialised at 1). alpha rises linearly from
``alpha_start`` to ``alpha_stop`` over the sparse stage, once an epoch, as in
AutoPruner, so the gates turn binary: g -> 1 where s > 0 and g -> 0 where s < 0.
SSS's sparsity penalty acts on the gates: the loss adds ``sparsity`` x sum of all
gates (the gates are positive, so this is their L1 norm). The factors stay out of
SGD's momentum and weight decay and follow SSS's accelerated (Nesterov-style)
gradient update with the penalty's gradient in the loss; the proximal step of SSS
is the identity here (its soft-threshold acts on s, which would pull the gates to
0.5, not to 0).

"A gate reaches 0": a structure is removed when its gate, at the last alpha, is at
or below ``threshold`` (default 0.5, i.e. its binarised gate step(s) is 0: s <= 0).
The kept gates are folded into the BatchNorm they follow, as SSS folds its factors.
"""
from dataclasses import dataclass
from typing import Dict

import torch
from torch import nn

from prunebench.errors import PrunebenchError
from prunebench.methods.autopruner import ramp
from prunebench.methods.sss import Factors, SSS, SSSConfig


@dataclass
class SSSSigmoidConfig(SSSConfig):
    alpha_start: float = 1.0  # gate sigmoid(alpha * s) steepness, raised linearly over the sparse stage
    alpha_stop: float = 100.0


class SSSSigmoid(SSS):
    Config = SSSSigmoidConfig
    paper = "Huang & Wang, ECCV 2018 + alpha-sigmoid gates (Luo & Wu, 2020)"
    capturable = False  # alpha is a host float raised each epoch: a captured step would keep the first one

    def __init__(self, cfg, seed: int = 0):
        super().__init__(cfg, seed)
        if cfg.alpha_start <= 0 or cfg.alpha_stop < cfg.alpha_start:
            raise PrunebenchError(f"sss_sigmoid needs 0 < alpha_start <= alpha_stop, got {cfg.alpha_start}, "
                                  f"{cfg.alpha_stop}")

    def epochs(self) -> int:
        if not self.cfg.sparse_epochs:
            raise PrunebenchError("sss_sigmoid raises alpha over its sparse stage and needs its length: set "
                                  "method.sparse_epochs (conf/method/sss_sigmoid.yaml sets the schedule's epochs)")
        return int(self.cfg.sparse_epochs)

    def sparse_settings(self) -> Dict:
        self.epochs()
        return {**super().sparse_settings(), "alpha_start": self.cfg.alpha_start, "alpha_stop": self.cfg.alpha_stop}

    def attach(self, model: nn.Module, input_shape=None) -> None:
        super().attach(model, input_shape)
        f = self.factors(model)
        f.register_buffer("alpha", torch.tensor(float(self.cfg.alpha_start), device=next(f.parameters()).device))

    def multiplier(self, f: Factors, name: str) -> torch.Tensor:
        return torch.sigmoid(f.alpha * f.factors[name])

    def shrinkage(self, lr: float) -> float:
        return 0.0  # the sparsity penalty is in the loss (on the gates), not a proximal step on the factors

    def penalty(self, model: nn.Module) -> torch.Tensor:
        """sparsity x the gates' L1 norm (each gate is positive)."""
        f = self.factors(model)
        return self.cfg.sparsity * sum(self.multiplier(f, name).sum() for name in f.factors)

    def alpha_after(self, epoch: int) -> float:
        return ramp(self.cfg.alpha_start, self.cfg.alpha_stop, self.epochs(), epoch)

    def on_epoch_end(self, model: nn.Module, epoch: int) -> None:
        self.factors(model).alpha.fill_(self.alpha_after(epoch))
