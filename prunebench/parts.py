"""The parts of a composed config typed by their own schemas. While Hydra composes, the nodes
``model``, ``dataset``, ``method`` and ``strategy`` hold their base schema and take any further
key (:func:`prunebench.config.schema_node`), so a YAML file lists only what differs from the
defaults and a class of your own (``_target_``) brings settings prunebench does not know.
:func:`typed` then merges each node into the schema of the class it names: a method's
``Config``, a model family's or factory's schema, a data set's, each strategy's ``Config``.
An unknown key or a value of the wrong type is one line naming the setting.

The class behind a part is recorded in its node as ``_target_`` (its import path) whenever it
is not a built-in, so the stages' cache keys, which hold every setting off its default, tell a
class of your own from a built-in and from another class of the same name."""
import difflib
from typing import Any

from omegaconf import DictConfig, OmegaConf

from prunebench import data as datasets
from prunebench import methods, models, strategies
from prunebench.config import OwnStrategyConfig, StrategyConfig, one_line
from prunebench.errors import PrunebenchError

BUILTIN_STRATEGY_NODES = set(StrategyConfig.__dataclass_fields__)


def import_path(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def merge_into(schema: type, node: DictConfig, where: str) -> DictConfig:
    """``node`` merged into a fresh node of ``schema`` (its defaults under what ``node`` sets)."""
    values = {k: v for k, v in OmegaConf.to_container(node, resolve=False).items()
              if not OmegaConf.is_missing(node, k)}
    known = list(schema.__dataclass_fields__)
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {where}.{close[0]}?" if close else f"{where} holds {', '.join(known)}"
            raise PrunebenchError(f"{where}.{key} is not a setting prunebench knows ({hint}); remove it, or fix its "
                                  f"spelling ({where} is typed by {import_path(schema)})")
    try:
        return OmegaConf.merge(OmegaConf.structured(schema), values)
    except Exception as e:  # noqa: BLE001 - OmegaConf's ValidationError, ConfigKeyError, ...
        raise PrunebenchError(f"{one_line(e, f'{where}.')} ({where} is typed by {import_path(schema)})") from e


def typed(cfg: DictConfig) -> DictConfig:
    """Type ``cfg``'s model, dataset, method and strategy nodes in place (see the module); returns ``cfg``."""
    cls = methods.method_class(cfg.method)
    if cls is not methods.METHODS.get(cfg.method.name) and not cfg.method.get("_target_"):
        cfg.method._target_ = import_path(cls)  # an entry point's class
    cfg.method = merge_into(cls.Config, cfg.method, "method")
    if cfg.model.get("_target_") or cfg.model.get("arch") in models.ARCHS:
        cfg.model = merge_into(models.schema_of(cfg.model), cfg.model, "model")
    if cfg.dataset.get("_target_") is None and cfg.dataset.name not in datasets.LOADERS:
        cfg.dataset._target_ = import_path(datasets.loader(cfg.dataset))  # an entry point's factory
    cfg.dataset = merge_into(datasets.schema_of(cfg.dataset), cfg.dataset, "dataset")
    for name in list(cfg.strategy.keys()):
        if name in BUILTIN_STRATEGY_NODES:
            continue
        own = strategies.strategy_class(name, cfg)
        if not (isinstance(own.Config, type) and issubclass(own.Config, OwnStrategyConfig)):
            raise PrunebenchError(f"strategy.{name}: {import_path(own)}.Config must be a dataclass subclassing "
                                  f"prunebench.config.OwnStrategyConfig (its settings)")
        cfg.strategy[name] = merge_into(own.Config, cfg.strategy[name], f"strategy.{name}")
    return cfg
