"""CIFAR-10 and CIFAR-100 (Krizhevsky, 2009) from the standard python layout
(``<root>/cifar-10-batches-py``, ``<root>/cifar-100-python``), the one
torchvision downloads."""
import pickle
from pathlib import Path

import numpy as np
import torch

from prunebench.data.images import ImageData
from prunebench.errors import PrunebenchError

LAYOUT = {
    "cifar10": {"folder": "cifar-10-batches-py", "train": [f"data_batch_{i}" for i in range(1, 6)],
                "test": ["test_batch"], "label": "labels", "classes": 10,
                "mean": (0.4914, 0.4822, 0.4465), "std": (0.2023, 0.1994, 0.2010),
                "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"},
    "cifar100": {"folder": "cifar-100-python", "train": ["train"], "test": ["test"], "label": "fine_labels",
                 "classes": 100, "mean": (0.5071, 0.4865, 0.4409), "std": (0.2673, 0.2564, 0.2762),
                 "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"},
}


class _Unpickler(pickle.Unpickler):
    """The CIFAR batches hold dicts, lists, strings and numpy arrays; any other global is refused,
    so a crafted file cannot run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("numpy.core.numeric", "_frombuffer"),
               ("numpy._core.numeric", "_frombuffer"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused global {module}.{name}")
        return super().find_class(module, name)


def _batch(path: Path, label_key: str, classes: int):
    """(images (N, 3, 32, 32) uint8, labels (N,) int64) of one batch file, checked: N images of
    3,072 bytes, N labels, every label in [0, classes)."""
    with open(path, "rb") as f:
        batch = _Unpickler(f, encoding="latin1").load()
    if not isinstance(batch, dict) or "data" not in batch or label_key not in batch:
        raise ValueError(f"no dict with 'data' and '{label_key}'")
    data, labels = np.asarray(batch["data"]), np.asarray(batch[label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or not len(data):
        raise ValueError(f"'data' is {data.dtype} {data.shape}, not uint8 (N, 3072) with N > 0")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"'{label_key}' is {labels.dtype} {labels.shape}, not a list of integers")
    if len(labels) != len(data):
        raise ValueError(f"{len(data)} images but {len(labels)} labels")
    if labels.min() < 0 or labels.max() >= classes:
        raise ValueError(f"labels in [{labels.min()}, {labels.max()}], outside [0, {classes}) for {classes} classes")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _read(folder: Path, files, label_key: str, classes: int):
    xs, ys = [], []
    for name in files:
        try:
            x, y = _batch(folder / name, label_key, classes)
        except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError, IndexError,
                AttributeError) as e:
            raise PrunebenchError(f"{folder / name} is not a readable CIFAR batch ({type(e).__name__}: {e}); "
                                  f"delete {folder} and extract the archive again") from e
        xs.append(x)
        ys.append(y)
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))


def _download(name: str, root: Path) -> None:
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    cls(str(root), train=True, download=True)


def load(cfg) -> ImageData:
    layout = LAYOUT[cfg.name]
    root = Path(cfg.root).expanduser().resolve()
    folder = root / layout["folder"]
    files = layout["train"] + layout["test"]
    if not all((folder / f).exists() for f in files):
        reason = "dataset.download=false"
        if cfg.download:
            try:
                _download(cfg.name, root)
                reason = ""
            except Exception as e:  # offline, proxy, disk: the message below says what to do
                reason = f"the download failed: {type(e).__name__}: {e}"
        if reason:
            raise PrunebenchError(
                f"{cfg.name} is not at {folder} ({reason}). Put the python version of the data set there "
                f"(extract {layout['url']} into {root}), or point dataset.root= at the folder that holds "
                f"{layout['folder']}/.")
    train_x, train_y = _read(folder, layout["train"], layout["label"], layout["classes"])
    test_x, test_y = _read(folder, layout["test"], layout["label"], layout["classes"])
    return ImageData(train_x, train_y, test_x, test_y, layout["mean"], layout["std"], layout["classes"],
                     cfg.pad, cfg.flip, source=str(folder))
