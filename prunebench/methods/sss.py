"""Sparse Structure Selection (Huang & Wang, "Data-Driven Sparse Structure Selection
for Deep Neural Networks", ECCV 2018).

A scaling factor multiplies the output of each structure: one per channel after
each prunable group's BatchNorm (``level=channel``), or one per residual block on
the residual branch's output before the addition (``level=block``, ResNets). The
sparse stage trains the network with SGD and the factors with the paper's
accelerated proximal gradient (gradient step, soft-threshold by lr x sparsity,
Nesterov-style momentum: the paper's Eq. 10-12); a structure whose factor ends
exactly at zero is removed (channels: ``selection: threshold``; blocks: the whole
block). Before surgery the factors are folded into the BatchNorm they follow.

Departures: channel-level factors sit only on the groups the models expose (on a
ResNet the first convolution of each block), not on every layer; a model offers
block-level pruning by listing its residual blocks (``residual_blocks()``); the factors are
not clipped at zero as the authors' MXNet code does (the paper states no such
constraint, and a negative factor folds into BatchNorm like a positive one); a
layer keeps ``min_channels`` channels even if all its factors vanish, as every
prunebench method does."""
from dataclasses import dataclass
from enum import StrEnum
from typing import Callable, Dict, List, Tuple

import torch
from torch import nn

from prunebench.bounds import at_least, within
from prunebench.config import MethodConfig
from prunebench.errors import PrunebenchError
from prunebench.methods.base import Method, require_batchnorm
from prunebench.models import conv_groups
from prunebench.models.groups import scale_channels
from prunebench.pruning.selection import check_layer_names, select

ATTR = "sss_factors"  # the submodule attach() adds to the model


def soft_threshold(z: torch.Tensor, t: float) -> torch.Tensor:
    """The proximal operator of t * ||.||_1: shrink towards zero by t, exactly 0 within [-t, t]."""
    return torch.sign(z) * torch.clamp(z.abs() - t, min=0.0)


class Factors(nn.Module):
    """The scaling factors of one model, by group name, with the APG velocity of each
    (a buffer: a resumed sparse stage goes on with the same momentum)."""

    def __init__(self, sizes: Dict[str, int], targets: Dict[str, List[Tuple[str, int]]]):
        super().__init__()
        self.factors = nn.ParameterDict({n: nn.Parameter(torch.ones(c)) for n, c in sizes.items()})
        self.velocity = nn.Module()
        for n, c in sizes.items():
            self.velocity.register_buffer(n, torch.zeros(c))
        # group name -> (path, offset) of each BatchNorm whose output channels from the offset the factor scales
        # (offset None: all of them, by one factor: a block's)
        self.targets = {n: list(t) for n, t in targets.items()}
        self.handles: List = []
        self.grads: Dict[str, torch.Tensor] = {}


Level = StrEnum("Level", ["channel", "block"])


@dataclass
class SSSConfig(MethodConfig):
    level: Level = Level.channel  # channel: a factor per channel | block: a factor per residual block (ResNets)
    sparsity: float = 1e-4  # L1 weight on the scaling factors, applied by the proximal (soft-threshold) step
    momentum: float = 0.9  # of the accelerated proximal gradient update of the factors


