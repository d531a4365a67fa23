"""The one training loop of every stage: SGD with momentum and weight decay, a
step schedule, method hooks, a NaN check, test accuracy every ``eval_every``
epochs kept as a per-epoch history (``history.csv`` beside the checkpoint, written
as epochs finish), a checkpoint every ``checkpoint_every`` seconds of training and
after the last epoch (an interrupted stage resumes from it, history included) and
progress bars over epochs and over the steps of an epoch. Under torchrun each rank
steps on its shard of every batch (``prunebench.distributed``); rank 0 writes.

The loop is a generator (:func:`training`) that yields after every step, so one
thread can advance several trainings in turn (:mod:`prunebench.scheduler`); nothing
in it waits for the device between checkpoints: the loss and the test accuracy come
back through :class:`~prunebench.train.readout.Readout`, and an epoch's numbers are
written once they have landed (at the latest at the next checkpoint)."""
import csv
import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Generator, List, Optional, Sequence

import torch
from torch import nn
from tqdm import tqdm

from prunebench import atomic, distributed
from prunebench.data import Data
from prunebench.data.policy import policy_of
from prunebench.errors import Diverged, PrunebenchError
from prunebench.train.evaluate import hits
from prunebench.train.hooks import TrainHooks
from prunebench.train.readout import Readout
from prunebench.train import modern
from prunebench.train.step import EAGER, Speed, Step, optimizer, tensor_lr

log = logging.getLogger(__name__)

CHECK_EVERY = 50  # steps between looks at the running loss (a copy to the host, no wait)


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
    warmup_epochs: int = 0  # the first epochs train at lr x warmup_factor
    warmup_factor: float = 0.1
    # the modern recipe (prunebench.train.modern, prunebench.data.policy); the defaults train as before
    warmup: str = "constant"  # constant: lr x warmup_factor | linear: from lr x warmup_factor up to lr, per step
    lr_schedule: str = "step"  # step: milestones x gamma | cosine: per-step cosine decay to 0 after the warm-up
    optimizer: str = "sgd"  # sgd (momentum, nesterov) | adamw
    label_smoothing: float = 0.0
    augment: str = "none"  # none | trivialaugment | randaugment (on the device, after crop and flip)
    randaugment_ops: int = 2
    randaugment_magnitude: int = 9
    mixup_alpha: float = 0.0  # 0: off
    cutmix_alpha: float = 0.0  # 0: off
    ema_decay: float = 0.0  # 0: off; else the model ends with the moving average of its weights
    ema_steps: int = 32  # steps between two updates of the average
    # the learning rate of every epoch, one per epoch; set, it replaces lr, milestones and warm-up (the revisited
    # strategies' rewound and 1-cycle schedules)
    lr_epochs: Optional[List[float]] = None

    def replace(self, **changes) -> "Recipe":
        """This recipe with some fields changed (epochs, lr, milestones)."""
        return dataclasses.replace(self, **changes)

    def milestone_epochs(self) -> List[int]:
        """The epochs after which the lr is multiplied by ``gamma``: each fraction times the epochs, rounded."""
        return sorted({int(round(m * self.epochs)) for m in self.milestones})


@dataclass
class Status:
    """Where a training stands; :func:`training` yields it after every step."""
    epochs: int  # of the recipe
    steps_per_epoch: int
    epoch: int = 0  # epochs done
    step: int = 0  # steps done of the epoch under way
    compile_seconds: float = 0.0  # host time of the first steps (tracing, compilation, capture)

    @property
    def done(self) -> float:
        """Epochs done, the one under way counted by its steps."""
        return self.epoch + self.step / max(self.steps_per_epoch, 1)


HISTORY_FIELDS = ("epoch", "lr", "loss", "acc1")
VAL_FIELD = "val_acc1"  # top-1 on the held-out training images (dataset.val_split), where there are some


def write_history(history: List[Dict], path: Path) -> None:
    """The per-epoch history as CSV (epoch, lr, train loss, test top-1; top-1 empty when not evaluated;
    ``val_acc1`` beside them with ``dataset.val_split``)."""
    fields = HISTORY_FIELDS + ((VAL_FIELD,) if any(VAL_FIELD in h for h in history) else ())
    with atomic.replacing(path) as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows({k: ("" if h.get(k) is None else h[k]) for k in fields} for h in history)


CHECKPOINT_KEYS = {"model": dict, "optimizer": dict, "scheduler": dict, "epoch": int, "seconds": (int, float),
                   "loss": (int, float)}


