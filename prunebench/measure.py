"""Measurements of a model: parameters, FLOPs (counted by torch.utils.flop_counter,
2 x multiply-accumulates of convolutions and matrix products) and latency.

Latency is timed with ``torch.utils.benchmark.Timer``: a few untimed forwards
first, then timed blocks of forwards (about 20 ms each), the device synchronised
before each clock reading. We report the median time of one forward over the
blocks and their interquartile range (ms), so one slow block moves neither much.
On a GPU the clock is wall time; on a CPU it is the CPU time of one thread, since
on a shared CPU wall time measures the neighbours (on this project's 2-core machine
at load 6, two wall-clock medians of one model differed by up to 2.5x; thread time
kept them within 7%)."""
import math
import time
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from prunebench import models


def count_params(model: nn.Module, masks: Optional[Dict[str, torch.Tensor]] = None) -> int:
    """Parameters; with weight-level ``masks``, the non-zero count (masked weights excluded)."""
    masks = masks or {}
    return sum(int(masks[n].sum()) if n in masks else p.numel() for n, p in model.named_parameters())


def _own_flops(module: nn.Module, output: torch.Tensor) -> int:
    """FLOPs of one call of a convolution or linear layer (2 x multiply-accumulates, as
    torch.utils.flop_counter counts them); 0 for other modules."""
    if isinstance(module, nn.Conv2d):
        k = module.kernel_size[0] * module.kernel_size[1]
        return 2 * output.numel() * (module.in_channels // module.groups) * k
    if isinstance(module, nn.Linear):
        return 2 * output.numel() * module.in_features
    if hasattr(module, "own_flops"):  # a model's own layer (a ViT's per-head projections)
        return module.own_flops(output)
    return 0


def _count(model: nn.Module, input_shape: Sequence[int], names=()) -> Tuple[int, Dict[str, int]]:
    """Total FLOPs of one forward of one image, and those of each layer in ``names``."""
    device = next(model.parameters()).device
    layers = {n: 0 for n in names}
    handles = []
    for n in layers:
        def record(module, inputs, output, n=n):
            layers[n] += _own_flops(module, output)
        handles.append(model.get_submodule(n).register_forward_hook(record))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return int(round(counter.get_total_flops())), layers


def count_flops(model: nn.Module, input_shape: Sequence[int],
                masks: Optional[Dict[str, torch.Tensor]] = None) -> int:
    """FLOPs of one forward pass of one image of shape (C, H, W). With weight-level
    ``masks``, each layer's FLOPs are scaled by the fraction of its weights kept."""
    total, layers = _count(model, input_shape, {name.rsplit(".", 1)[0] for name in masks or {}})
    if masks:
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


def spec_flops(spec: Dict, input_shape: Sequence[int], masks: Optional[Dict[str, torch.Tensor]] = None) -> int:
    """FLOPs of the architecture ``spec`` without initialising its weights (with weight-level
    ``masks``: the non-zero count, as :func:`count_flops`)."""
    return count_flops(_shell(spec), input_shape, masks)


def spec_layer_flops(spec: Dict, input_shape: Sequence[int], layers) -> Tuple[int, Dict[str, int]]:
    """FLOPs of ``spec`` and of each module path in ``layers`` (one forward)."""
    return _count(_shell(spec), input_shape, layers)


def spec_layer_params(spec: Dict, layers) -> Tuple[int, Dict[str, int]]:
    """Parameters of ``spec`` and of each module path in ``layers`` (its own, not its children's)."""
    with torch.device("meta"):
        model = models.build(spec)
    own = {p: sum(t.numel() for t in model.get_submodule(p).parameters(recurse=False)) for p in layers}
    return count_params(model), own


def spec_params(spec: Dict) -> int:
    """Parameters of the architecture ``spec`` without allocating its weights."""
    with torch.device("meta"):
        model = models.build(spec)
    return count_params(model)


LATENCY_EXTRAS = ("latency_sat_ms", "onnx_ms", "onnx_sat_ms")  # measured when measure.* asks for them
SPEEDUPS = {"speedup": "latency_ms", "speedup_sat": "latency_sat_ms", "onnx_speedup": "onnx_ms",
            "onnx_speedup_sat": "onnx_sat_ms"}  # the table's speed-up column -> the latency it divides
LATENCY_BLOCK = 0.02  # seconds: each timed block holds as many forwards as fill this (one at least)
LATENCY_MIN_RUN_TIME = 0.4  # seconds of timed forwards per model: 20 blocks
LATENCY_MAX_RUN_TIME = 5.0  # seconds: a model slower than a block stops after this (3 blocks at least)
LATENCY_WARMUP = 3  # untimed forwards first (allocator, cuDNN algorithm choice)


@torch.no_grad()
def latency(model: nn.Module, input_shape: Sequence[int], batch: int = 1,
            min_run_time: float = LATENCY_MIN_RUN_TIME) -> Dict:
    """Time one forward of ``batch`` images of shape (C, H, W) on the model's device, in eval mode:
    ``{"median_ms", "iqr_ms", "blocks", "per_block", "batch", "device"}`` (median and interquartile
    range over ``blocks`` timed blocks of ``per_block`` forwards each, in milliseconds per forward).

    Blocks of about ``LATENCY_BLOCK`` seconds, as many as fill ``min_run_time``; each is one
    ``torch.utils.benchmark.Timer.timeit`` call, which synchronises the device before reading the
    clock. (``Timer.blocked_autorange`` sizes blocks by the timer's overhead: when synchronising a
    GPU is slow against a forward its blocks grow to ``min_run_time`` each, leaving one or two.)"""
    from torch.utils import benchmark

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    # its own generator: the global one belongs to model inits
    x = torch.randn(batch, *input_shape, device=device, generator=torch.Generator(device).manual_seed(0))
    if device.type == "cpu":  # CPU time of one thread: what neighbour processes on a shared CPU do not change
        timer = benchmark.Timer(stmt="model(x)", globals={"model": model, "x": x}, num_threads=1,
                                timer=time.thread_time)
    else:  # wall time; the Timer synchronises the accelerator before each clock reading
        timer = benchmark.Timer(stmt="model(x)", globals={"model": model, "x": x},
                                num_threads=torch.get_num_threads())
    for _ in range(LATENCY_WARMUP):
        timer.timeit(1)
    one = float(np.median([timer.timeit(1).mean for _ in range(3)]))  # seconds, one forward
    per_block = max(1, round(LATENCY_BLOCK / one))
    blocks = max(3, math.ceil(min_run_time / LATENCY_BLOCK - 1e-9))  # 0.14 / 0.02 is 7.000000000000001
    times = []  # seconds per forward, one entry per block
    while len(times) < blocks:
        times.append(timer.timeit(per_block).mean)
        if len(times) >= 3 and sum(times) * per_block > LATENCY_MAX_RUN_TIME:
            break
    model.train(was_training)
    q1, median, q3 = np.percentile(np.array(times) * 1e3, [25, 50, 75])
    return {"median_ms": float(median), "iqr_ms": float(q3 - q1), "blocks": len(times),
            "per_block": per_block, "batch": batch, "device": str(device)}


def latency_ms(model: nn.Module, input_shape: Sequence[int], batch: int = 1, repeats: int = 20) -> float:
    """Median time of one forward of ``batch`` images, in milliseconds (see :func:`latency`), over
    ``repeats`` timed blocks (config: ``measure.latency_repeats``)."""
    return latency(model, input_shape, batch, repeats * LATENCY_BLOCK)["median_ms"]


def _onnx_runtime():
    try:
        import importlib

        importlib.import_module("onnx")  # the exporter writes through it
        import onnxruntime
    except ImportError as e:
        from prunebench.errors import PrunebenchError
        raise PrunebenchError("measure.onnx=true times the model in ONNX Runtime: pip install onnxruntime onnx "
                              "(or pip install prunebench[onnx]), or set measure.onnx=false") from e
    return onnxruntime


def onnx_bytes(model: nn.Module, input_shape: Sequence[int]) -> bytes:
    """The model exported to ONNX (eval mode, the batch dimension dynamic), as bytes. The
    TorchScript-based exporter: it needs no package beyond ``onnx``."""
    import io
    import warnings

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (torch.zeros(1, *input_shape, device=device),), buffer, dynamo=False,
                              input_names=["x"], output_names=["logits"], dynamic_axes={"x": {0: "batch"}})
    finally:
        model.train(was_training)
    return buffer.getvalue()


