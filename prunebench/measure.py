"""Measurements of a model: parameters, FLOPs (counted by torch.utils.flop_counter,
2 x multiply-accumulates of convolutions and matrix products) and latency (median
of timed forwards)."""
import statistics
import time
from typing import Dict, Optional, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from prunebench import models


def count_params(model: nn.Module, masks: Optional[Dict[str, torch.Tensor]] = None) -> int:
    """Parameters; with weight-level ``masks``, the non-zero count (masked weights excluded)."""
    masks = masks or {}
    return sum(int(masks[n].sum()) if n in masks else p.numel() for n, p in model.named_parameters())


def count_flops(model: nn.Module, input_shape: Sequence[int],
                masks: Optional[Dict[str, torch.Tensor]] = None) -> int:
    """FLOPs of one forward pass of one image of shape (C, H, W). With weight-level
    ``masks``, each layer's FLOPs are scaled by the fraction of its weights kept."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *input_shape, device=device))
    model.train(was_training)
    total = counter.get_total_flops()
    if masks:
        per_module = counter.get_flop_counts()
        prefix = type(model).__name__
        for name, mask in masks.items():
            layer_flops = sum(per_module.get(f"{prefix}.{name.rsplit('.', 1)[0]}", {}).values())
            total -= layer_flops * (1 - mask.float().mean().item())
    return int(round(total))


def spec_flops(spec: Dict, input_shape: Sequence[int]) -> int:
    """FLOPs of the architecture ``spec`` without allocating its weights."""
    with torch.device("meta"):
        model = models.build(spec)
    return count_flops(model, input_shape)


def spec_params(spec: Dict) -> int:
    """Parameters of the architecture ``spec`` without allocating its weights."""
    with torch.device("meta"):
        model = models.build(spec)
    return count_params(model)


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
