"""AutoPruner (Luo & Wu, "AutoPruner: An End-to-End Trainable Filter Pruning Method
for Efficient Deep Model Inference", Pattern Recognition 2020; arXiv 2018).

A gate follows each prunable layer: its activation is averaged over the batch,
max-pooled 2x2, flattened and mapped by a fully connected layer (initialised at
``fc_init_scale`` x MSRA) to one value per channel, and sigmoid(alpha x) of that is
the code v that multiplies the layer's output. alpha rises linearly from
``alpha_start`` to ``alpha_stop`` over the sparse stage (fine-tuning the trained
model), so the code turns binary, while the loss adds, per gate,
lambda (||v||_1 / C - r)^2 with r = 1 - pruning_ratio (``layer_ratios`` per layer)
and lambda = 100 |r_b - r| held constant, r_b = ||v||_1 / C the current ratio.
Channels whose code is at or below ``threshold`` (0.5 of the binary code) are
removed with the gates; the kept channels' code, about 1, is folded into their
BatchNorm.

Departures: all gates train at once (the authors' VGG-16 code prunes one layer at
a time); alpha steps up once an epoch along a fixed line, where the authors' code
steps every 100 iterations and adds increments while codes are not yet binary;
the sparse stage uses the schedule's weight decay; lambda comes from the current
real-valued ratio, as the paper writes it, not from the 20-iteration binarised
ratio of the authors' code. Outside training a gate applies its running code (an
average of the training codes, decay ``CODE_MOMENTUM``) instead of a code from the
evaluated batch, so evaluation is per image and the code is what is scored and
folded, much as the authors' code validates with its 20-iteration binary index.
On a ResNet the gates sit on the first convolution of each block, the only
channels the models let prunebench remove. Inside a concatenation (DenseNet) a
layer's channels come out of the BatchNorm of every later layer that reads them:
the code, computed from the first of them, multiplies and is folded into each."""
from dataclasses import dataclass
import math
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from prunebench.config import MethodConfig
from prunebench.errors import PrunebenchError
from prunebench.methods.base import Method, require_batchnorm
from prunebench.models import conv_groups
from prunebench.models.groups import scale_channels
from prunebench.pruning.selection import check_layer_names, check_ratio

ATTR = "autopruner_gates"  # the submodule attach() adds to the model
CODE_MOMENTUM = 0.1  # weight of the newest training code in the running code (about the last 10-20 steps)


def pool(a: torch.Tensor) -> torch.Tensor:
    """The gate's 2x2 max pooling (a side of 1 pixel is left as it is; odd sides round up)."""
    k = (min(2, a.shape[-2]), min(2, a.shape[-1]))
    return F.max_pool2d(a, k, k, ceil_mode=True)


def ramp(start: float, stop: float, epochs: int, epoch: int) -> float:
    """alpha for the epoch after 0-based ``epoch`` of ``epochs``: linear from ``start`` (first
    epoch) to ``stop`` (last epoch, and after it)."""
    t = min(1.0, (epoch + 1) / max(epochs - 1, 1))
    return start + (stop - start) * t


