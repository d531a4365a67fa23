"""Every bad input a one-line :class:`PrunebenchError`, before anything trains.

:func:`check` runs in ``Run.__init__``: names of methods, strategies, models and
data sets; positive sizes, epochs, steps and learning rates; ratios in [0, 1);
the method against the model (``Method.check_model``: a pair that cannot run,
e.g. block-level SSS on a model without residual blocks, is refused here) and the
layer names of ``method.layer_ratios`` / ``method.skip`` against the groups the
method prunes (the model built on the meta device: no weights allocated); a cache
folder that can be written. Data files are checked where they are read (``prunebench.data``), an
empty data set is refused by the training loop, and :func:`warn_if_unpruned`
says so when a pruning removed nothing."""
import logging
import tempfile
from pathlib import Path
from typing import Any, List

import torch
from omegaconf import DictConfig

from prunebench import data as datasets
from prunebench import methods, models, strategies
from prunebench.errors import PrunebenchError
from prunebench.pruning.selection import check_layer_names, check_ratio
from prunebench.pruning.surgery import prunable_weights

log = logging.getLogger(__name__)

SELECTIONS = ("global", "layer", "threshold")
SPARSE_INITS = ("scratch", "unpruned")


def positive(name: str, value: Any, optional: bool = False) -> None:
    """``value`` > 0 (None allowed when ``optional``: "the default")."""
    if value is None and optional:
        return
    if value is None or not value > 0:
        raise PrunebenchError(f"{name} must be > 0, got {value}")


def at_least(name: str, value: Any, low: int) -> None:
    if value is None or value < low:
        raise PrunebenchError(f"{name} must be >= {low}, got {value}")


def one_of(name: str, value: Any, choices) -> None:
    if value not in choices:
        raise PrunebenchError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")


def check_names(cfg: DictConfig) -> None:
    unknown = [s for s in cfg.strategies if s not in strategies.STRATEGIES]
    if unknown:
        raise PrunebenchError(f"unknown strategies {unknown}; known: {', '.join(strategies.STRATEGIES)}")
    if cfg.method.name not in methods.METHODS:
        raise PrunebenchError(f"unknown method {cfg.method.name!r}; known: {', '.join(sorted(methods.METHODS))}")
    if cfg.dataset.name not in datasets.LOADERS:
        raise PrunebenchError(f"unknown dataset {cfg.dataset.name!r}; known: {', '.join(sorted(datasets.LOADERS))}")
    if cfg.model.arch not in models.ARCHS:
        raise PrunebenchError(f"unknown model.arch {cfg.model.arch!r}; known: {', '.join(sorted(models.ARCHS))}")


def check_schedule(cfg: DictConfig) -> None:
    s = cfg.schedule
    positive("schedule.epochs", s.epochs)
    positive("schedule.batch_size", s.batch_size)
    positive("schedule.eval_batch_size", s.eval_batch_size)
    positive("schedule.steps_per_epoch", s.steps_per_epoch, optional=True)
    positive("schedule.lr", s.lr)
    at_least("schedule.eval_every", s.eval_every, 0)
    for m in s.milestones:
        if not 0 <= m <= 1:
            raise PrunebenchError(f"schedule.milestones are fractions of the epochs in [0, 1], got {list(s.milestones)}")
    ft = cfg.strategy.finetune
    positive("strategy.finetune.epochs", ft.epochs)
    positive("strategy.finetune.lr", ft.lr)


def check_train(cfg: DictConfig) -> None:
    if cfg.get("train") is None:
        return
    if cfg.train.max_concurrent is not None:
        at_least("train.max_concurrent", cfg.train.max_concurrent, 1)
    if cfg.train.checkpoint_every is None or cfg.train.checkpoint_every < 0:
        raise PrunebenchError(f"train.checkpoint_every must be >= 0 (seconds; 0: every epoch), got "
                              f"{cfg.train.checkpoint_every}")


def check_method(cfg: DictConfig) -> None:
    m = cfg.method
    check_ratio("method.pruning_ratio", m.pruning_ratio)
    for name, r in m.layer_ratios.items():
        check_ratio(f"method.layer_ratios.{name}", r)
    one_of("method.selection", m.selection, SELECTIONS)
    one_of("method.sparse_init", m.sparse_init, SPARSE_INITS)
    at_least("method.min_channels", m.min_channels, 1)
    at_least("method.round_to", m.round_to, 1)
    at_least("method.iterations", m.iterations, 1)
    at_least("method.iteration_epochs", m.iteration_epochs, 0)
    positive("method.sparse_epochs", m.sparse_epochs, optional=True)
    positive("method.sparse_lr", m.sparse_lr, optional=True)


def check_data(cfg: DictConfig) -> None:
    d = cfg.dataset
    at_least("dataset.pad", d.pad, 0)
    for key in ("train_size", "test_size", "image_size"):  # the synthetic and image-tree sets' own settings
        if key in d:
            positive(f"dataset.{key}", d[key])
    if "num_classes" in d:  # image trees: 0 counts the class folders
        at_least("dataset.num_classes", d.num_classes, 1 if d.name == "synthetic" else 0)


def layer_names(model, method) -> List[str]:
    """The names ``method.layer_ratios`` and ``method.skip`` may use: the channel groups the
    method prunes (structured) or modules with a pruned weight (weight-level)."""
    if method.kind == "weight":
        return [name.rsplit(".", 1)[0] for name in prunable_weights(model)]
    return [g.name for g in method.groups(model)]


def check_model(cfg: DictConfig) -> None:
    positive("model.width", cfg.model.width)
    shape, classes = datasets.shape(cfg.dataset)
    try:
        spec = models.spec_from_config(cfg.model, shape[0], classes)
    except (ValueError, KeyError) as e:
        raise PrunebenchError(f"model {cfg.model.name!r}: {e}") from e
    method = methods.create(cfg.method, cfg.seed)
    with torch.device("meta"):
        model = models.build(spec)
    try:
        method.check_model(model)
    except PrunebenchError as e:
        raise PrunebenchError(f"method={cfg.method.name} cannot prune model={cfg.model.name}: {e}") from e
    known = layer_names(model, method)
    check_layer_names(cfg.method.skip, known, "method.skip")
    check_layer_names(cfg.method.layer_ratios, known, "method.layer_ratios")


def check_cache(cfg: DictConfig) -> None:
    folder = Path(cfg.cache_dir).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise PrunebenchError(f"cache_dir={folder} cannot be written ({e.strerror or e}); point cache_dir= at a "
                              f"writable folder") from e


def check(cfg: DictConfig) -> None:
    """Raise :class:`PrunebenchError` on the first bad input of ``cfg``; train nothing, load no data."""
    check_names(cfg)
    check_schedule(cfg)
    check_train(cfg)
    check_method(cfg)
    check_data(cfg)
    check_model(cfg)
    for name in cfg.strategies:
        strategies.create(name).check(cfg)
    if not cfg.dry_run:  # a dry run writes nothing
        check_cache(cfg)


def warn_if_unpruned(before: int, after: int, cfg: DictConfig) -> None:
    """A warning when pruning left ``after`` of ``before`` parameters: nothing removed."""
    if after >= before:
        log.warning("pruning removed nothing (%d of %d parameters kept) with method %s, pruning_ratio %s; "
                    "every retrained row equals a model of the unpruned architecture", after, before,
                    cfg.method.name, cfg.method.pruning_ratio)
