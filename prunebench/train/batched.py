"""Several seeds of one architecture trained as one batched model (``train.batch_seeds``).

:class:`SeedStack` holds the seeds' parameters and buffers stacked along a new leading
dimension (``torch.func.stack_module_state``) in a copy of the model's module tree, and
its forward runs ``vmap(functional_call)``: every seed on its own batch, the
convolutions of all seeds batched into one call. :func:`train_batched` trains a stack
with the one training step of every stage (:class:`prunebench.train.step.Step`: eager,
or bf16 / compiled / one CUDA graph), and each seed keeps what its single-seed run has:

- its own init (its model is stacked as it comes), its own data order and augmentation
  (:func:`prunebench.train.loop.epoch_generator` of its seed, as ``train`` draws them);
- its own BatchNorm statistics (buffers are vmapped too: the running-stat updates land
  in each seed's slice) and its own SGD: momentum and weight decay act elementwise, so
  one SGD over the stacked tensors is S independent SGDs; the S losses are summed before
  ``backward()``, so each seed's gradient is its own loss's gradient;
- its method hooks, when they say ``batchable`` (they act elementwise on the stacked
  tensors: slimming's L1 subgradient), and its weight-level masks, stacked like the weights;
- its stage files: after every epoch each seed's checkpoint and ``history.csv`` are written
  in the form ``train`` writes, so an interrupted batched stage resumes batched (every seed
  at the same epoch) or seed by seed, and the cached stage is the single-seed one.

Inputs are batches of shape [S, B, C, H, W], so ``channels_last`` (4-D only) is off here.
A model with dropout draws each seed's masks apart from the others (vmap
``randomness="different"``), not as its single-seed run would.
"""
import copy
import dataclasses
import math
import time
from typing import Dict, List, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from tqdm import tqdm

from prunebench.errors import Diverged, PrunebenchError
from prunebench.train.evaluate import evaluate
from prunebench.train.hooks import HookList, MaskHook
from prunebench.train.job import TrainJob
from prunebench.train.loop import CHECK_EVERY, epoch_generator, read_checkpoint, save_checkpoint, save_snapshot
from prunebench.train.step import Step, optimizer, tensor_lr


class CannotBatch(PrunebenchError):
    """These jobs cannot train as one batched model; train them one by one."""


def _place(module: nn.Module, name: str, tensor: torch.Tensor, parameter: bool) -> None:
    path, _, attr = name.rpartition(".")
    owner = module.get_submodule(path)
    if parameter:
        owner._parameters[attr] = nn.Parameter(tensor)
    else:
        owner._buffers[attr] = tensor


class SeedStack(nn.Module):
    """S models of one architecture as one module. ``tree`` is a copy of the models' module
    tree whose every parameter and buffer is the S models' stacked along dimension 0 (what
    the optimizer steps and the hooks see); ``forward(x)`` takes x of shape [S, B, ...] and
    returns [S, B, classes], seed i's batch through seed i's weights."""

    def __init__(self, models: Sequence[nn.Module]):
        super().__init__()
        if not models:
            raise PrunebenchError("SeedStack needs at least one model")
        params, buffers = stack_module_state(list(models))
        self.size = len(models)
        self.tree = copy.deepcopy(models[0])
        for name, t in params.items():
            _place(self.tree, name, t, parameter=True)
        for name, t in buffers.items():
            _place(self.tree, name, t, parameter=False)
        object.__setattr__(self, "base", copy.deepcopy(models[0]).to("meta"))  # not a submodule: no tensors
        self.one = vmap(self.single, in_dims=(0, 0, 0), randomness="different")

    def single(self, params: Dict[str, torch.Tensor], buffers: Dict[str, torch.Tensor], x: torch.Tensor):
        return functional_call(self.base, (params, buffers), (x,))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.base.train(self.training)  # BatchNorm and dropout follow the stack's mode
        return self.one(dict(self.tree.named_parameters()), dict(self.tree.named_buffers()), x)

    @torch.no_grad()
    def unstack(self, models: Sequence[nn.Module]) -> None:
        """Copy each seed's slice back into its model."""
        params, buffers = dict(self.tree.named_parameters()), dict(self.tree.named_buffers())
        for i, model in enumerate(models):
            for name, t in model.named_parameters():
                t.copy_(params[name][i])
            for name, t in model.named_buffers():
                t.copy_(buffers[name][i])


