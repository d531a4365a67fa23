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
  pattern of the PyTorch CUDA-graph notes).

Nothing in the step reads a value back to the host: the learning rate is a device
tensor the scheduler fills in place (SGD accepts a tensor lr), hooks receive that
tensor, and the loss is summed into a device tensor. A schedule step therefore
neither recompiles nor re-captures. Hooks that cannot run traced or captured say
so (``capturable = False``) and get the eager step, with a log line.
"""
import logging
import threading
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from prunebench.errors import PrunebenchError
from prunebench.train.hooks import TrainHooks

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}
COMPILE = ("off", "on")
WARMUP_STEPS = 3  # real (eager-stream) steps before a CUDA graph is captured: SGD's momentum buffers exist then
COMPILING = threading.Lock()  # stages side by side (threads) compile and capture one at a time
RECOMPILE_LIMIT = 64  # compiled versions kept per function: every stage (model, optimizer) of a process adds one


@dataclass(frozen=True)
class Speed:
    """How the step runs (``cfg.train``): none of it changes the arithmetic except ``precision``."""
    precision: str = "fp32"  # fp32 | bf16 (autocast of forward and loss)
    channels_last: bool = False
    compile: str = "off"  # off | on
    backend: Any = "inductor"  # torch.compile backend (aot_eager: tracing without code generation)
    cuda_graph: bool = True  # with compile=on on CUDA: capture the whole step in one CUDA graph

    def check(self) -> None:
        if self.precision not in PRECISIONS:
            raise PrunebenchError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.compile not in COMPILE:
            raise PrunebenchError(f"train.compile must be one of {', '.join(COMPILE)}, got {self.compile!r}")

    @property
    def fast(self) -> bool:
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


def cudagraph_state_for_this_thread() -> None:
    """Give this thread inductor's CUDA-graph bookkeeping. Before torch 2.13 it lives in
    thread-local slots that only the thread importing ``torch._inductor.cudagraph_trees``
    gets, and a compiled optimizer step on CUDA in any other thread (a seed's thread, a
    stage side by side) fails ``assert torch._C._is_key_in_tls`` (pytorch/pytorch#123177,
    fixed in torch by pytorch/pytorch#184357, which creates the slots lazily, as this does)."""
    try:
        from torch._inductor import cudagraph_trees as trees
        if hasattr(trees.local, "tree_manager_containers") or torch._C._is_key_in_tls("tree_manager_containers"):
            return
        trees.local.tree_manager_containers = {}
        trees.local.tree_manager_locks = defaultdict(threading.Lock)
        torch._C._stash_obj_in_tls("tree_manager_containers", trees.local.tree_manager_containers)
        torch._C._stash_obj_in_tls("tree_manager_locks", trees.local.tree_manager_locks)
    except (ImportError, AttributeError):  # another torch keeps this elsewhere: nothing to do
        return


def capturable(hooks: TrainHooks) -> bool:
    """Whether every hook can run traced and captured (``capturable``, default True)."""
    inner = getattr(hooks, "hooks", None)
    if inner is not None:
        return all(capturable(h) for h in inner)
    return bool(getattr(hooks, "capturable", True))


class Step:
    """``step(x, y)`` trains on one batch and adds its cross-entropy to ``loss_sum`` (a device
    scalar). ``opt`` must hold its lr as a device tensor when ``speed.fast``.

    ``criterion(net(x), y)`` gives the loss: a scalar, or one loss per model when ``net`` is
    several models batched (:class:`prunebench.train.batched.SeedStack`, ``models`` of them):
    their sum is back-propagated, so each model gets its own loss's gradient, and
    ``loss_sum`` holds one sum per model."""

    def __init__(self, model: nn.Module, opt: torch.optim.Optimizer, hooks: TrainHooks, speed: Speed,
                 device: torch.device, net: Optional[nn.Module] = None,
                 criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy, models: int = 0):
        speed.check()
        self.model, self.opt, self.hooks, self.speed = model, opt, hooks, speed
        self.net = model if net is None else net  # what the forward calls: DDP's wrapper under torchrun
        self.criterion = criterion
        self.device = torch.device(device)
        self.loss_sum = torch.zeros((models,) if models else (), device=self.device)
        self.dtype = PRECISIONS[speed.precision]
        self.fast = speed.fast and capturable(hooks)
        if speed.fast and not self.fast:
            names = [type(h).__name__ for h in getattr(hooks, "hooks", [hooks]) if not capturable(h)]
            log.info("train.compile=on: %s cannot run compiled; this stage trains eagerly", ", ".join(names))
        self.graphed = self.fast and speed.cuda_graph and self.device.type == "cuda"
        self.run: Callable = self.body
        if self.fast:
            import torch._dynamo.config as dynamo
            name = "recompile_limit" if hasattr(dynamo, "recompile_limit") else "cache_size_limit"  # torch < 2.6
            setattr(dynamo, name, max(getattr(dynamo, name), RECOMPILE_LIMIT))  # else stage 9 trains eagerly
            if self.device.type == "cuda":
                cudagraph_state_for_this_thread()
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
            loss = self.criterion(self.net(x), y)
            extra = hooks.penalty(model)
        total = loss if loss.dim() == 0 else loss.sum()
        (total if extra is None else total + extra).backward()
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
        with COMPILING if self.fast and self.steps <= WARMUP_STEPS + 1 else nullcontext():
            self.one(x, y)

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


def optimizer(model: nn.Module, recipe, device: torch.device, speed: Speed) -> torch.optim.SGD:
    """SGD of ``recipe``; the fast path holds the lr as a device tensor and steps with foreach kernels."""
    lr = torch.tensor(float(recipe.lr), device=device) if speed.fast else recipe.lr
    extra = {"foreach": True} if speed.fast else {}
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay,
                           nesterov=recipe.nesterov, **extra)


def tensor_lr(opt: torch.optim.Optimizer, device: torch.device) -> None:
    """After ``load_state_dict``: turn a float lr (from a checkpoint) back into a device tensor."""
    for g in opt.param_groups:
        for key in ("lr", "initial_lr"):
            if key in g and not isinstance(g[key], torch.Tensor):
                g[key] = torch.tensor(float(g[key]), device=device)