def onnx_session(model: nn.Module, input_shape: Sequence[int]):
    """An ONNX Runtime session of ``model`` on the CPU, one thread (as the CPU latency of :func:`latency`)."""
    ort = _onnx_runtime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(onnx_bytes(model, input_shape), options, providers=["CPUExecutionProvider"])


def onnx_latency(model: nn.Module, input_shape: Sequence[int], batches: Sequence[int] = (1,),
                 min_run_time: float = LATENCY_MIN_RUN_TIME) -> Dict[int, Dict]:
    """The model exported to ONNX and run by ONNX Runtime on the CPU (one thread, CPU time of the
    calling thread, which runs the graph): for each batch size, ``{"median_ms", "iqr_ms", "blocks",
    "per_block"}`` over timed blocks sized as :func:`latency`'s."""
    session = onnx_session(model, input_shape)
    rng = np.random.default_rng(0)
    out = {}
    for batch in batches:
        x = {"x": rng.standard_normal((batch, *input_shape)).astype(np.float32)}
        for _ in range(LATENCY_WARMUP):
            session.run(None, x)

        def block(n: int) -> float:
            t0 = time.thread_time()
            for _ in range(n):
                session.run(None, x)
            return (time.thread_time() - t0) / n

        one = float(np.median([block(1) for _ in range(3)]))
        per_block = max(1, round(LATENCY_BLOCK / max(one, 1e-6)))
        blocks = max(3, math.ceil(min_run_time / LATENCY_BLOCK - 1e-9))
        times = []
        while len(times) < blocks:
            times.append(block(per_block))
            if len(times) >= 3 and sum(times) * per_block > LATENCY_MAX_RUN_TIME:
                break
        q1, median, q3 = np.percentile(np.array(times) * 1e3, [25, 50, 75])
        out[batch] = {"median_ms": float(median), "iqr_ms": float(q3 - q1), "blocks": len(times),
                      "per_block": per_block}
    return out


