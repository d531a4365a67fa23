"""First-order Taylor importance (Molchanov, Mallya, Tyree, Frosio, Kautz,
"Importance Estimation for Neural Network Pruning", CVPR 2019): the squared
first-order change of the training loss when a channel is removed,
(sum over the channel's parameters of gradient x parameter)^2, computed on each
mini-batch and averaged over the mini-batches of ``num_images`` training images.

``target: bn`` (the paper's "Taylor FO on BN"): the channel's parameters are its
BatchNorm scale and shift, so the score is (g_gamma * gamma + g_beta * beta)^2.
This equals the paper's gate formulation: a gate z = 1 multiplying the BN output
y = gamma * x_hat + beta has dL/dz = sum over positions of dL/dy * y
= g_gamma * gamma + g_beta * beta. ``target: weight``: the parameters are the
filter's convolution weights, (sum of g_w * w)^2. Inside a concatenation (DenseNet)
a channel passes through the BatchNorm of every later layer that reads it: the gate
multiplies all of them, and its dL/dz sums their g_gamma * gamma + g_beta * beta.

Departures from the paper: the paper accumulates the importance during fine-tuning
(with momentum) and removes a few channels every few dozen mini-batches; here the
trained model is scored once on un-augmented training batches and pruned one-shot by
the shared selection; ``iterations`` with ``iteration_epochs`` of fine-tuning in
between gives the iterative variant. BN runs in inference mode (running statistics):
the change in loss is that of the network as it is used, and with batch statistics
the loss barely depends on a filter's scale, so sum(g_w * w) would all but vanish
for the ``weight`` target. Gradients come from ``torch.autograd.grad``: no ``.grad`` is
written and the model is left as it was. On a ViT (no BatchNorm: ``target: weight``) a
head's parameters are its q, k and v rows, an MLP unit's its fc1 row.
"""
from dataclasses import dataclass
from enum import StrEnum
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from prunebench.errors import PrunebenchError
from prunebench.methods.base import Method, require_batchnorm
from prunebench.methods.base import StatisticsConfig
from prunebench.models import conv_groups, filter_rows, group_width



Target = StrEnum("Target", ["bn", "weight"])


@dataclass
class TaylorConfig(StatisticsConfig):
    target: Target = Target.bn  # bn: (sum of grad x gamma)^2 per channel | weight: (sum of grad x w)^2 per filter


class Taylor(Method):
    Config = TaylorConfig
    scores_units = True
    paper = "Molchanov et al., CVPR 2019"

    def check_model(self, model: nn.Module) -> None:
        if self.cfg.target == "bn" and getattr(model, "transformer", False):
            raise PrunebenchError("taylor's method.target=bn reads BatchNorm scales, which a transformer has none of; "
                                  "set method.target=weight (a head's q/k/v rows, an MLP unit's fc1 row)")
        if self.cfg.target == "bn":
            require_batchnorm(conv_groups(model), "taylor with method.target=bn")
        super().check_model(model)

    def parameters_of(self, model: nn.Module, group) -> List[Tuple[torch.Tensor, int]]:
        """(parameter, offset) pairs whose gradient x value, summed per output channel from the
        offset on, gives the group's importance: its BatchNorm's scale and shift (inside a
        concatenation, those of every BatchNorm that reads it), or its filters."""
        if self.cfg.target == "bn":
            out = []
            for path, offset in group.normalized():
                bn = model.get_submodule(path)
                out += [(bn.weight, offset), (bn.bias, offset)]
            return out
        return [(model.get_submodule(group.conv).weight, 0)]

    def scores(self, model, data) -> Dict[str, torch.Tensor]:
        groups = conv_groups(model)
        params = {g.name: self.parameters_of(model, g) for g in groups}
        flat = list({id(p): p for g in groups for p, _ in params[g.name]}.values())  # each tensor once
        width = {g.name: group_width(model, g) for g in groups}
        totals = {g.name: torch.zeros(width[g.name], dtype=torch.float64, device=flat[0].device) for g in groups}
        modes = {m: m.training for m in model.modules()}
        batches = 0
        try:
            model.eval()  # BN on its running statistics, which stay as they are
            gen = torch.Generator(device=data.device).manual_seed(self.seed)
            with torch.enable_grad():
                for x, y in data.sample_batches(self.cfg.num_images, self.cfg.batch_size, gen):
                    loss = F.cross_entropy(model(x), y)
                    grads = dict(zip((id(p) for p in flat), torch.autograd.grad(loss, flat, allow_unused=True)))
                    for g in groups:
                        first_order = torch.zeros_like(totals[g.name])
                        for p, offset in params[g.name]:
                            grad = grads[id(p)]
                            if grad is not None and self.cfg.target == "weight":  # one row per channel
                                first_order += filter_rows(model, g, grad * p.detach()).sum(1).double()
                            elif grad is not None:  # None: the loss does not depend on p
                                part = (grad * p.detach())[offset:offset + width[g.name]]
                                first_order += part.reshape(part.shape[0], -1).sum(1).double()
                        totals[g.name] += first_order ** 2
                    batches += 1
        finally:
            for m, mode in modes.items():
                m.training = mode
        if batches == 0:
            raise PrunebenchError("Taylor saw no images: method.num_images must be >= 1 and the training set non-empty")
        return {name: (t / batches).float().cpu() for name, t in totals.items()}
