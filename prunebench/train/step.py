"""The training step, eager or fast: the GPU recipe of DESIGN.md "Speed".

One step is forward, cross-entropy, the method's penalty, backward, the method's
gradient hook (``regularize``), the SGD step and ``after_step`` (proximal steps,
weight masks). The fast path runs that whole step as one unit:

- ``precision: bf16``: forward and loss under ``torch.autocast`` (bfloat16);
- ``channels_last``: model and inputs in NHWC memory order;
- ``compile: on``: the step function goes through ``torch.compile`` (dynamo traces
  forward, loss, penalty and hooks; backward runs the AOT-compiled backward) and, on
  CUDA (``cuda_graph``), the whole step is captured once in one CUDA graph and
  replayed for every later step (``torch.cuda.graph``, the whole-network capture
  pattern of the PyTorch CUDA-graph notes);
- ``compile: graph``: no compilation; on CUDA the eager step itself is captured in one
  CUDA graph (seconds to capture, against inductor's tens of seconds a stage to compile,
  for slower steps: its kernels are not fused). The optimizer is then
  :class:`CapturableSGD`, torch's foreach SGD with the lr as a device tensor (torch's own
  eager update reads a tensor lr back to the host, which a capture cannot). Off CUDA it
  runs the same step eagerly.

Nothing in the step reads a value back to the host: the learning rate is a device
tensor the scheduler fills in place (SGD accepts a tensor lr), hooks receive that
tensor, and the loss is summed into a device tensor. A schedule step therefore
neither recompiles nor re-captures. Hooks that cannot run traced or captured say
so (``capturable = False``) and get the eager step, with a log line.
"""
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from prunebench.errors import PrunebenchError
from prunebench.train.hooks import TrainHooks

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}
COMPILE = ("off", "on", "graph")
WARMUP_STEPS = 3  # real (eager-stream) steps before a CUDA graph is captured: SGD's momentum buffers exist then
RECOMPILE_LIMIT = 64  # compiled versions kept per function: every stage (model, optimizer) of a process adds one


@dataclass(frozen=True)
class Speed:
    """How the step runs (``cfg.train``): none of it changes the arithmetic except ``precision``."""
    precision: str = "fp32"  # fp32 | bf16 (autocast of forward and loss)
    channels_last: bool = False
    compile: str = "off"  # off | on (torch.compile, + one CUDA graph) | graph (one CUDA graph, no compilation)
    backend: Any = "inductor"  # torch.compile backend (aot_eager: tracing without code generation)
    cuda_graph: bool = True  # with compile=on on CUDA: capture the whole step in one CUDA graph

    def check(self) -> None:
        if self.precision not in PRECISIONS:
            raise PrunebenchError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.compile not in COMPILE:
            raise PrunebenchError(f"train.compile must be one of {', '.join(COMPILE)}, got {self.compile!r}")

    @property
    def fast(self) -> bool:
        """The step reads nothing back to the host (a device-tensor lr): compiled or captured."""
        return self.compile in ("on", "graph")

    @property
    def compiled(self) -> bool:
        return self.compile == "on"


EAGER = Speed()


def speed_from_config(node) -> Speed:
    """The :class:`Speed` of a ``cfg.train`` node (None: eager fp32)."""
    if node is None:
        return EAGER
    compile_ = {"false": "off", "true": "on"}.get(str(node.compile).lower(), str(node.compile))
    speed = Speed(precision=str(node.precision), channels_last=bool(node.channels_last), compile=compile_,
                  backend=str(node.backend), cuda_graph=bool(node.cuda_graph))
    speed.check()
    return speed


def capturable(hooks: TrainHooks) -> bool:
    """Whether every hook can run traced and captured (``capturable``, default True)."""
    inner = getattr(hooks, "hooks", None)
    if inner is not None:
        return all(capturable(h) for h in inner)
    return bool(getattr(hooks, "capturable", True))


