"""Measurements of a model: parameters, FLOPs (counted by torch.utils.flop_counter,
2 x multiply-accumulates of convolutions and matrix products) and latency.

Latency is timed with ``torch.utils.benchmark.Timer.blocked_autorange``: it warms
up while choosing how many forwards one timed block holds (so the timer's own
overhead stays below 0.01%), synchronises the device around every block, and runs
blocks until ``min_run_time`` seconds have passed. We report the median time of one
forward over the blocks and their interquartile range (ms), so one slow block (a
neighbour process, a clock change) moves neither much."""
from typing import Dict, Optional, Sequence

import numpy as np

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


LATENCY_MIN_RUN_TIME = 0.2  # seconds of timed forwards per model
LATENCY_MIN_BLOCKS = 20  # timed blocks at least, whatever min_run_time gives (config: measure.latency_repeats)


@torch.no_grad()
def latency(model: nn.Module, input_shape: Sequence[int], batch: int = 1,
            min_run_time: float = LATENCY_MIN_RUN_TIME, min_blocks: int = LATENCY_MIN_BLOCKS) -> Dict:
    """Time one forward of ``batch`` images of shape (C, H, W) on the model's device, in eval mode:
    ``{"median_ms", "iqr_ms", "blocks", "per_block", "batch", "device"}`` (median and interquartile
    range over timed blocks of ``per_block`` forwards each, in milliseconds per forward)."""
    from torch.utils import benchmark  # imported here: it pulls in a C++ toolchain check

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    x = torch.randn(batch, *input_shape, device=device)
    timer = benchmark.Timer(stmt="model(x)", globals={"model": model, "x": x},
                            num_threads=torch.get_num_threads())
    m = timer.blocked_autorange(min_run_time=min_run_time)
    times = list(m.times)  # seconds per forward, one entry per block
    while len(times) < min_blocks:
        times.append(timer.timeit(m.number_per_run).times[0])
    model.train(was_training)
    q1, median, q3 = np.percentile(np.array(times) * 1e3, [25, 50, 75])
    return {"median_ms": float(median), "iqr_ms": float(q3 - q1), "blocks": len(times),
            "per_block": m.number_per_run, "batch": batch, "device": str(device)}


def latency_ms(model: nn.Module, input_shape: Sequence[int], batch: int = 1, repeats: int = LATENCY_MIN_BLOCKS,
               min_run_time: float = LATENCY_MIN_RUN_TIME) -> float:
    """Median time of one forward of ``batch`` images, in milliseconds (see :func:`latency`);
    ``repeats``: timed blocks at least."""
    return latency(model, input_shape, batch, min_run_time, repeats)["median_ms"]
