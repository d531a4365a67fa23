"""The one training loop of every stage: SGD with momentum and weight decay, a
step schedule, method hooks, a NaN check, test accuracy every ``eval_every``
epochs kept as a per-epoch history (``history.csv`` beside the checkpoint), a
checkpoint after every epoch (an interrupted stage resumes from it, history
included) and progress bars over epochs and over the steps of an epoch. Under torchrun
each rank steps on its shard of every batch (``prunebench.distributed``); rank 0 writes."""
import csv
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Generator, List, Optional

import torch
from torch import nn
from tqdm import tqdm

from prunebench import atomic, distributed
from prunebench.data import Data
from prunebench.errors import Diverged, PrunebenchError
from prunebench.train.evaluate import evaluate
from prunebench.train.hooks import TrainHooks
from prunebench.train.step import EAGER, Speed, Step, optimizer, tensor_lr

log = logging.getLogger(__name__)

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
    nesterov: bool = False
    steps_per_epoch: Optional[int] = None


HISTORY_FIELDS = ("epoch", "lr", "loss", "acc1")


def write_history(history: List[Dict], path: Path) -> None:
    """The per-epoch history as CSV (epoch, lr, train loss, test top-1; top-1 empty when not evaluated)."""
    with atomic.replacing(path) as f:
        w = csv.DictWriter(f, fieldnames=HISTORY_FIELDS)
        w.writeheader()
        w.writerows({k: ("" if h.get(k) is None else h[k]) for k in HISTORY_FIELDS} for h in history)


def read_checkpoint(checkpoint: Path, device) -> Optional[Dict]:
    """The state in ``checkpoint`` (plain tensors, dicts, lists and numbers: read with
    weights_only=True), or None when there is none. An unreadable one is set aside as
    ``checkpoint.pt.corrupt`` with a warning, and the stage starts over."""
    if not checkpoint.exists():
        return None
    try:
        return atomic.load(checkpoint, map_location=device)
    except atomic.UnreadableFile as e:
        aside = checkpoint.with_name(checkpoint.name + ".corrupt")
        checkpoint.replace(aside)
        log.warning("%s; moved to %s, the stage starts over", e, aside)
        return None


def save_checkpoint(checkpoint: Path, model_state: Dict, opt_state: Dict, sched_state: Dict, epoch: int,
                    seconds: float, history: List[Dict]) -> None:
    """The state after ``epoch`` epochs, which an interrupted stage resumes from, and its
    ``history.csv`` beside it (the batched trainer writes each seed's in this same form)."""
    atomic.save({"model": model_state, "optimizer": opt_state, "scheduler": sched_state, "epoch": epoch,
                 "seconds": seconds, "loss": history[-1]["loss"], "history": history}, checkpoint)
    write_history(history, Path(checkpoint).parent / "history.csv")


def save_snapshot(model: nn.Module, snapshots: Dict[int, Path], epoch: int) -> None:
    """The weights after ``epoch`` epochs into ``snapshots[epoch]``, if asked for and not saved yet (rank 0)."""
    if epoch in snapshots and not Path(snapshots[epoch]).exists() and distributed.is_main():
        atomic.save(model.state_dict(), snapshots[epoch])


def epoch_generator(seed: int, epoch: int, device) -> torch.Generator:
    """The generator of one epoch's data order and augmentation: a function of the seed and epoch only."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + epoch)


def train(model: nn.Module, data: Data, recipe: Recipe, **options) -> dict:
    """Train ``model`` in place; return {"epochs", "seconds", "loss", "history"}. Raises
    :class:`Diverged` when the loss stops being finite. The options are :func:`training`'s."""
    return run_to_end(training(model, data, recipe, **options))


