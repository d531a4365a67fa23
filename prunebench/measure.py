"""Measurements of a model: parameters, FLOPs (counted by torch.utils.flop_counter,
2 x multiply-accumulates of convolutions and matrix products) and latency (median
of timed forwards)."""
import statistics
import time
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from prunebench import models


def count_params(model: nn.Module, masks: Optional[Dict[str, torch.Tensor]] = None) -> int:
    """Parameters; with weight-level ``masks``, the non-zero count (masked weights excluded)."""
    masks = masks or {}
    return sum(int(masks[n].sum()) if n in masks else p.numel() for n, p in model.named_parameters())


def _counter(model: nn.Module, input_shape: Sequence[int]) -> FlopCounterMode:
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *input_shape, device=device))
    model.train(was_training)
    return counter


def _layer_flops(model: nn.Module, counter: FlopCounterMode, names) -> Dict[str, int]:
    per_module, prefix = counter.get_flop_counts(), type(model).__name__
    return {n: int(sum(per_module.get(f"{prefix}.{n}", {}).values())) for n in names}


def count_flops(model: nn.Module, input_shape: Sequence[int],
                masks: Optional[Dict[str, torch.Tensor]] = None) -> int:
    """FLOPs of one forward pass of one image of shape (C, H, W). With weight-level
    ``masks``, each layer's FLOPs are scaled by the fraction of its weights kept."""
    counter = _counter(model, input_shape)
    total = counter.get_total_flops()
    if masks:
        layers = _layer_flops(model, counter, {name.rsplit(".", 1)[0] for name in masks})
        for name, mask in masks.items():
            total -= layers[name.rsplit(".", 1)[0]] * (1 - mask.float().mean().item())
    return int(round(total))


def _shell(spec: Dict) -> nn.Module:
    """The model of ``spec`` with uninitialised weights on the CPU: FLOPs do not read weights,
    and a CPU forward is far faster than one on the meta device for deep models."""
    with torch.device("meta"):
        model = models.build(spec)
    model = model.to_empty(device="cpu")
    for m in model.modules():
        if isinstance(m, models.ChannelSelection):
            m.reset_parameters()  # its index is architecture, not a weight
    return model


def spec_flops(spec: Dict, input_shape: Sequence[int]) -> int:
    """FLOPs of the architecture ``spec`` without initialising its weights."""
    return count_flops(_shell(spec), input_shape)


def spec_layer_flops(spec: Dict, input_shape: Sequence[int], layers) -> Tuple[int, Dict[str, int]]:
    """FLOPs of ``spec`` and of each module path in ``layers`` (one forward)."""
    model = _shell(spec)
    counter = _counter(model, input_shape)
    return int(round(counter.get_total_flops())), _layer_flops(model, counter, layers)


@torch.no_grad()
def latency_ms(model: nn.Module, input_shape: Sequence[int], batch: int = 1, repeats: int = 20) -> float:
    """Median wall time of one forward of ``batch`` images, in milliseconds."""
    device = next(model.parameters()).device
    model.eval()
    x = torch.randn(batch, *input_shape, device=device)
    for _ in range(3):
        model(x)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        model(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)