def read_checkpoint(checkpoint: Path, device, model: Optional[nn.Module] = None) -> Optional[Dict]:
    """The state in ``checkpoint`` (plain tensors, dicts, lists and numbers: read with
    weights_only=True), or None when there is none. One that cannot be read, lacks a part
    (:data:`CHECKPOINT_KEYS`) or holds weights that are not ``model``'s is set aside as
    ``checkpoint.pt.corrupt`` with a warning, and the stage starts over."""
    if not checkpoint.exists():
        return None
    try:
        state = atomic.load(checkpoint, map_location=device)
        if not isinstance(state, dict):
            raise atomic.UnreadableFile(checkpoint, ValueError("no dict"))
        missing = [k for k, t in CHECKPOINT_KEYS.items() if not isinstance(state.get(k), t)]
        if missing:
            raise atomic.UnreadableFile(checkpoint, ValueError(f"no {', '.join(missing)}"))
        if model is not None:
            from prunebench.stagefiles import check_state

            check_state(checkpoint, state["model"], model.state_dict())
    except atomic.UnreadableFile as e:
        aside = checkpoint.with_name(checkpoint.name + ".corrupt")
        if distributed.is_main():
            checkpoint.replace(aside)
        log.warning("%s; moved to %s, the stage starts over", e, aside)
        return None
    return state


def save_checkpoint(checkpoint: Path, state: Dict, history: List[Dict]) -> None:
    """The state after ``state["epoch"]`` epochs, which an interrupted stage resumes from
    (model, optimizer, scheduler, seconds), with its history, and ``history.csv`` beside it."""
    atomic.save({**state, "loss": history[-1]["loss"], "history": history}, checkpoint)
    write_history(history, Path(checkpoint).parent / "history.csv")


def save_snapshot(model: nn.Module, snapshots: Dict[int, Path], epoch: int) -> None:
    """The weights after ``epoch`` epochs into ``snapshots[epoch]``, if asked for and not saved yet (rank 0)."""
    if epoch in snapshots and not Path(snapshots[epoch]).exists() and distributed.is_main():
        atomic.save(model.state_dict(), snapshots[epoch])


def epoch_generator(seed: int, epoch: int, device) -> torch.Generator:
    """The generator of one epoch's data order and augmentation: a function of the seed and epoch only."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + epoch)


def epoch_lr(recipe: Recipe, milestones: Sequence[int], epoch: int) -> float:
    """The learning rate of (0-based) ``epoch``, computed on the host as MultiStepLR computes it,
    times ``warmup_factor`` in the first ``warmup_epochs`` epochs; ``recipe.lr_epochs[epoch]`` where set."""
    if recipe.lr_epochs is not None:
        return float(recipe.lr_epochs[epoch])
    lr = recipe.lr
    for m in milestones:
        if m <= epoch:
            lr = lr * recipe.gamma
    return lr * recipe.warmup_factor if epoch < recipe.warmup_epochs else lr


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """Every group's learning rate to ``lr``, in place where it is a device tensor (a captured step reads it)."""
    for g in opt.param_groups:
        if isinstance(g["lr"], torch.Tensor):
            g["lr"].fill_(lr)
        else:
            g["lr"] = lr


def train(model: nn.Module, data: Data, recipe: Recipe, **options) -> dict:
    """Train ``model`` in place; return {"epochs", "seconds", "wall_seconds", "compile_seconds",
    "loss", "history"}. Raises :class:`Diverged` when the loss stops being finite. The options
    are :func:`training`'s."""
    return run_to_end(training(model, data, recipe, **options))


