"""SNIP (Lee, Ajanthan, Torr, "SNIP: Single-shot Network Pruning based on Connection
Sensitivity", ICLR 2019): before any training, each connection j of the freshly
initialised network is scored by its connection sensitivity |g_j| = |dL/dc_j| at
c = 1, which is |w_j x dL/dw_j|, on one mini-batch of training images, normalised
to s_j = |g_j| / sum_k |g_k| over all prunable weights; the connections of highest
sensitivity are kept (one global ranking) and the sparse network is trained as usual.

Departures: the network is the unpruned model's own initialisation (Kaiming normal
convolutions) rather than the paper's variance-scaling init, so that the lottery row
(kept weights reset to that init) is exactly SNIP's "prune at init, then train"; the
batch is un-augmented. The normalisation divides every score by one positive number,
so it changes neither the global ranking nor a per-layer one: it is kept for fidelity
(the scores saved are the paper's s_j), not because selection needs it."""
from dataclasses import dataclass
from typing import Dict

import torch
import torch.nn.functional as F

from prunebench.bounds import at_least
from prunebench.config import MethodConfig
from prunebench.errors import PrunebenchError
from prunebench.methods.base import Method
from prunebench.pruning.surgery import prunable_weights


def sensitivities(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> Dict[str, torch.Tensor]:
    """|w x dL/dw| of every prunable weight for the cross-entropy of batch (x, y), normalised to sum
    to 1, with the model in training mode (batch statistics, as during training). The model is left
    as it was: BatchNorm running statistics are restored, no ``.grad`` is written, no step is taken."""
    weights = prunable_weights(model)
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    was_training = model.training
    model.train()
    try:
        loss = F.cross_entropy(model(x), y)
        grads = torch.autograd.grad(loss, list(weights.values()))
    finally:
        model.train(was_training)
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
    sens = {name: (g * w.detach()).abs() for (name, w), g in zip(weights.items(), grads)}
    total = sum(s.sum(dtype=torch.float64) for s in sens.values())
    if not torch.isfinite(total) or total <= 0:
        raise PrunebenchError(f"SNIP: the connection sensitivities sum to {total.item()}; the batch gives no "
                              f"usable gradient (a diverged or degenerate initialisation?)")
    return {name: (s.double() / total).float() for name, s in sens.items()}


@dataclass
class SNIPConfig(MethodConfig):
    batch_size: int = 128  # images in the one batch the sensitivities come from


class SNIP(Method):
    Config = SNIPConfig
    kind = "weight"
    prune_at_init = True
    paper = "Lee et al., ICLR 2019"

    def scores(self, model, data) -> Dict[str, torch.Tensor]:
        at_least("method.batch_size", self.cfg.batch_size, 1)
        gen = torch.Generator(device=data.device).manual_seed(self.seed)
        x, y = next(data.sample_batches(self.cfg.batch_size, self.cfg.batch_size, gen))
        return sensitivities(model, x, y)
