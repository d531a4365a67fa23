"""Data set registry: ``dataset.name`` -> loader returning a :class:`Data` on the CPU (in-memory
:class:`ImageData`, or :class:`FolderData` streaming an ImageNet-style tree)."""
from typing import Any, Callable, Dict, Tuple

from prunebench import plugins
from prunebench.config import DatasetConfig, ImageFolderDatasetConfig, SyntheticDatasetConfig
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

# dataset.name -> its schema (the others: DatasetConfig)
SCHEMAS: Dict[str, Any] = {"synthetic": SyntheticDatasetConfig, "imagenet": ImageFolderDatasetConfig,
                           "imagefolder": ImageFolderDatasetConfig}

__all__ = ["Data", "FolderData", "ImageData", "LOADERS", "SCHEMAS", "SHAPES", "fingerprint", "load", "loader",
           "schema_of", "shape"]


def loader(cfg) -> Callable:
    """The function loading the data set of ``cfg``: a built-in's, or (``_target_``, or an entry point of the
    group ``prunebench.datasets``) a factory of your own, called with the data set's config node."""
    return plugins.resolve("dataset", cfg.name, cfg.get("_target_"), LOADERS)


def schema_of(cfg) -> Any:
    """The schema of a data set node: a built-in's, or a factory's ``Config`` attribute (a subclass of
    DatasetConfig; none: DatasetConfig)."""
    if not cfg.get("_target_") and cfg.name in LOADERS:
        return SCHEMAS.get(cfg.name, DatasetConfig)
    schema = getattr(loader(cfg), "Config", DatasetConfig)
    if not (isinstance(schema, type) and issubclass(schema, DatasetConfig)):
        raise PrunebenchError(f"the Config of data set {cfg.name!r} must be a dataclass subclassing "
                              f"prunebench.config.DatasetConfig")
    return schema


VAL_SEED = 0  # the held-out images (dataset.val_split) are the same for every seed and row


def load(cfg) -> Data:
    data = loader(cfg)(cfg)
    if not isinstance(data, Data):
        raise PrunebenchError(f"data set {cfg.name!r}: its factory returned a {type(data).__name__}, not a "
                              f"prunebench.data.Data (e.g. ImageData)")
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
    if cfg.get("_target_") or cfg.name not in SHAPES:  # a data set of your own: loaded once to see
        data = load(cfg)
        return tuple(data.input_shape), data.num_classes
    return SHAPES[cfg.name](cfg)
