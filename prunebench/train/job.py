"""One stage's training as a value: what the pipeline asks a trainer to do.

``Run.trained`` describes the training of a stage as a :class:`TrainJob` and hands it
to its trainer: :func:`train_job` trains it alone (the default); with ``seeds=[...]``
and ``train.batch_seeds`` the trainer of :mod:`prunebench.seeds` gathers the jobs of
every seed and trains them together: interleaved, a step each in turn
(:func:`prunebench.train.interleaved.train_interleaved`, through :func:`training_of`), or
those that share an architecture as one stacked model
(:func:`prunebench.train.batched.train_batched`)."""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Generator, Optional

import torch
from torch import nn

from prunebench.data import Data
from prunebench.train.hooks import HookList, MaskHook, TrainHooks
from prunebench.train.loop import Recipe, train, training
from prunebench.train.step import EAGER, Speed


@dataclass
class TrainJob:
    kind: str  # the stage's kind: unpruned, sparse, finetune, ... (jobs batch only with their own kind)
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

    def all_hooks(self) -> TrainHooks:
        """The method's hooks and, with masks, the hook keeping masked weights at zero."""
        return HookList([h for h in (self.hooks, MaskHook(self.masks) if self.masks else None) if h is not None])

    def batchable(self) -> bool:
        """Whether this job can train batched with other seeds' (its hooks say so)."""
        return self.hooks is None or bool(getattr(self.hooks, "batchable", False))


def settings(job: TrainJob) -> Dict:
    """The keyword arguments of :func:`prunebench.train.train` that ``job`` sets."""
    return dict(seed=job.seed, checkpoint=job.checkpoint, hooks=job.all_hooks(), desc=job.kind, progress=job.progress,
                snapshots=job.snapshots, eval_every=job.eval_every, eval_batch_size=job.eval_batch_size,
                on_epoch=job.on_epoch, speed=job.speed)


def training_of(job: TrainJob, **options) -> Generator[None, None, Dict]:
    """The training of ``job``, one step at a time (:func:`prunebench.train.loop.training`);
    ``options`` override its settings (``clock``, ``progress``)."""
    return training(job.model, job.data, job.recipe, **{**settings(job), **options})


def train_job(job: TrainJob) -> Dict:
    """Train ``job`` alone: :func:`prunebench.train.train` with its settings."""
    return train(job.model, job.data, job.recipe, **settings(job))
