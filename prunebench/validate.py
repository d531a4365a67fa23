"""Every bad input a one-line :class:`PrunebenchError`, before anything trains.

:func:`check` runs in ``Run.__init__``: keys the schemas do not know (a misspelt key added
with ``+``); the run's own settings (``seeds``, ``strategies``, ``cache_dir``); names of
methods, strategies, models and data sets; positive sizes, epochs, steps and learning rates;
a decay factor, momentum and weight decay that SGD can use; ratios in [0, 1);
what the strategies read (Scratch-B's cap, the guided source folder); the latency measure
and the torchrun backend; the method against the model (``Method.check_model``: a pair that
cannot run, e.g. block-level SSS on a model without residual blocks, is refused here) and the
layer names of ``method.layer_ratios`` / ``method.skip`` against the groups the method prunes
(the model built on the meta device: no weights allocated); a cache folder that can be
written. Data files are checked where they are read (``prunebench.data``), an
empty data set is refused by the training loop, and :func:`warn_if_unpruned`
says so when a pruning removed nothing."""
import dataclasses
import difflib
import logging
import tempfile
from pathlib import Path
from typing import Iterator, List

import torch
from omegaconf import DictConfig, OmegaConf

from prunebench import data as datasets
from prunebench import methods, models, parts, strategies
from prunebench.bounds import at_least, fractions, positive, within
from prunebench.errors import PrunebenchError
from prunebench.pruning.selection import check_layer_names, check_ratio
from prunebench.pruning.surgery import prunable_weights

log = logging.getLogger(__name__)



def check_names(cfg: DictConfig) -> None:
    """Each part names a class: a built-in or one of your own (:mod:`prunebench.plugins`)."""
    for name in cfg.strategies:
        strategies.strategy_class(name, cfg)
    methods.method_class(cfg.method)
    datasets.loader(cfg.dataset)
    models.schema_of(cfg.model)


def check_schedule(cfg: DictConfig) -> None:
    s = cfg.schedule
    positive("schedule.epochs", s.epochs)
    positive("schedule.batch_size", s.batch_size)
    positive("schedule.eval_batch_size", s.eval_batch_size)
    positive("schedule.steps_per_epoch", s.steps_per_epoch, optional=True)
    positive("schedule.lr", s.lr)
    at_least("schedule.eval_every", s.eval_every, 0)
    at_least("schedule.warmup_epochs", s.warmup_epochs, 0)
    positive("schedule.warmup_factor", s.warmup_factor)
    fractions("schedule.milestones", s.milestones, what="fractions of the epochs")
    check_modern_recipe(s)
    ft = cfg.strategy.finetune
    positive("strategy.finetune.epochs", ft.epochs)
    positive("strategy.finetune.lr", ft.lr)


def check_modern_recipe(s: DictConfig) -> None:
    """The settings of the modern recipe (schedule=modern), each at its schema default in older presets."""
    from prunebench.data.policy import BINS

    within("schedule.label_smoothing", s.label_smoothing, 0, 1, open_high=True)
    at_least("schedule.mixup_alpha", s.mixup_alpha, 0)
    at_least("schedule.cutmix_alpha", s.cutmix_alpha, 0)
    at_least("schedule.randaugment_ops", s.randaugment_ops, 1)
    within("schedule.randaugment_magnitude", s.randaugment_magnitude, 0, BINS - 1, what="a bin")
    within("schedule.ema_decay", s.ema_decay, 0, 1, open_high=True, what="0: no average")
    positive("schedule.ema_steps", s.ema_steps)
    if s.warmup == "linear" and s.warmup_factor > 1:
        raise PrunebenchError(f"schedule.warmup=linear rises from lr x warmup_factor to lr: warmup_factor must be "
                              f"<= 1, got {s.warmup_factor}")


def check_train(cfg: DictConfig) -> None:
    if cfg.get("train") is None:
        return
    if cfg.train.max_concurrent is not None:
        at_least("train.max_concurrent", cfg.train.max_concurrent, 1)
    at_least("train.checkpoint_every", cfg.train.checkpoint_every, 0, what="seconds; 0: every epoch")


