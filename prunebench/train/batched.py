"""Several seeds of one architecture trained as one batched model (``train.batch_seeds``).

The models' parameters and buffers are stacked along a new leading dimension
(``torch.func.stack_module_state``) and one forward of ``vmap(functional_call)``
runs every seed on its own batch. Each seed keeps what its single-seed run has:
its own init (the models passed in), its own data order and augmentation (the
generator of :func:`prunebench.train.loop.train`, seeded from its seed), its own
BatchNorm statistics (buffers are vmapped too, so the running-stat updates land in
each seed's slice), and the same SGD: momentum and weight decay act elementwise, so
one SGD over the stacked tensors is S independent SGDs. The sum of the S losses is
back-propagated: each seed's gradient is its own loss's gradient.

Hooks are not supported (the unpruned stage and the re-trainings of predefined
architectures have none); neither are weight-level masks.
"""
import copy
import math
import time
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from prunebench.data import ImageData
from prunebench.errors import Diverged, PrunebenchError
from prunebench.train.evaluate import evaluate
from prunebench.train.loop import Recipe


def unstack(params: Dict[str, torch.Tensor], buffers: Dict[str, torch.Tensor], models: Sequence[nn.Module]) -> None:
    """Copy each seed's slice of the stacked tensors back into its model."""
    with torch.no_grad():
        for i, model in enumerate(models):
            for name, t in model.named_parameters():
                t.copy_(params[name][i])
            for name, t in model.named_buffers():
                t.copy_(buffers[name][i])


def train_batched(models: List[nn.Module], data: ImageData, recipe: Recipe, *, seeds: Sequence[int],
                  eval_every: int = 0, eval_batch_size: int = 1000,
                  snapshots: Optional[List[Dict[int, object]]] = None) -> List[Dict]:
    """Train ``models`` (one architecture, one per seed) in place, together; return one
    {"epochs", "seconds", "loss", "history"} per seed, as :func:`prunebench.train.train` does.
    ``snapshots[i]`` maps epoch k to a file receiving seed i's weights after k epochs."""
    if len(models) != len(seeds) or not models:
        raise PrunebenchError("train_batched needs one model per seed")
    specs = {repr(getattr(m, "spec", None)) for m in models}
    if len(specs) != 1:
        raise PrunebenchError("seeds are batched only over one architecture; train other stages one by one")
    device = data.device
    for m in models:
        m.to(device).train()
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")

    def loss_of(p, b, x, y):
        return F.cross_entropy(functional_call(base, (p, b), (x,)), y)

    batched = vmap(loss_of, in_dims=(0, 0, 0, 0))
    opt = torch.optim.SGD(list(params.values()), lr=recipe.lr, momentum=recipe.momentum,
                          weight_decay=recipe.weight_decay, nesterov=recipe.nesterov)
    milestones = sorted({int(round(m * recipe.epochs)) for m in recipe.milestones})
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=recipe.gamma)
    S = len(models)
    histories: List[List[Dict]] = [[] for _ in range(S)]
    snapshots = snapshots or [{} for _ in range(S)]
    seconds, last = 0.0, [float("nan")] * S

    def snapshot(epoch):
        if any(epoch in s for s in snapshots):
            unstack(params, buffers, models)
            for m, s in zip(models, snapshots):
                if epoch in s:
                    torch.save(m.state_dict(), s[epoch])

    for epoch in range(recipe.epochs):
        snapshot(epoch)
        t0 = time.perf_counter()
        lr_epoch = opt.param_groups[0]["lr"]
        gens = [torch.Generator(device=device).manual_seed(s * 1_000_003 + epoch) for s in seeds]
        streams = [data.train_batches(recipe.batch_size, g, recipe.steps_per_epoch) for g in gens]
        loss_sum = torch.zeros(S, device=device)
        steps = 0
        for batches in zip(*streams):
            x = torch.stack([b[0] for b in batches])
            y = torch.stack([b[1] for b in batches])
            losses = batched(params, buffers, x, y)
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()
            opt.step()
            loss_sum += losses.detach()
            steps += 1
        last = (loss_sum / max(steps, 1)).tolist()
        if not all(math.isfinite(v) for v in last):
            raise Diverged(f"loss became NaN/inf in epoch {epoch + 1} (seeds batched: {list(seeds)})")
        sched.step()
        seconds += time.perf_counter() - t0
        evaluated = eval_every and ((epoch + 1) % eval_every == 0 or epoch + 1 == recipe.epochs)
        if evaluated:
            unstack(params, buffers, models)
        for i, m in enumerate(models):
            acc1 = evaluate(m, data, eval_batch_size)["acc1"] if evaluated else None
            histories[i].append({"epoch": epoch + 1, "lr": lr_epoch, "loss": last[i], "acc1": acc1})
        for m in models:
            m.train()
    unstack(params, buffers, models)
    snapshot(recipe.epochs)
    return [{"epochs": recipe.epochs, "seconds": seconds / S, "loss": last[i], "history": histories[i]}
            for i in range(S)]
