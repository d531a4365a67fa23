"""One run over several GPUs: ``torchrun --nproc_per_node=N -m prunebench ...``.

Every rank runs the same protocol on the same data; what differs is who writes.

- Training: the recipe's ``batch_size`` stays the *global* batch. Every rank draws
  the same global batch (the generator is seeded alike on every rank), keeps its
  slice (:func:`shard`, ``batch_size / N`` images) and computes forward and backward
  on it; DistributedDataParallel averages the gradients, so N processes take the
  steps one process would take with the same data order, batch and learning rate.
  Method hooks run after ``backward()`` on the averaged gradients and the unwrapped
  model, so they are identical on every rank.
- BatchNorm: statistics over each rank's shard by default (what the authors'
  ImageNet scripts did with ``nn.DataParallel``: rethinking-network-pruning
  ``imagenet/l1-norm-pruning/main_E.py``, ``main()``), or over the global batch with
  ``distributed.sync_bn=true`` (:class:`GlobalBatchNorm2d`, any device), which trains
  exactly the single-process model, so those stages share its cache key. Running
  statistics are taken from rank 0 at the end of every epoch.
- Files: rank 0 alone writes stage folders, locks, checkpoints, histories, models
  and result tables; the ranks meet at the end of each stage and take rank 0's
  metrics (:func:`broadcast`), and read what rank 0 wrote when they need it.
- Evaluation: every rank evaluates the whole test set (same weights, same result).

Outside ``torchrun`` (``WORLD_SIZE`` unset or 1) everything here is a no-op."""
import os
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import nn

from prunebench.errors import PrunebenchError

BACKENDS = ("auto", "nccl", "gloo")
_state = {"sync_bn": False}


def launched() -> bool:
    """True in a process that ``torchrun`` started with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: str = "auto", backend: str = "auto", sync_bn: bool = False, timeout_min: float = 30) -> None:
    """Join the process group ``torchrun`` describes in the environment (nothing outside torchrun).
    ``backend=auto``: nccl when the run trains on CUDA, gloo on the CPU."""
    _state["sync_bn"] = sync_bn
    if not launched() or dist.is_initialized():
        return
    if backend not in BACKENDS:
        raise PrunebenchError(f"distributed.backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    on_cuda = device != "cpu" and torch.cuda.is_available()
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PrunebenchError(f"device={device} but no CUDA device is available; use device=cpu (gloo) under torchrun")
    if backend == "auto":
        backend = "nccl" if on_cuda else "gloo"
    if on_cuda:
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend, timeout=timedelta(minutes=timeout_min))


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    """True on the rank that writes files and prints (rank 0, or the only process)."""
    return rank() == 0


def sync_bn() -> bool:
    return _state["sync_bn"]


def device(name: str) -> torch.device:
    """This rank's device for ``device=NAME``: ``auto`` and ``cuda`` mean cuda:LOCAL_RANK."""
    if name in ("auto", "cuda"):
        return torch.device(f"cuda:{local_rank()}" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda:"):
        raise PrunebenchError(f"device={name} under torchrun would put every rank on one GPU; use device=auto "
                              f"(rank k takes cuda:LOCAL_RANK)")
    return torch.device(name)


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def _cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu(v) for v in obj)
    return obj


def _like(received: Any, local: Any) -> Any:
    """``received`` with each tensor on the device of the tensor at the same place in ``local``."""
    if isinstance(received, torch.Tensor):
        return received.to(local.device) if isinstance(local, torch.Tensor) else received
    if isinstance(received, dict) and isinstance(local, dict):
        return {k: _like(v, local.get(k)) for k, v in received.items()}
    if isinstance(received, (list, tuple)) and isinstance(local, (list, tuple)) and len(received) == len(local):
        return type(received)(_like(a, b) for a, b in zip(received, local))
    return received


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (a collective every rank calls, each with its own ``obj``):
    any picklable value; tensors travel through the CPU and land where this rank's own were."""
    if world_size() == 1:
        return obj
    box = [_cpu(obj) if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return obj if is_main() else _like(box[0], obj)


@contextmanager
def main_first():
    """Rank 0 runs the block first (a download, a cache it fills), then the others."""
    if not is_main():
        barrier()
    try:
        yield
    finally:
        if is_main():
            barrier()


def shard(batch: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
    """This rank's equal slice (along dim 0) of each tensor of a global batch."""
    n, r = world_size(), rank()
    if n == 1:
        return tuple(batch)
    size = batch[0].shape[0]
    if size % n:
        raise PrunebenchError(f"a batch of {size} does not split into {n} equal shards: make schedule.batch_size "
                              f"a multiple of the number of processes (--nproc_per_node)")
    k = size // n
    return tuple(t[r * k:(r + 1) * k] for t in batch)


def mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of ``value`` over the ranks (a new tensor; the value itself outside torchrun)."""
    if world_size() == 1:
        return value
    out = value.detach().clone()
    dist.all_reduce(out)
    return out / world_size()


@torch.no_grad()
def sync_buffers(model: nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics, method state) on every rank."""
    if world_size() > 1:
        for b in model.buffers():
            dist.broadcast(b, src=0)


def wrap(model: nn.Module) -> nn.Module:
    """The module a training step calls: ``model`` itself in one process, else ``model``
    in DistributedDataParallel (with global BatchNorm statistics under ``sync_bn``).
    Hooks, checkpoints and state dicts keep using ``model``."""
    if world_size() == 1:
        return model
    if sync_bn():
        for m in model.modules():
            if type(m) is nn.BatchNorm2d:
                m.__class__ = GlobalBatchNorm2d  # in place: forward hooks and parameters stay
    dev = next(model.parameters()).device
    ids = [dev.index] if dev.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)  # buffers: rank 0's at each forward


class _SumOverRanks(torch.autograd.Function):
    """all_reduce(SUM) in the forward pass; its gradient is the all_reduce(SUM) of the gradients."""

    @staticmethod
    def forward(ctx, x):
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics come from the global batch (every rank's shard):
    per channel, mean = S1 / n and var = S2 / n - mean^2, where S1, S2 and n (the sums of
    x and x^2 and the count of values) are summed over the ranks. Running statistics are
    updated with the unbiased var * n / (n - 1), as nn.BatchNorm2d does. In eval mode, or in
    one process, it is nn.BatchNorm2d (same parameters and buffers, same state dict)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and world_size() > 1):
            return super().forward(x)
        c = x.shape[1]
        xf = x.float()
        count = torch.full((1,), xf.numel() / c, device=x.device)
        stats = _SumOverRanks.apply(torch.cat([xf.sum((0, 2, 3)), (xf * xf).sum((0, 2, 3)), count]))
        n = stats[-1]
        mu = stats[:c] / n
        var = (stats[c:2 * c] / n - mu * mu).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mu.detach(), m)
                self.running_var.lerp_(var.detach() * n / (n - 1), m)
        y = (xf - mu.view(1, c, 1, 1)) * torch.rsqrt(var + self.eps).view(1, c, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        return y.to(x.dtype)