def per_seed_cross_entropy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each seed's mean cross-entropy: out [S, B, classes], y [S, B] -> [S]."""
    return F.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="none").view(y.shape).mean(1)


def stacked_masks(masks: Sequence[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """The seeds' weight-level masks stacked like their weights."""
    names = set(masks[0])
    if any(set(m) != names for m in masks):
        raise CannotBatch("the seeds mask different weights")
    return {name: torch.stack([m[name] for m in masks]) for name in masks[0]}


def seed_optimizer_state(state: Dict, i: int) -> Dict:
    """Seed i's slice of the stacked SGD's state dict: the state dict of its own SGD (the
    parameters are in the same order; every tensor of SGD's state, the momentum buffer, has
    its parameter's shape, so the stacked one leads with the seed)."""
    return {"state": {k: {n: (v[i].clone() if isinstance(v, torch.Tensor) else v) for n, v in s.items()}
                      for k, s in state["state"].items()},
            "param_groups": copy.deepcopy(state["param_groups"])}


def stacked_optimizer_state(states: Sequence[Dict]) -> Dict:
    """The seeds' SGD state dicts stacked into the batched SGD's (the inverse of :func:`seed_optimizer_state`)."""
    out = {"state": {}, "param_groups": copy.deepcopy(states[0]["param_groups"])}
    for k, s in states[0]["state"].items():
        out["state"][k] = {n: (torch.stack([st["state"][k][n] for st in states]) if isinstance(v, torch.Tensor) else v)
                           for n, v in s.items()}
    return out


def check_jobs(jobs: Sequence[TrainJob]) -> None:
    lead = jobs[0]
    if len({repr(getattr(j.model, "spec", None)) for j in jobs}) != 1:
        raise CannotBatch("seeds are batched only over one architecture")
    if any(j.recipe != lead.recipe or j.kind != lead.kind or j.speed != lead.speed for j in jobs):
        raise CannotBatch("the seeds' stages train with different settings")
    if any((j.masks is None) != (lead.masks is None) for j in jobs):
        raise CannotBatch("some seeds have weight masks and some have none")
    if not all(j.batchable() for j in jobs):
        raise CannotBatch(f"the hooks of {type(lead.hooks).__name__} are not batchable")


def train_batched(jobs: List[TrainJob]) -> List[Dict]:
    """Train the jobs' models (one architecture, one job per seed) in place, together; return
    one {"epochs", "seconds", "loss", "history"} per job, as :func:`prunebench.train.train` does.
    Raises :class:`CannotBatch` when they cannot train as one model (then train them one by
    one: nothing has been written), :class:`Diverged` when a seed's loss stops being finite
    (every seed's checkpoint holds the last finite epoch)."""
    if len(jobs) < 2:
        raise CannotBatch("batching needs two seeds or more")
    check_jobs(jobs)
    lead = jobs[0]
    data, recipe = lead.data, lead.recipe
    speed = dataclasses.replace(lead.speed, channels_last=False)  # batches are 5-D
    device = data.device
    S = len(jobs)
    states = [read_checkpoint(j.checkpoint, device) for j in jobs]
    if len({None if s is None else s["epoch"] for s in states}) > 1:
        raise CannotBatch("the seeds' checkpoints stand at different epochs")
    models = [j.model.to(device).train() for j in jobs]
    for model, state in zip(models, states):
        if state is not None:
            model.load_state_dict(state["model"])
    if hasattr(models[0], "channel_groups"):
        models[0].channel_groups()  # traced on the plain model and cached, so the stack's copy carries them
    stack = SeedStack(models)
    masks = stacked_masks([j.masks for j in jobs]) if lead.masks is not None else None
    hooks = HookList([h for h in (lead.hooks, MaskHook({k: m.to(device) for k, m in masks.items()}) if masks else None)
                      if h is not None])
    opt = optimizer(stack.tree, recipe, device, speed)
    milestones = sorted({int(round(m * recipe.epochs)) for m in recipe.milestones})
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=recipe.gamma)
    start, seconds, histories = 0, [0.0] * S, [[] for _ in range(S)]
    last = [float("nan")] * S
    if states[0] is not None:
        opt.load_state_dict(stacked_optimizer_state([s["optimizer"] for s in states]))
        sched.load_state_dict(states[0]["scheduler"])
        start = states[0]["epoch"]
        seconds = [s["seconds"] for s in states]
        histories = [s.get("history", []) for s in states]
        last = [s["loss"] for s in states]
        if speed.fast:
            tensor_lr(opt, device)
    step = Step(stack.tree, opt, hooks, speed, device, net=stack, criterion=per_seed_cross_entropy, models=S)
    seeds = [j.seed for j in jobs]
    bar = tqdm(total=recipe.epochs, initial=start, desc=f"{lead.kind} seeds {seeds}", disable=not lead.progress,
               leave=True, dynamic_ncols=True)

    for epoch in range(start, recipe.epochs):
        for j in jobs:
            save_snapshot(j.model, j.snapshots, epoch)
        t0 = time.perf_counter()
        stack.train()
        lr_epoch = float(opt.param_groups[0]["lr"])
        streams = [data.train_batches(recipe.batch_size, epoch_generator(s, epoch, device), recipe.steps_per_epoch)
                   for s in seeds]
        step.loss_sum.zero_()
        steps = 0
        for batches in zip(*streams):
            step(torch.stack([b[0] for b in batches]), torch.stack([b[1] for b in batches]))
            steps += 1
            if steps % CHECK_EVERY == 0 and not torch.isfinite(step.loss_sum).all().item():
                break
        losses = (step.loss_sum / max(steps, 1)).tolist()
        bad = [s for s, v in zip(seeds, losses) if not math.isfinite(v)]
        if bad:
            bar.close()
            raise Diverged(f"loss became NaN/inf in epoch {epoch + 1} (seeds {bad}, batched with {seeds})")
        last = losses
        sched.step()
        hooks.on_epoch_end(stack.tree, epoch)
        took = time.perf_counter() - t0
        stack.unstack(models)
        evaluated = lead.eval_every and ((epoch + 1) % lead.eval_every == 0 or epoch + 1 == recipe.epochs)
        opt_state = opt.state_dict()
        for i, (j, model) in enumerate(zip(jobs, models)):
            seconds[i] += took / S
            acc1 = evaluate(model, data, lead.eval_batch_size)["acc1"] if evaluated else None
            histories[i].append({"epoch": epoch + 1, "lr": lr_epoch, "loss": last[i], "acc1": acc1})
            save_checkpoint(j.checkpoint, model.state_dict(), seed_optimizer_state(opt_state, i), sched.state_dict(),
                            epoch + 1, seconds[i], histories[i])
            model.train()
        for j, history in zip(jobs, histories):  # every seed's epoch is saved before a logger can interrupt
            if j.on_epoch is not None:
                j.on_epoch(history[-1])
        bar.set_postfix(loss=" ".join(f"{v:.3f}" for v in last), refresh=False)
        bar.update(1)
    bar.close()
    stack.unstack(models)
    for j in jobs:
        save_snapshot(j.model, j.snapshots, recipe.epochs)
    return [{"epochs": recipe.epochs, "seconds": seconds[i], "loss": last[i], "history": histories[i]}
            for i in range(S)]