def check_method(cfg: DictConfig) -> None:
    m = cfg.method
    check_ratio("method.pruning_ratio", m.pruning_ratio)
    for name, r in m.layer_ratios.items():
        check_ratio(f"method.layer_ratios.{name}", r)
    at_least("method.min_channels", m.min_channels, 1)
    at_least("method.round_to", m.round_to, 1)
    at_least("method.iterations", m.iterations, 1)
    at_least("method.iteration_epochs", m.iteration_epochs, 0)
    if m.iteration_training == "rewind" and m.iterations > 1:
        if methods.METHODS[m.name].kind_of(m) != "weight":
            raise PrunebenchError(f"method.iteration_training=rewind retrains a weight-level mask from the unpruned "
                                  f"model's init; {m.name} removes channels: use iteration_training=finetune")
        if m.iteration_epochs:
            raise PrunebenchError(f"method.iteration_training=rewind trains the schedule's epochs between "
                                  f"iterations; leave method.iteration_epochs at 0 (got {m.iteration_epochs})")
    positive("method.sparse_epochs", m.sparse_epochs, optional=True)
    positive("method.sparse_lr", m.sparse_lr, optional=True)


def check_data(cfg: DictConfig) -> None:
    d = cfg.dataset
    at_least("dataset.pad", d.pad, 0)
    at_least("dataset.val_split", d.get("val_split", 0), 0)
    if d.get("val_split", 0) and d.name in ("imagenet", "imagefolder"):
        raise PrunebenchError(f"dataset.val_split={d.val_split}: held-out images work on the in-memory data sets "
                              f"(cifar10, cifar100, digits, synthetic), not on {d.name}; set dataset.val_split=0")
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
        spec = models.spec_from_config(cfg.model, shape[0], classes, shape[-1])
    except (ValueError, KeyError) as e:
        raise PrunebenchError(f"model {cfg.model.name!r}: {e}") from e
    method = methods.create(cfg.method, cfg.seed)
    with torch.device("meta"):
        model = models.build(spec)
    try:
        method.check_transformer(model)
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


def unknown_keys(node: DictConfig, prefix: str = "") -> Iterator[tuple]:
    """(dotted key, the keys its schema knows) of every key of ``node`` that its schema dataclass
    lacks (a key added with ``+``); free-form dicts (``method.layer_ratios``, ``paper``) hold any."""
    schema = OmegaConf.get_type(node)
    if schema is None or not dataclasses.is_dataclass(schema):
        return
    known = [f.name for f in dataclasses.fields(schema)]
    for key in node.keys():
        own = OmegaConf.get_type(node[key]) if OmegaConf.is_dict(node._get_node(key)) else None
        if key not in known and not dataclasses.is_dataclass(own):  # a typed node of your own: strategy.<name>
            yield f"{prefix}{key}", known
        elif OmegaConf.is_dict(node._get_node(key)):
            yield from unknown_keys(node[key], f"{prefix}{key}.")


def check_known_keys(cfg: DictConfig) -> None:
    for key, known in unknown_keys(cfg):
        leaf = key.rsplit(".", 1)[-1]
        close = difflib.get_close_matches(leaf, known, n=1)
        where = key.rsplit(".", 1)[0] if "." in key else "the config"
        hint = f"did you mean {key[:-len(leaf)]}{close[0]}?" if close else f"{where} holds {', '.join(known)}"
        raise PrunebenchError(f"{key} is not a setting prunebench knows ({hint}); remove it, or fix its spelling "
                              f"and set it without +")


def check_run_settings(cfg: DictConfig) -> None:
    """``seeds``, ``strategies`` (none only with ``prune_only``), ``cache_dir`` and ``lock_timeout``:
    what the run as a whole does."""
    if cfg.get("seeds") is not None and len(cfg.seeds) == 0:
        raise PrunebenchError("seeds=[] names no seed; give seeds=[0,1,...], or leave seeds out (null) to run "
                              "seed=N alone")
    if len(cfg.strategies) == 0 and not cfg.get("prune_only"):
        raise PrunebenchError(f"strategies=[] names no strategy, so nothing would be compared; give at least one "
                              f"of {', '.join(strategies.STRATEGIES)}, or set prune_only=true to stop after "
                              f"pruning on purpose")
    repeated = sorted({s for s in cfg.strategies if list(cfg.strategies).count(s) > 1})
    if repeated:
        raise PrunebenchError(f"strategies names {', '.join(repeated)} more than once; name each strategy once")
    if not str(cfg.cache_dir).strip():
        raise PrunebenchError("cache_dir is empty, which would write stage folders into the current folder; give "
                              "a folder (default: outputs/stages)")
    at_least("lock_timeout", cfg.lock_timeout, 0)


