"""Method registry: ``method=NAME`` -> the class implementing it. The YAML file
``conf/method/NAME.yaml``, its ``name:`` and the table label are the same word."""
from typing import Dict, Type

from prunebench.errors import PrunebenchError
from prunebench.methods.base import Method
from prunebench.methods.l1_norm import L1Norm
from prunebench.methods.random import RandomPruning
from prunebench.methods.slimming import Slimming

METHODS: Dict[str, Type[Method]] = {
    "slimming": Slimming,
    "l1_norm": L1Norm,
    "random": RandomPruning,
}

__all__ = ["METHODS", "Method", "create"]


def create(cfg, seed: int = 0) -> Method:
    if cfg.name not in METHODS:
        raise PrunebenchError(f"unknown method {cfg.name!r}; known: {', '.join(sorted(METHODS))}")
    return METHODS[cfg.name](cfg, seed)