def run_to_end(steps: Generator) -> Dict:
    """Drive a :func:`training` through all its steps; its result."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


class _Epochs:
    """The epochs whose numbers are still on their way from the device, settled in order."""

    def __init__(self, history: List[Dict], data: Data):
        self.history, self.data = history, data
        self.pending: List[tuple] = []  # (epoch, lr, loss readout, hits readout or None, val hits or None)

    def add(self, epoch: int, lr: float, loss: Readout, acc: Optional[Readout], val: Optional[Readout] = None) -> None:
        self.pending.append((epoch, lr, loss, acc, val))

    def settle(self, wait: bool) -> List[Dict]:
        """Add to the history the epochs whose numbers have landed (``wait``: all of them) and
        return them; Diverged on a NaN loss."""
        added = []
        while self.pending:
            epoch, lr, loss, acc, val = self.pending[0]
            if not wait and not (loss.ready() and (acc is None or acc.ready()) and (val is None or val.ready())):
                break
            self.pending.pop(0)
            value = float(loss.get().item())
            if not math.isfinite(value):
                raise Diverged(f"loss became NaN/inf in epoch {epoch}")
            acc1 = None if acc is None else 100.0 * acc.get()[0].item() / self.data.test_size
            added.append({"epoch": epoch, "lr": lr, "loss": value, "acc1": acc1})
            if val is not None:
                added[-1][VAL_FIELD] = 100.0 * val.get()[0].item() / self.data.val_size
            self.history.append(added[-1])
        return added


def training(model: nn.Module, data: Data, recipe: Recipe, *, seed: int, checkpoint: Path,
             hooks: TrainHooks = TrainHooks(), desc: str = "train", progress: bool = True,
             snapshots: Optional[Dict[int, Path]] = None, eval_every: int = 0, eval_batch_size: int = 1000,
             on_epoch: Optional[Callable[[Dict], None]] = None, speed: Speed = EAGER,
             clock: Callable[[], float] = time.perf_counter,
             checkpoint_every: float = 0.0) -> Generator[Status, None, Dict]:
    """The training of ``model`` in place, one step at a time: a generator that yields its
    :class:`Status` after every training step and returns {"epochs", "seconds", "wall_seconds",
    "compile_seconds", "loss", "history"} (:func:`train` drives it to its end; the scheduler
    advances several in turn). Raises :class:`Diverged` when the loss stops being finite.
    ``snapshots`` maps an epoch k to a file that receives the weights after k epochs (0: before
    training). ``eval_every`` > 0: test top-1 after every that many epochs and after the last one
    (0: never here; the caller evaluates the final model). ``history`` has one entry per epoch:
    {"epoch" (1-based), "lr" (of that epoch), "loss" (mean train loss), "acc1"}; ``on_epoch``
    receives each new entry (experiment loggers) once a checkpoint holds it, so a resumed training
    logs every epoch once.
    ``checkpoint_every``: seconds of training between checkpoints (0: after every epoch); the
    last epoch is always saved. ``speed``: precision, memory format and the compiled /
    CUDA-graph step (:mod:`.step`). ``clock`` measures ``seconds`` (the scheduler's: each
    training's share of the wall time); ``wall_seconds`` is the time from its first step to its
    last, resumed parts added."""
    if eval_every < 0:
        raise ValueError(f"eval_every must be >= 0, got {eval_every}")
    if data.train_size == 0:  # not a divergence: there is nothing to learn from
        raise PrunebenchError("the training set is empty; check the data set's settings (dataset.root, sizes)")
    policy = policy_of(recipe)
    if policy is not None:
        data = data.with_policy(policy)
    mixing = recipe.mixup_alpha > 0 or recipe.cutmix_alpha > 0
    device = data.device
    model.to(device)
    if speed.channels_last:
        model.to(memory_format=torch.channels_last)
    net = distributed.wrap(model)  # the steps call net (DDP under torchrun); hooks and files use model
    opt = optimizer(model, recipe, device, speed)
    milestones = recipe.milestone_epochs()
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=recipe.gamma)
    start, seconds, wall, last_loss, history = 0, 0.0, 0.0, float("nan"), []
    ema = modern.WeightAverage(model, recipe.ema_decay, recipe.ema_steps) if recipe.ema_decay > 0 else None
    checkpoint = Path(checkpoint)
    distributed.barrier()  # every rank past its last read of the folder before rank 0 writes to it
    state = read_checkpoint(checkpoint, device, model)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start, seconds, last_loss = state["epoch"], state["seconds"], state["loss"]
        wall = state.get("wall_seconds", seconds)
        history = state.get("history", [])
        if ema is not None:
            ema.load_state_dict(state.get("ema"))
        if speed.fast:
            tensor_lr(opt, device)
    else:
        hooks.before_training(model)
    progress = progress and distributed.is_main()
    step = Step(model, opt, hooks, speed, device, net=net, label_smoothing=recipe.label_smoothing)
    per_epoch = data.steps_per_epoch(recipe.batch_size, recipe.steps_per_epoch)
    status = Status(epochs=recipe.epochs, steps_per_epoch=per_epoch, epoch=start)
    epochs = _Epochs(history, data)
    bar = tqdm(total=recipe.epochs, initial=start, desc=desc, disable=not progress, leave=True, dynamic_ncols=True)
    snapshots = snapshots or {}
    # under torchrun every rank must see a divergence at the same step (a rank that stopped alone would leave
    # the others in their next all-reduce): the numbers are read back in step, not as they land
    in_step = distributed.world_size() > 1
    unlogged: List[Dict] = []  # epochs for on_epoch once a checkpoint holds them (a resumed run logs each once)
    began = saved = time.perf_counter()
    for epoch in range(start, recipe.epochs):
        save_snapshot(model, snapshots, epoch)
        t0 = clock()
        model.train()
        gen = epoch_generator(seed, epoch, device)
        loss_sum = step.loss_sum
        loss_sum.zero_()
        steps = 0
        stepwise = modern.per_step(recipe)  # never with lr_epochs (one rate an epoch)
        lr_epoch = modern.step_lr(recipe, milestones, epoch, 0, per_epoch) if stepwise else epoch_lr(
            recipe, milestones, epoch)
        if recipe.warmup_epochs or stepwise or recipe.lr_epochs is not None:  # the milestones, warm-up on top
            set_lr(opt, lr_epoch)
        rng = modern.mixing_rng(seed, epoch) if mixing else None
        looks: List[tuple] = []  # (steps, readout of the loss sum) on their way to the host
        inner = tqdm(total=per_epoch, desc=f"epoch {epoch + 1}", disable=not progress, leave=False, dynamic_ncols=True)
        for x, y in map(distributed.shard, data.train_batches(recipe.batch_size, gen, recipe.steps_per_epoch)):
            if stepwise and steps:
                set_lr(opt, modern.step_lr(recipe, milestones, epoch, steps, per_epoch))
            if mixing:
                x, y = modern.mix(x, y, data.num_classes, recipe.mixup_alpha, recipe.cutmix_alpha, rng)
            step(x, y)
            steps += 1
            if ema is not None and steps % recipe.ema_steps == 0:
                if epoch < recipe.warmup_epochs:  # torchvision: the average starts after the warm-up
                    ema.reset(model)
                else:
                    ema.update(model)
            if steps % CHECK_EVERY == 0:
                looks.append((steps, Readout(distributed.mean(loss_sum))))
                while looks and (in_step or looks[0][1].ready()):
                    n, look = looks.pop(0)
                    running = float(look.get().item()) / n
                    if not math.isfinite(running):
                        inner.close()
                        raise Diverged(f"loss became NaN/inf in epoch {epoch + 1}")
                    inner.set_postfix(loss=f"{running:.3f}", lr=f"{lr_epoch:.3g}", refresh=False)
                inner.update(CHECK_EVERY)
            status.step = steps
            status.compile_seconds = step.compile_seconds
            yield status
        inner.close()
        loss = Readout(distributed.mean(loss_sum) / max(steps, 1))
        if (in_step or loss.ready()) and not math.isfinite(float(loss.get().item())):  # CPU: at once
            raise Diverged(f"loss became NaN/inf in epoch {epoch + 1}")
        distributed.sync_buffers(model)  # rank 0's BatchNorm running statistics on every rank
        sched.step()
        hooks.on_epoch_end(model, epoch)
        seconds += clock() - t0
        evaluated = eval_every and ((epoch + 1) % eval_every == 0 or epoch + 1 == recipe.epochs)
        epochs.add(epoch + 1, lr_epoch, loss, Readout(hits(model, data, eval_batch_size)) if evaluated else None,
                   Readout(hits(model, data, eval_batch_size, split="val")) if evaluated and data.val_size else None)
        status.epoch, status.step = epoch + 1, 0
        due = (epoch + 1 == recipe.epochs or checkpoint_every <= 0 or epoch + 1 in snapshots  # a snapshot's epoch:
               or time.perf_counter() - saved >= checkpoint_every)  # a rerun never trains past it again
        added = epochs.settle(wait=due or in_step)
        unlogged += added
        if due:
            saved = time.perf_counter()
            if distributed.is_main():
                save_checkpoint(checkpoint, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                             "scheduler": sched.state_dict(), "epoch": epoch + 1,
                                             "seconds": seconds, "wall_seconds": wall + saved - began,
                                             **({"ema": ema.state_dict()} if ema is not None else {})}, history)
            for entry in unlogged if on_epoch is not None else ():
                on_epoch(entry)
            unlogged = []
        elif added and distributed.is_main():
            write_history(history, checkpoint.parent / "history.csv")  # written as epochs land
        if history:
            last_loss = history[-1]["loss"]
            bar.set_postfix(loss=f"{last_loss:.3f}", lr=f"{history[-1]['lr']:.2g}",
                            **({"acc1": f"{history[-1]['acc1']:.2f}"} if history[-1]["acc1"] is not None else {}))
        bar.update(1)
    bar.close()
    if ema is not None:
        ema.copy_to(model)  # the recipe's model is the average of its weights
    save_snapshot(model, snapshots, recipe.epochs)
    return {"epochs": recipe.epochs, "seconds": seconds, "wall_seconds": wall + time.perf_counter() - began,
            "compile_seconds": step.compile_seconds, "loss": last_loss, "history": history}
