"""The one training loop of every stage: SGD with momentum and weight decay, a
step schedule, method hooks, a NaN check, a checkpoint after every epoch (an
interrupted stage resumes from it) and a progress bar."""
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from prunebench.data import ImageData
from prunebench.errors import Diverged
from prunebench.train.hooks import TrainHooks

CHECK_EVERY = 50  # steps between reads of the device-side loss sum (one host sync each)


@dataclass
class Recipe:
    epochs: int
    lr: float
    batch_size: int = 64
    momentum: float = 0.9
    weight_decay: float = 1e-4
    milestones: List[float] = field(default_factory=list)  # fractions of epochs where lr *= gamma
    gamma: float = 0.1
    steps_per_epoch: Optional[int] = None


def train(model: nn.Module, data: ImageData, recipe: Recipe, *, seed: int, checkpoint: Path,
          hooks: TrainHooks = TrainHooks(), desc: str = "train", progress: bool = True,
          snapshots: Optional[Dict[int, Path]] = None) -> dict:
    """Train ``model`` in place; return {"epochs", "seconds", "loss"}. Raises
    :class:`Diverged` when the loss stops being finite. ``snapshots`` maps an
    epoch k to a file that receives the weights after k epochs (0: before training)."""
    device = data.device
    model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                          weight_decay=recipe.weight_decay)
    milestones = sorted({int(round(m * recipe.epochs)) for m in recipe.milestones})
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=recipe.gamma)
    start, seconds, last_loss = 0, 0.0, float("nan")
    checkpoint = Path(checkpoint)
    if checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start, seconds, last_loss = state["epoch"], state["seconds"], state["loss"]
    bar = tqdm(total=recipe.epochs, initial=start, desc=desc, disable=not progress, leave=True,
               dynamic_ncols=True)
    snapshots = snapshots or {}
    for epoch in range(start, recipe.epochs):
        if epoch in snapshots and not Path(snapshots[epoch]).exists():
            torch.save(model.state_dict(), snapshots[epoch])
        t0 = time.perf_counter()
        model.train()
        gen = torch.Generator(device=device).manual_seed(seed * 1_000_003 + epoch)
        loss_sum = torch.zeros((), device=device)
        steps = 0
        for x, y in data.train_batches(recipe.batch_size, gen, recipe.steps_per_epoch):
            hooks.on_batch(model, x, y)
            loss = F.cross_entropy(model(x), y)
            extra = hooks.penalty(model)
            opt.zero_grad(set_to_none=True)
            (loss if extra is None else loss + extra).backward()
            hooks.regularize(model)
            lr = opt.param_groups[0]["lr"]
            opt.step()
            hooks.after_step(model, lr)
            loss_sum += loss.detach()
            steps += 1
            if steps % CHECK_EVERY == 0 and not torch.isfinite(loss_sum):
                raise Diverged(f"loss became NaN/inf in epoch {epoch + 1}")
        last_loss = loss_sum.item() / max(steps, 1)
        if not torch.isfinite(torch.tensor(last_loss)):
            raise Diverged(f"loss became NaN/inf in epoch {epoch + 1}")
        sched.step()
        hooks.on_epoch_end(model, epoch)
        seconds += time.perf_counter() - t0
        tmp = checkpoint.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "epoch": epoch + 1, "seconds": seconds, "loss": last_loss}, tmp)
        os.replace(tmp, checkpoint)
        bar.set_postfix(loss=f"{last_loss:.3f}", lr=f"{opt.param_groups[0]['lr']:.2g}")
        bar.update(1)
    bar.close()
    if recipe.epochs in snapshots and not Path(snapshots[recipe.epochs]).exists():
        torch.save(model.state_dict(), snapshots[recipe.epochs])
    return {"epochs": recipe.epochs, "seconds": seconds, "loss": last_loss}