def check_recipe_values(cfg: DictConfig) -> None:
    """Values of the schedule SGD accepts but cannot learn with (a negative decay factor trains at a
    negative learning rate) or refuses only when the first stage starts."""
    s = cfg.schedule
    positive("schedule.gamma", s.gamma)
    at_least("schedule.momentum", s.momentum, 0)
    at_least("schedule.weight_decay", s.weight_decay, 0)
    if s.nesterov and s.momentum <= 0:
        raise PrunebenchError(f"schedule.nesterov=true needs schedule.momentum > 0, got {s.momentum}")


def check_measure_and_backend(cfg: DictConfig) -> None:
    at_least("measure.latency_batch", cfg.measure.latency_batch, 1)
    at_least("measure.latency_repeats", cfg.measure.latency_repeats, 1)


def check_strategy_settings(cfg: DictConfig) -> None:
    """What the strategies of the run read: Scratch-B's cap (also the uniform and guided budgets),
    the uniform model's tolerance, the guided source folder."""
    names = set(cfg.strategies)
    if names & {"scratch_b", "uniform", "guided"} and cfg.strategy.scratch_b.max_factor is not None \
            and not cfg.strategy.scratch_b.max_factor >= 1:
        raise PrunebenchError(f"strategy.scratch_b.max_factor caps Scratch-B at that many times E epochs and must "
                              f"be >= 1 (Scratch-B trains at least Scratch-E's epochs) or null, got "
                              f"{cfg.strategy.scratch_b.max_factor}")
    if "uniform" in names:
        positive("strategy.uniform.tolerance", cfg.strategy.uniform.tolerance)
    if "guided" in names and not cfg.dry_run:  # a dry run shows what is wrong with the source as the row's note
        check_guided_source(cfg)


def check_guided_source(cfg: DictConfig) -> None:
    """``strategy.guided.source``, when set: a folder whose finished runs give a pattern with as many
    stages as this run's model has."""
    from prunebench.strategies import guided

    source = cfg.strategy.guided.source
    if source is None:
        return
    if not str(source).strip():
        raise PrunebenchError("strategy.guided.source is empty; give a run or sweep folder of a finished prunebench "
                              "run, or leave it null to take the pattern from this run's pruned model")
    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise PrunebenchError(f"strategy.guided.source={folder} is not a folder; give a run or sweep folder of a "
                              f"finished prunebench run (it holds results.csv)")
    ratios = guided.pattern_of(folder)["ratios"]
    shape, classes = datasets.shape(cfg.dataset)
    with torch.device("meta"):
        model = models.build(models.spec_from_config(cfg.model, shape[0], classes, shape[-1]))
    stages = max(guided.group_stages(model, shape).values()) + 1
    if stages != len(ratios):
        raise PrunebenchError(f"strategy.guided.source={folder} gives a pattern of {len(ratios)} stages, "
                              f"{cfg.model.name} has {stages}: guided pruning transfers between models with the "
                              f"same number of stages (e.g. VGG-16 -> VGG-19)")


def check(cfg: DictConfig) -> None:
    """Raise :class:`PrunebenchError` on the first bad input of ``cfg``; train nothing, load no data.
    Types the parts of ``cfg`` first (:func:`prunebench.parts.typed`, in place)."""
    check_names(cfg)
    parts.typed(cfg)
    check_known_keys(cfg)
    check_run_settings(cfg)
    check_schedule(cfg)
    check_recipe_values(cfg)
    check_measure_and_backend(cfg)
    check_train(cfg)
    check_method(cfg)
    check_data(cfg)
    check_model(cfg)
    if not cfg.get("prune_only"):
        for name in cfg.strategies:
            strategies.create(name, cfg).check(cfg)
        check_strategy_settings(cfg)
    if not cfg.dry_run:  # a dry run writes nothing
        check_cache(cfg)


def warn_if_unpruned(before: int, after: int, cfg: DictConfig) -> None:
    """A warning when pruning left ``after`` of ``before`` parameters: nothing removed."""
    if after >= before:
        log.warning("pruning removed nothing (%d of %d parameters kept) with method %s, pruning_ratio %s; "
                    "every retrained row equals a model of the unpruned architecture", after, before,
                    cfg.method.name, cfg.method.pruning_ratio)
