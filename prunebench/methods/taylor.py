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
filter's convolution weights, (sum of g_w * w)^2.

Departures from the paper: the paper accumulates the importance during fine-tuning
(with momentum) and removes a few channels every few dozen mini-batches; here the
trained model is scored once on un-augmented training batches and pruned one-shot by
the shared selection; ``iterations`` with ``iteration_epochs`` of fine-tuning in
between gives the iterative variant. BN runs in inference mode (running statistics):
the change in loss is that of the network as it is used, and with batch statistics
the loss barely depends on a filter's scale, so sum(g_w * w) would all but vanish
for the ``weight`` target. Gradients come from ``torch.autograd.grad``: no ``.grad`` is
written and the model is left as it was.
"""
from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from prunebench.errors import PrunebenchError
from prunebench.methods.base import Method
from prunebench.models import conv_groups

TARGETS = ("bn", "weight")


class Taylor(Method):
    paper = "Molchanov et al., CVPR 2019"

    def __init__(self, cfg, seed: int = 0):
        super().__init__(cfg, seed)
        if cfg.target not in TARGETS:
            raise PrunebenchError(f"method.target must be one of {', '.join(TARGETS)}, got {cfg.target!r}")

    def parameters_of(self, model: nn.Module, group) -> List[torch.Tensor]:
        """The parameters whose gradient x value, summed per output channel, gives the group's importance."""
        if self.cfg.target == "bn":
            bn = model.get_submodule(group.bn)
            return [bn.weight, bn.bias]
        return [model.get_submodule(group.conv).weight]

    def scores(self, model, data) -> Dict[str, torch.Tensor]:
        groups = conv_groups(model)
        params = {g.name: self.parameters_of(model, g) for g in groups}
        flat = [p for g in groups for p in params[g.name]]
        totals = {g.name: torch.zeros(params[g.name][0].shape[0], dtype=torch.float64, device=flat[0].device)
                  for g in groups}
        modes = {m: m.training for m in model.modules()}
        batches = 0
        try:
            model.eval()  # BN on its running statistics, which stay as they are
            gen = torch.Generator(device=data.device).manual_seed(self.seed)
            with torch.enable_grad():
                for x, y in data.sample_batches(self.cfg.num_images, self.cfg.batch_size, gen):
                    loss = F.cross_entropy(model(x), y)
                    grads = iter(torch.autograd.grad(loss, flat, allow_unused=True))
                    for g in groups:
                        first_order = torch.zeros_like(totals[g.name])
                        for p, grad in zip(params[g.name], grads):
                            if grad is not None:  # None: the loss does not depend on p
                                first_order += (grad * p.detach()).reshape(p.shape[0], -1).sum(1).double()
                        totals[g.name] += first_order ** 2
                    batches += 1
        finally:
            for m, mode in modes.items():
                m.training = mode
        if batches == 0:
            raise PrunebenchError("Taylor saw no images: method.num_images must be >= 1 and the training set non-empty")
        return {name: (t / batches).float().cpu() for name, t in totals.items()}