class Gate(nn.Module):
    def __init__(self, channels: int, in_features: int, init_scale: float, generator: torch.Generator):
        super().__init__()
        self.fc = nn.Linear(in_features, channels)
        with torch.no_grad():
            self.fc.weight.normal_(0.0, init_scale * math.sqrt(2.0 / in_features), generator=generator)
            self.fc.bias.zero_()
        self.register_buffer("running_code", torch.ones(channels))

    def code(self, x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """The code of a batch: x is the layer's pre-ReLU output (N, C, H, W); returns (C,)."""
        a = F.relu(x).mean(0, keepdim=True)  # batch-average pooling of the activation
        return torch.sigmoid(alpha * self.fc(pool(a).flatten(1))).squeeze(0)


class Gates(nn.Module):
    def __init__(self, gates: Dict[str, Gate], bns: Dict[str, List[Tuple[str, int]]], alpha: float):
        super().__init__()
        self.gates = nn.ModuleDict(gates)
        self.register_buffer("alpha", torch.tensor(float(alpha)))
        # group name -> (path, first channel) of each BatchNorm the gate follows; the code comes from the first
        self.bns = {n: list(b) for n, b in bns.items()}
        self.handles: List = []
        self.codes: Dict[str, torch.Tensor] = {}  # the codes of the last training forward, for the penalty


@dataclass
class AutoPrunerConfig(MethodConfig):
    alpha_start: float = 1.0  # sigmoid(alpha * x) steepness, raised linearly over the sparse stage
    alpha_stop: float = 100.0
    fc_init_scale: float = 10.0  # gate FC weights start at this multiple of MSRA init


class AutoPruner(Method):
    Config = AutoPrunerConfig
    sparse = True
    # its gates hand the batch's codes from the forward hooks to penalty() through a Python dict; traced by
    # torch.compile the run drifts from the eager one (weights 2e-2 apart after 20 float64 steps of a small
    # VGG), so train.compile=on trains its sparse stage eagerly
    capturable = False
    paper = "Luo & Wu, Pattern Recognition 2020"

    def __init__(self, cfg, seed: int = 0):
        super().__init__(cfg, seed)
        if cfg.fc_init_scale <= 0 or cfg.alpha_start <= 0 or cfg.alpha_stop < cfg.alpha_start:
            raise PrunebenchError(f"autopruner needs fc_init_scale > 0 and 0 < alpha_start <= alpha_stop, got "
                                  f"{cfg.fc_init_scale}, {cfg.alpha_start}, {cfg.alpha_stop}")

    def check_model(self, model: nn.Module) -> None:
        require_batchnorm(conv_groups(model), "autopruner")

    def epochs(self) -> int:
        if not self.cfg.sparse_epochs:
            raise PrunebenchError("autopruner raises alpha over its sparse stage and needs its length: set "
                                  "method.sparse_epochs (conf/method/autopruner.yaml sets it)")
        return int(self.cfg.sparse_epochs)

    def sparse_settings(self) -> Dict:
        self.epochs()
        c = self.cfg
        return {"alpha_start": c.alpha_start, "alpha_stop": c.alpha_stop, "fc_init_scale": c.fc_init_scale,
                "pruning_ratio": c.pruning_ratio, "layer_ratios": dict(c.layer_ratios), "skip": list(c.skip)}

    def target(self, group: str) -> float:
        """r: the fraction of the group's channels its code should keep."""
        return 1.0 - self.cfg.layer_ratios.get(group, self.cfg.pruning_ratio)

    # -- the gates ---------------------------------------------------------

    def attach(self, model: nn.Module, input_shape) -> None:
        c = self.cfg
        groups = conv_groups(model)
        names = [g.name for g in groups]
        check_layer_names(c.skip, names, "method.skip")
        check_layer_names(c.layer_ratios, names, "method.layer_ratios")
        for name, r in c.layer_ratios.items():
            check_ratio(f"method.layer_ratios.{name}", r)
        groups = [g for g in groups if g.name not in c.skip]
        # one forward of a blank image gives each gated layer's output shape (the FC's input size)
        shapes, handles = {}, []
        device = next(model.parameters()).device
        for g in groups:
            def record(module, inputs, output, name=g.name):
                shapes[name] = tuple(output.shape[2:])
            handles.append(model.get_submodule(g.normalized()[0][0]).register_forward_hook(record))
        was_training = model.training
        try:
            model.eval()
            with torch.no_grad():
                model(torch.zeros(1, *input_shape, device=device))
        finally:
            for h in handles:
                h.remove()
            model.train(was_training)
        gen = torch.Generator().manual_seed(self.seed)
        gates = {}
        for g in groups:
            ch = model.get_submodule(g.conv).out_channels
            h, w = shapes[g.name]
            in_features = ch * pool(torch.zeros(1, 1, h, w)).numel()
            gates[g.name] = Gate(ch, in_features, c.fc_init_scale, gen)
        container = Gates(gates, {g.name: g.normalized() for g in groups}, c.alpha_start).to(device)
        model.add_module(ATTR, container)
        for name, places in container.bns.items():
            for k, (path, offset) in enumerate(places):
                def gate_output(module, inputs, output, name=name, offset=offset, first=k == 0):
                    gate = container.gates[name]
                    if not module.training:
                        v = gate.running_code
                    elif first:  # the code of the batch, from the channels' first BatchNorm output
                        v = gate.code(output[:, offset:offset + gate.running_code.numel()], container.alpha)
                        container.codes[name] = v
                        with torch.no_grad():
                            gate.running_code.lerp_(v.detach(), CODE_MOMENTUM)
                    else:  # the same code wherever else the channels come out of a BatchNorm
                        v = container.codes[name]
                    return scale_channels(output, offset, v)  # v > 0: the same as gating after the ReLU
                container.handles.append(model.get_submodule(path).register_forward_hook(gate_output))

    @staticmethod
    def gates(model: nn.Module) -> Gates:
        if not hasattr(model, ATTR):
            raise PrunebenchError("autopruner scores the codes of its sparse stage's gates, which this model does "
                                  "not carry; autopruner prunes in one step (method.iterations=1)")
        return getattr(model, ATTR)

    @torch.no_grad()
    def detach(self, model: nn.Module) -> None:
        container = self.gates(model)
        for h in container.handles:
            h.remove()
        for name, places in container.bns.items():
            code = container.gates[name].running_code
            for path, offset in places:
                bn = model.get_submodule(path)
                bn.weight[offset:offset + code.numel()] *= code
                bn.bias[offset:offset + code.numel()] *= code
        delattr(model, ATTR)

    # -- training ----------------------------------------------------------

    def alpha_after(self, epoch: int) -> float:
        """alpha for the epoch after 0-based ``epoch``: linear from alpha_start (first epoch)
        to alpha_stop (last epoch, and after it)."""
        return ramp(self.cfg.alpha_start, self.cfg.alpha_stop, self.epochs(), epoch)

    def penalty(self, model: nn.Module):
        container = self.gates(model)
        total = None
        for name, v in container.codes.items():
            r = self.target(name)
            ratio = v.abs().sum() / v.numel()
            lam = 100.0 * (ratio.detach() - r).abs()  # a constant in the gradient
            term = lam * (ratio - r) ** 2
            total = term if total is None else total + term
        container.codes = {}
        return total

    def on_epoch_end(self, model: nn.Module, epoch: int) -> None:
        self.gates(model).alpha.fill_(self.alpha_after(epoch))

    # -- scores --------------------------------------------------------------

    def scores(self, model, data) -> Dict[str, torch.Tensor]:
        """The running code of each gated layer (ungated layers: ones, so they keep everything
        under the threshold selection as under skip)."""
        container = self.gates(model)
        out = {}
        for g in conv_groups(model):
            if g.name in container.gates:
                out[g.name] = container.gates[g.name].running_code.detach().clone()
            else:
                out[g.name] = torch.ones(model.get_submodule(g.conv).out_channels)
        return out