def run_to_end(steps: Generator[None, None, Dict]) -> Dict:
    """Drive a :func:`training` through all its steps; its result."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def training(model: nn.Module, data: Data, recipe: Recipe, *, seed: int, checkpoint: Path,
             hooks: TrainHooks = TrainHooks(), desc: str = "train", progress: bool = True,
             snapshots: Optional[Dict[int, Path]] = None, eval_every: int = 0, eval_batch_size: int = 1000,
             on_epoch: Optional[Callable[[Dict], None]] = None, speed: Speed = EAGER,
             clock: Callable[[], float] = time.perf_counter) -> Generator[None, None, Dict]:
    """The training of ``model`` in place, one step at a time: a generator that yields after
    every training step and returns {"epochs", "seconds", "loss", "history"}
    (:func:`train` drives it to its end; several advanced in turn train side by side,
    :mod:`prunebench.train.interleaved`). Raises :class:`Diverged` when the loss stops
    being finite. ``snapshots`` maps an epoch k to a file that receives the weights after
    k epochs (0: before training). ``eval_every`` > 0: test top-1 after every that many
    epochs and after the last one (0: never here; the caller evaluates the final model).
    ``history`` has one entry per epoch: {"epoch" (1-based), "lr" (of that epoch), "loss"
    (mean train loss), "acc1"}; ``on_epoch`` receives each new entry (experiment loggers).
    ``speed``: precision, memory format and the compiled / CUDA-graph step (:mod:`.step`).
    ``clock`` measures ``seconds`` (interleaved: each training's share of the wall time)."""
    if eval_every < 0:
        raise ValueError(f"eval_every must be >= 0, got {eval_every}")
    if data.train_size == 0:  # not a divergence: there is nothing to learn from
        raise PrunebenchError("the training set is empty; check the data set's settings (dataset.root, sizes)")
    device = data.device
    model.to(device)
    if speed.channels_last:
        model.to(memory_format=torch.channels_last)
    net = distributed.wrap(model)  # the steps call net (DDP under torchrun); hooks and files use model
    opt = optimizer(model, recipe, device, speed)
    milestones = sorted({int(round(m * recipe.epochs)) for m in recipe.milestones})
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=recipe.gamma)
    start, seconds, last_loss, history = 0, 0.0, float("nan"), []
    checkpoint = Path(checkpoint)
    distributed.barrier()  # every rank past its last read of the folder before rank 0 writes to it
    state = read_checkpoint(checkpoint, device)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start, seconds, last_loss = state["epoch"], state["seconds"], state["loss"]
        history = state.get("history", [])
        if speed.fast:
            tensor_lr(opt, device)
    progress = progress and distributed.is_main()
    step = Step(model, opt, hooks, speed, device, net=net)
    bar = tqdm(total=recipe.epochs, initial=start, desc=desc, disable=not progress, leave=True,
               dynamic_ncols=True)
    snapshots = snapshots or {}
    for epoch in range(start, recipe.epochs):
        save_snapshot(model, snapshots, epoch)
        t0 = clock()
        model.train()
        gen = epoch_generator(seed, epoch, device)
        loss_sum = step.loss_sum
        loss_sum.zero_()
        steps = 0
        lr_epoch = float(opt.param_groups[0]["lr"])
        inner = tqdm(total=data.steps_per_epoch(recipe.batch_size, recipe.steps_per_epoch), desc=f"epoch {epoch + 1}",
                     disable=not progress, leave=False, dynamic_ncols=True)
        for x, y in map(distributed.shard, data.train_batches(recipe.batch_size, gen, recipe.steps_per_epoch)):
            step(x, y)
            steps += 1
            if steps % CHECK_EVERY == 0:
                running = distributed.mean(loss_sum).item() / steps  # the one host sync every CHECK_EVERY steps
                if not math.isfinite(running):
                    inner.close()
                    raise Diverged(f"loss became NaN/inf in epoch {epoch + 1}")
                inner.set_postfix(loss=f"{running:.3f}", lr=f"{lr_epoch:.3g}", refresh=False)
                inner.update(CHECK_EVERY)
            yield
        inner.close()
        last_loss = distributed.mean(loss_sum).item() / max(steps, 1)
        distributed.sync_buffers(model)  # rank 0's BatchNorm running statistics on every rank
        if not torch.isfinite(torch.tensor(last_loss)):
            raise Diverged(f"loss became NaN/inf in epoch {epoch + 1}")
        sched.step()
        hooks.on_epoch_end(model, epoch)
        seconds += clock() - t0
        acc1 = None
        if eval_every and ((epoch + 1) % eval_every == 0 or epoch + 1 == recipe.epochs):
            acc1 = evaluate(model, data, eval_batch_size)["acc1"]
        history.append({"epoch": epoch + 1, "lr": lr_epoch, "loss": last_loss, "acc1": acc1})
        if distributed.is_main():
            save_checkpoint(checkpoint, model.state_dict(), opt.state_dict(), sched.state_dict(), epoch + 1,
                            seconds, history)
        if on_epoch is not None:
            on_epoch(history[-1])
        bar.set_postfix(loss=f"{last_loss:.3f}", lr=f"{float(opt.param_groups[0]['lr']):.2g}",
                        **({"acc1": f"{acc1:.2f}"} if acc1 is not None else {}))
        bar.update(1)
    bar.close()
    save_snapshot(model, snapshots, recipe.epochs)
    return {"epochs": recipe.epochs, "seconds": seconds, "loss": last_loss, "history": history}
