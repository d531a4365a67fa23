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

STRATEGIES: Dict[str, Type[Strategy]] = {
    cls.name: cls for cls in (Finetune, ScratchE, ScratchB, Uniform, Lottery, Guided)
}

__all__ = ["STRATEGIES", "Strategy", "create", "scratch_b_epochs"]


def create(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise PrunebenchError(f"unknown strategies [{name!r}]; known: {', '.join(STRATEGIES)}")
    return STRATEGIES[name]()
