"""One stage's training as a value.

A stage that trains describes its training as a :class:`TrainJob` (the model, the data,
the recipe, the hooks, the files) and hands back a :class:`Training`: the job and what to
do with its result when it ends. The scheduler (:mod:`prunebench.scheduler`) advances every
training in flight a step at a time through :func:`training_of`; :func:`train_job` trains
one alone."""
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, Generator, Optional, Union

import torch
from torch import nn

from prunebench.data import Data
from prunebench.train.hooks import HookList, MaskHook, TrainHooks
from prunebench.train.loop import Recipe, Status, train, training
from prunebench.train.step import EAGER, Speed


@dataclass
class TrainJob:
    kind: str  # the stage's kind (unpruned, sparse, finetune, ...): its progress bar's label
    model: nn.Module
    data: Data
    recipe: Recipe
    seed: int
    checkpoint: Path
    hooks: Optional[TrainHooks] = None  # the method's (sparse stage); masks add their own hook
    masks: Optional[Dict[str, torch.Tensor]] = None  # weight-level masks kept through training
    snapshots: Dict[int, Path] = field(default_factory=dict)
    on_epoch: Optional[Callable[[Dict], None]] = None
    eval_every: int = 0
    eval_batch_size: int = 1000
    progress: bool = True
    speed: Speed = EAGER
    checkpoint_every: float = 0.0  # seconds of training between checkpoints (0: every epoch)

    def all_hooks(self) -> TrainHooks:
        """The method's hooks and, with masks, the hook keeping masked weights at zero."""
        return HookList([h for h in (self.hooks, MaskHook(self.masks) if self.masks else None) if h is not None])


@dataclass
class Training:
    """A stage's training and what follows it: ``then(result)`` gets what the training returned
    and gives the stage's metrics, or the next :class:`Training` of the same stage (the
    fine-tuning between pruning iterations). ``close`` runs when the training ends, however
    it ends (a logger's files)."""
    job: TrainJob
    then: Callable[[Dict], Union[Dict, "Training"]]
    close: Callable[[], None] = lambda: None

    def after(self, more: Callable[[Dict], Dict]) -> "Training":
        """This training, with its metrics passed through ``more`` (a strategy adding its own)."""
        then = self.then
        return replace(self, then=lambda out: more(then(out)))


def settings(job: TrainJob) -> Dict:
    """The keyword arguments of :func:`prunebench.train.train` that ``job`` sets."""
    return dict(seed=job.seed, checkpoint=job.checkpoint, hooks=job.all_hooks(), desc=job.kind, progress=job.progress,
                snapshots=job.snapshots, eval_every=job.eval_every, eval_batch_size=job.eval_batch_size,
                on_epoch=job.on_epoch, speed=job.speed, checkpoint_every=job.checkpoint_every)


def place(job: TrainJob) -> None:
    """The job's model on its data's device and in its memory format (channels_last), before its
    training starts: the scheduler does this on the default stream, so that no tensor of the model
    is freed on a training's own stream while another allocation could take its memory."""
    job.model.to(job.data.device)
    if job.speed.channels_last:
        job.model.to(memory_format=torch.channels_last)


def training_of(job: TrainJob, **options) -> Generator[Status, None, Dict]:
    """The training of ``job``, one step at a time (:func:`prunebench.train.loop.training`);
    ``options`` override its settings (``clock``, ``progress``)."""
    return training(job.model, job.data, job.recipe, **{**settings(job), **options})


def train_job(job: TrainJob) -> Dict:
    """Train ``job`` alone: :func:`prunebench.train.train` with its settings."""
    return train(job.model, job.data, job.recipe, **settings(job))
