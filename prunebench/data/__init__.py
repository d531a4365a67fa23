"""Data set registry: ``dataset.name`` -> loader returning a :class:`Data` on the CPU (in-memory
:class:`ImageData`, or :class:`FolderData` streaming an ImageNet-style tree)."""
from typing import Callable, Dict, Tuple

from prunebench.data import cifar, digits, folder, synthetic
from prunebench.data.base import Data
from prunebench.data.folder import FolderData
from prunebench.data.images import ImageData
from prunebench.errors import PrunebenchError

LOADERS: Dict[str, Callable] = {
    "cifar10": cifar.load,
    "cifar100": cifar.load,
    "digits": digits.load,
    "synthetic": synthetic.load,
    "imagenet": folder.load,
    "imagefolder": folder.load,
}

# dataset.name -> (one image's (C, H, W), classes), known without reading the data
SHAPES: Dict[str, Callable] = {
    "cifar10": lambda cfg: ((3, 32, 32), 10),
    "cifar100": lambda cfg: ((3, 32, 32), 100),
    "digits": lambda cfg: ((1, 16, 16), 10),
    "synthetic": lambda cfg: ((3, cfg.image_size, cfg.image_size), cfg.num_classes),
    "imagenet": lambda cfg: ((3, cfg.image_size, cfg.image_size), 1000),
    "imagefolder": lambda cfg: ((3, cfg.image_size, cfg.image_size), folder.count_classes(cfg)),
}

__all__ = ["Data", "FolderData", "ImageData", "LOADERS", "SHAPES", "fingerprint", "load", "shape"]


VAL_SEED = 0  # the held-out images (dataset.val_split) are the same for every seed and row


def load(cfg) -> Data:
    if cfg.name not in LOADERS:
        raise PrunebenchError(f"unknown dataset {cfg.name!r}; known: {', '.join(sorted(LOADERS))}")
    data = LOADERS[cfg.name](cfg)
    k = cfg.get("val_split", 0) or 0
    if k:
        if not isinstance(data, ImageData):
            raise PrunebenchError(f"dataset.val_split={k}: held-out images work on the in-memory data sets (cifar10, "
                                  f"cifar100, digits, synthetic), not on {cfg.name}; set dataset.val_split=0")
        if not 0 < k < data.train_size:
            raise PrunebenchError(f"dataset.val_split={k} must lie in [1, {data.train_size - 1}] (the training "
                                  f"images of {cfg.name}); 0: no held-out images")
        data = data.held_out(k, VAL_SEED)
    return data


def fingerprint(cfg) -> str:
    """The fingerprint of the data set as it is on disk (``Data.fingerprint``: a hash of its arrays,
    or of an image tree's file list and sizes), read without downloading anything."""
    import copy

    offline = copy.deepcopy(cfg)
    offline.download = False
    return load(offline).fingerprint


def shape(cfg) -> Tuple[Tuple[int, int, int], int]:
    """(one image's (C, H, W), number of classes) of the data set, without loading it."""
    if cfg.name not in SHAPES:
        raise PrunebenchError(f"unknown dataset {cfg.name!r}; known: {', '.join(sorted(SHAPES))}")
    return SHAPES[cfg.name](cfg)
