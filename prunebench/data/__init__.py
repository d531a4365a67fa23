"""Data set registry: ``dataset.name`` -> loader returning :class:`ImageData` (on the CPU)."""
from typing import Callable, Dict

from prunebench.data import cifar, digits, synthetic
from prunebench.data.images import ImageData
from prunebench.errors import PrunebenchError

LOADERS: Dict[str, Callable] = {
    "cifar10": cifar.load,
    "cifar100": cifar.load,
    "digits": digits.load,
    "synthetic": synthetic.load,
}

__all__ = ["ImageData", "LOADERS", "load"]


def load(cfg) -> ImageData:
    if cfg.name not in LOADERS:
        raise PrunebenchError(f"unknown dataset {cfg.name!r}; known: {', '.join(sorted(LOADERS))}")
    return LOADERS[cfg.name](cfg)