class Step:
    """``step(x, y)`` trains on one batch and adds its cross-entropy to ``loss_sum`` (a device
    scalar). ``opt`` must hold its lr as a device tensor when ``speed.fast``.
    ``compile_seconds``: host time spent in the first steps of the fast path, where dynamo
    traces, the backend compiles and the CUDA graph is captured (0 for the eager step)."""

    def __init__(self, model: nn.Module, opt: torch.optim.Optimizer, hooks: TrainHooks, speed: Speed,
                 device: torch.device, net: Optional[nn.Module] = None, label_smoothing: float = 0.0):
        speed.check()
        self.label_smoothing = label_smoothing  # of the cross-entropy; targets may be class indices or probabilities
        self.model, self.opt, self.hooks, self.speed = model, opt, hooks, speed
        self.net = model if net is None else net  # what the forward calls: DDP's wrapper under torchrun
        self.device = torch.device(device)
        self.loss_sum = torch.zeros((), device=self.device)
        self.compile_seconds = 0.0
        self.dtype = PRECISIONS[speed.precision]
        self.fast = speed.fast and capturable(hooks)
        if speed.fast and not self.fast:
            names = [type(h).__name__ for h in getattr(hooks, "hooks", [hooks]) if not capturable(h)]
            log.info("train.compile=on: %s cannot run compiled; this stage trains eagerly", ", ".join(names))
        self.graphed = self.fast and (speed.cuda_graph or not speed.compiled) and self.device.type == "cuda"
        self.run: Callable = self.body
        if self.fast and speed.compiled:
            import torch._dynamo.config as dynamo
            name = "recompile_limit" if hasattr(dynamo, "recompile_limit") else "cache_size_limit"  # torch < 2.6
            setattr(dynamo, name, max(getattr(dynamo, name), RECOMPILE_LIMIT))  # else stage 9 trains eagerly
            self.run = torch.compile(self.body, backend=speed.backend)
        self.steps = 0
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.static_x = self.static_y = None
        self.side = None

    def lr(self):
        """The learning rate the step uses: the group's float (eager) or its device tensor (fast)."""
        return self.opt.param_groups[0]["lr"]

    def body(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """The step itself, the same code eager, compiled and captured."""
        model, hooks, opt = self.model, self.hooks, self.opt
        with torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None,
                            cache_enabled=False if self.graphed else None):
            logits = self.net(x)
            loss = hooks.loss(logits, y)  # distillation's in place of the cross-entropy
            if loss is None:
                loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
            extra = hooks.penalty(model)
        (loss if extra is None else loss + extra).backward()
        hooks.regularize(model)
        lr = self.lr()
        opt.step()
        hooks.after_step(model, lr)
        self.loss_sum.add_(loss.detach().float())

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if self.speed.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        self.hooks.on_batch(self.model, x, y)  # on the host, before the (compiled) step
        self.steps += 1
        if not self.fast or self.steps > WARMUP_STEPS + 1:
            self.one(x, y)
            return
        t0 = time.perf_counter()
        self.one(x, y)
        self.compile_seconds += time.perf_counter() - t0

    def one(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if not self.graphed:
            self.opt.zero_grad(set_to_none=True)
            self.run(x, y)
            return
        if self.graph is not None:
            self.static_x.copy_(x)
            self.static_y.copy_(y)
            self.graph.replay()
            return
        if self.side is None:
            self.side = torch.cuda.Stream(self.device)
        self.side.wait_stream(torch.cuda.current_stream(self.device))
        if self.steps <= WARMUP_STEPS:  # real steps on a side stream, as capture requires
            with torch.cuda.stream(self.side):
                self.opt.zero_grad(set_to_none=True)
                self.run(x, y)
            torch.cuda.current_stream(self.device).wait_stream(self.side)
            return
        self.static_x, self.static_y = x.clone(), y.clone()
        self.opt.zero_grad(set_to_none=True)  # gradients are allocated inside the graph's pool
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, stream=self.side, capture_error_mode="thread_local"):
            self.run(self.static_x, self.static_y)
        self.graph.replay()  # capture records the step without running it


@torch.no_grad()
def sgd_update(opt: torch.optim.SGD) -> None:
    """One step of ``opt`` (torch's SGD: momentum, dampening, weight decay, nesterov) with its lr
    a device tensor, in foreach kernels that read nothing back to the host, so that a CUDA graph
    can capture it. The arithmetic and the order of torch's foreach SGD under torch.compile
    (``torch/optim/sgd.py`` ``_multi_tensor_sgd``: the update is ``param + grad * (-lr)``); the
    momentum buffers live in ``opt.state`` as torch's own, so checkpoints do not change."""
    for group in opt.param_groups:
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            continue
        grads = [p.grad for p in params]
        wd, momentum, dampening = group["weight_decay"], group["momentum"], group["dampening"]
        if group.get("maximize", False):
            grads = torch._foreach_neg(grads)
        if wd != 0:
            grads = torch._foreach_add(grads, params, alpha=wd)
        if momentum != 0:
            bufs = [opt.state[p].get("momentum_buffer") for p in params]
            if all(b is not None for b in bufs):
                torch._foreach_mul_(bufs, momentum)
                torch._foreach_add_(bufs, grads, alpha=1 - dampening)
            else:
                for i, (p, g) in enumerate(zip(params, grads)):
                    if bufs[i] is None:
                        bufs[i] = opt.state[p]["momentum_buffer"] = g.detach().clone()
                    else:
                        bufs[i].mul_(momentum).add_(g, alpha=1 - dampening)
            if group["nesterov"]:
                grads = torch._foreach_add(grads, bufs, alpha=momentum)
            else:
                grads = bufs
        lr = group["lr"]
        torch._foreach_add_(params, torch._foreach_mul(grads, -lr))


class CapturableSGD(torch.optim.SGD):
    """torch's SGD whose eager step takes a device-tensor lr without reading it back
    (:func:`sgd_update`): the optimizer of ``train.compile=graph``. Its state is SGD's."""

    def step(self, closure=None):
        if closure is not None:
            raise ValueError("CapturableSGD takes no closure")
        sgd_update(self)


def optimizer(model: nn.Module, recipe, device: torch.device, speed: Speed) -> torch.optim.Optimizer:
    """SGD of ``recipe`` (or AdamW with ``recipe.optimizer: adamw``: torch's, betas (0.9, 0.999),
    decoupled weight decay ``weight_decay``); the fast path holds the lr as a device tensor and
    steps with foreach kernels (compiled: torch's SGD, which dynamo traces with a tensor lr;
    captured without compilation: :class:`CapturableSGD`, or AdamW with ``capturable``)."""
    lr = torch.tensor(float(recipe.lr), device=device) if speed.fast else recipe.lr
    extra = {"foreach": True} if speed.fast else {}
    if getattr(recipe, "optimizer", "sgd") == "adamw":
        capture = {"capturable": True} if speed.fast and torch.device(device).type == "cuda" else {}
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=recipe.weight_decay, **extra, **capture)
    sgd = CapturableSGD if speed.fast and not speed.compiled else torch.optim.SGD
    return sgd(model.parameters(), lr=lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay,
                           nesterov=recipe.nesterov, **extra)


def tensor_lr(opt: torch.optim.Optimizer, device: torch.device) -> None:
    """After ``load_state_dict``: turn a float lr (from a checkpoint) back into a device tensor."""
    for g in opt.param_groups:
        for key in ("lr", "initial_lr"):
            if key in g and not isinstance(g[key], torch.Tensor):
                g[key] = torch.tensor(float(g[key]), device=device)