def timings(model: nn.Module, input_shape: Sequence[int], cfg) -> Dict[str, float]:
    """The latency figures ``cfg`` (the ``measure`` node) asks for, in ms per forward: ``latency_ms``
    (and its IQR) at ``latency_batch`` on the model's device, ``latency_sat_ms`` at
    ``saturating_batch`` (when > 0), and with ``onnx`` the same batches through ONNX Runtime on the
    CPU (``onnx_ms``, ``onnx_sat_ms``)."""
    run_time = cfg.latency_repeats * LATENCY_BLOCK
    t = latency(model, input_shape, cfg.latency_batch, run_time)
    out = {"latency_ms": round(t["median_ms"], 4), "latency_iqr_ms": round(t["iqr_ms"], 4)}
    sat = int(cfg.get("saturating_batch", 0) or 0)
    if sat > 0:
        out["latency_sat_ms"] = round(latency(model, input_shape, sat, run_time)["median_ms"], 4)
    if cfg.get("onnx", False):
        out.update(onnx_timings(model, input_shape, cfg))
    return out


def onnx_timings(model: nn.Module, input_shape: Sequence[int], cfg) -> Dict[str, float]:
    """``onnx_ms`` (at ``latency_batch``) and, with ``saturating_batch`` > 0, ``onnx_sat_ms``."""
    sat = int(cfg.get("saturating_batch", 0) or 0)
    batches = [cfg.latency_batch] + ([sat] if sat > 0 else [])
    ort = onnx_latency(model, input_shape, batches, cfg.latency_repeats * LATENCY_BLOCK)
    out = {"onnx_ms": round(ort[cfg.latency_batch]["median_ms"], 4)}
    if sat > 0:
        out["onnx_sat_ms"] = round(ort[sat]["median_ms"], 4)
    return out
