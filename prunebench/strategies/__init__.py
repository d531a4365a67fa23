"""Strategy registry: ``strategies=[NAME, ...]`` -> the class retraining the pruned
model that way; the name is also the stage kind and the table row."""
from typing import Dict, Type

from prunebench import plugins
from prunebench.errors import PrunebenchError
from prunebench.stages import settings
from prunebench.strategies.base import Strategy
from prunebench.strategies.finetune import Finetune
from prunebench.strategies.guided import Guided
from prunebench.strategies.lottery import Lottery
from prunebench.strategies.scratch_b import ScratchB, scratch_b_epochs
from prunebench.strategies.scratch_e import ScratchE
from prunebench.strategies.uniform import Uniform
from prunebench.strategies.finetune_large import FinetuneLarge
from prunebench.strategies.lr_rewind import LrRewind
from prunebench.strategies.one_cycle import OneCycle
from prunebench.strategies.distill import Distill
from prunebench.strategies.random_arch import RandomArch
from prunebench.strategies.shuffled import Shuffled
from prunebench.strategies.reinit import Reinit
from prunebench.strategies.small_model import SmallModel

STRATEGIES: Dict[str, Type[Strategy]] = {
    cls.name: cls for cls in (Finetune, ScratchE, ScratchB, Uniform, Lottery, Guided,
                              # the revisited strategies and controls (docs/revisited.md)
                              FinetuneLarge, LrRewind, OneCycle, Distill, RandomArch, Shuffled, Reinit, SmallModel)
}

__all__ = ["STRATEGIES", "Strategy", "create", "scratch_b_epochs", "strategy_class"]


def strategy_class(name: str, cfg=None) -> Type[Strategy]:
    """The class of the strategy ``name``: a built-in, the one ``cfg.strategy.<name>._target_`` names, or an
    installed package's entry point (group ``prunebench.strategies``)."""
    node = cfg.strategy.get(name) if cfg is not None and "strategy" in cfg else None
    target = node.get("_target_") if node is not None and hasattr(node, "get") else None
    cls = plugins.resolve("strategy", name, target, STRATEGIES)
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise PrunebenchError(f"strategy {name!r}: {cls!r} is not a subclass of prunebench.strategies.Strategy")
    return cls


def create(name: str, cfg=None) -> Strategy:
    base = strategy_class(name, cfg)
    if base is STRATEGIES.get(name):
        return base()
    path = f"{base.__module__}.{base.__qualname__}"  # a class of your own: its row is `name`, its key its node

    def cache_values(self, cfg):
        own = {name: settings(cfg.strategy[name])} if name in cfg.strategy else {}
        return {**base.cache_values(self, cfg), "class": path, **own}
    return type(base.__name__, (base,), {"name": name, "cache_values": cache_values})()