class SSS(Method):
    Config = SSSConfig
    sparse = True
    paper = "Huang & Wang, ECCV 2018"

    def __init__(self, cfg, seed: int = 0):
        super().__init__(cfg, seed)
        at_least("method.sparsity", cfg.sparsity, 0)
        within("method.momentum", cfg.momentum, 0, 1, open_high=True)

    def sparse_settings(self) -> Dict:
        return {"level": self.cfg.level, "sparsity": self.cfg.sparsity, "momentum": self.cfg.momentum}

    # -- the factors -------------------------------------------------------

    def structures(self, model: nn.Module) -> Tuple[Dict[str, int], Dict[str, List[Tuple[str, int]]]]:
        """Factor sizes and the BatchNorms (path, first channel) each factor scales, by group name:
        a channel's factor scales it wherever it comes out of a BatchNorm (every later layer's,
        inside a concatenation)."""
        if self.cfg.level == "channel":
            groups = conv_groups(model)
            return ({g.name: model.get_submodule(g.conv).out_channels for g in groups},
                    {g.name: g.normalized() for g in groups})
        if not hasattr(model, "residual_blocks"):
            raise PrunebenchError(f"method.level=block needs a ResNet or another model listing residual blocks that can be removed whole "
                                  f"(a factor per block); "
                                  f"{type(model).__name__} has none: use method.level=channel")
        blocks = model.residual_blocks()  # the factor scales the BatchNorm that ends each residual branch
        return {b.name: 1 for b in blocks}, {b.name: [(b.bn, None)] for b in blocks}

    def check_model(self, model: nn.Module) -> None:
        self.structures(model)
        if self.cfg.level == "channel":  # the factors scale, and fold into, the BatchNorms
            require_batchnorm(conv_groups(model), self.cfg.name)

    def attach(self, model: nn.Module, input_shape=None) -> None:
        sizes, targets = self.structures(model)
        factors = Factors(sizes, targets)
        device = next(model.parameters()).device
        model.add_module(ATTR, factors.to(device))
        for name, places in targets.items():
            for path, offset in places:
                def scale(module, inputs, output, name=name, offset=offset):
                    m = self.multiplier(factors, name)
                    return output * m.view(1, -1, 1, 1) if offset is None else scale_channels(output, offset, m)
                factors.handles.append(model.get_submodule(path).register_forward_hook(scale))

    def multiplier(self, f: Factors, name: str) -> torch.Tensor:
        """What structure ``name``'s output is multiplied by: here its factor itself."""
        return f.factors[name]

    @staticmethod
    def factors(model: nn.Module) -> Factors:
        if not hasattr(model, ATTR):
            raise PrunebenchError("sss scores the scaling factors of its sparse stage, which this model does not "
                                  "carry; sss prunes in one step (method.iterations=1)")
        return getattr(model, ATTR)

    @torch.no_grad()
    def detach(self, model: nn.Module) -> None:
        f = self.factors(model)
        for h in f.handles:
            h.remove()
        for name, places in f.targets.items():
            lam = self.multiplier(f, name).detach()
            for path, offset in places:
                bn = model.get_submodule(path)
                sl = slice(None) if offset is None else slice(offset, offset + lam.numel())
                bn.weight[sl] *= lam  # lam * (gamma * xhat + beta) = (lam * gamma) * xhat + lam * beta
                bn.bias[sl] *= lam
        delattr(model, ATTR)

    # -- the accelerated proximal gradient ----------------------------------

    def regularize(self, model: nn.Module) -> None:
        # take the factors out of the SGD step (no momentum, no weight decay): after_step updates them
        f = self.factors(model)
        f.grads = {}
        for name, p in f.factors.items():
            if p.grad is not None:
                f.grads[name] = p.grad
                p.grad = None

    def shrinkage(self, lr: float) -> float:
        """The soft-threshold of one proximal step: lr x sparsity (the L1 term's proximal operator)."""
        return lr * self.cfg.sparsity

    @torch.no_grad()
    def after_step(self, model: nn.Module, lr: float) -> None:
        """The paper's APG in its momentum form, with the factors held at the look-ahead point:
        z = lam - lr * grad;  v = S_{lr * sparsity}(z) - lam + mu * v;  lam = S_{lr * sparsity}(z) + mu * v."""
        f = self.factors(model)
        mu = self.cfg.momentum
        for name, grad in f.grads.items():
            lam, v = f.factors[name], getattr(f.velocity, name)
            prox = soft_threshold(lam - lr * grad, self.shrinkage(lr))
            v.copy_(prox - lam + mu * v)
            lam.copy_(prox + mu * v)
        f.grads = {}

    # -- scores and selection ---------------------------------------------

    def scores(self, model, data) -> Dict[str, torch.Tensor]:
        f = self.factors(model)
        return self.per_group(model, lambda name: self.multiplier(f, name).detach().abs())

    def per_group(self, model, value: Callable[[str], torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Each channel group's scores from ``value`` of its factor's name: at block level the
        block's value stands for every channel of each group inside it."""
        out = {}
        if self.cfg.level == "block":
            for b in model.residual_blocks():
                s = value(b.name)
                for g in b.groups:
                    out[g] = s.expand(self.width(model, g)).clone()
            return out
        for g in conv_groups(model):
            out[g.name] = value(g.name)
        return out

    @staticmethod
    def width(model, group: str) -> int:
        return next(model.get_submodule(g.conv).out_channels for g in conv_groups(model) if g.name == group)

    def select(self, model, scores, cfg) -> Dict[str, torch.Tensor]:
        if self.cfg.level == "channel":
            return select(scores, cfg)
        # block level: a block whose factor is at or below the threshold (0: exactly zero) goes as a
        # whole (inner width 0); the others stay whole
        check_layer_names(cfg.skip, scores, "method.skip")
        keep = {}
        for g, s in scores.items():
            whole = g in cfg.skip or bool(s.max() > cfg.threshold)
            keep[g] = torch.arange(s.numel()) if whole else torch.zeros(0, dtype=torch.long)
        return keep
