"""Strategy registry: ``strategies=[NAME, ...]`` -> the class retraining the pruned
model that way; the name is also the stage kind and the table row."""
from typing import Dict, Type

from prunebench.errors import PrunebenchError
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

__all__ = ["STRATEGIES", "Strategy", "create", "scratch_b_epochs"]


def create(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise PrunebenchError(f"unknown strategies [{name!r}]; known: {', '.join(STRATEGIES)}")
    return STRATEGIES[name]()
