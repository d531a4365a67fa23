"""ImageNet-style image trees (``dataset=imagenet``, ``dataset=imagefolder``):
``<root>/train/<class>/*`` and ``<root>/val/<class>/*``, classes in sorted folder
order, decoded by DataLoader workers (``dataset.workers``).

Augmentation is the standard ImageNet recipe of the Rethinking authors' code
(the PyTorch ImageNet example, rethinking-network-pruning imagenet/README.md):
training images get a RandomResizedCrop to ``image_size`` (224; scale
``min_scale``..1, aspect 3/4..4/3) and a horizontal flip; test images are resized
(shorter side ``resize_size``, default image_size x 256/224) and centre-cropped to
``image_size``. Workers return uint8 crops; normalisation (ImageNet mean/std)
happens on the training device, as for the in-memory sets.

Reproducibility: the epoch's order and one 63-bit seed per image are drawn from the
loop's generator; each image's crop and flip are drawn under its own seed, so an
epoch is the same whatever the number of workers (and ``workers`` is no part of a
stage's cache key).

Checks: every class folder must hold an image file (an empty one would be a class with no
images), no image file may be empty, and an image that cannot be decoded stops the run with
an error naming it. The fingerprint that keys the unpruned stage is a hash of the sorted
file list with each file's size (no image decoded). Modification times are left out: copying
a tree to a job's local disk (cp, rsync without -t) changes them but not the data, and must
not retrain every stage."""
import hashlib
import os
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from prunebench.bounds import at_least, within
from prunebench.data.base import Batch, Data
from prunebench.errors import PrunebenchError

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB, 0..1 scale
IMAGENET_STD = (0.229, 0.224, 0.225)
EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def layout_help(root: Path, train: str, val: str) -> str:
    return (f"expected {root}/{train}/<class>/<image> and {root}/{val}/<class>/<image> (one folder per class, "
            f"the same class folders in both; ImageNet's validation images sorted into class folders). "
            f"Point dataset.root= at the folder that holds {train}/ and {val}/")


def class_folders(folder: Path, root: Path, train: str, val: str) -> List[str]:
    """Sorted class folder names under ``folder`` (no image is opened)."""
    if not folder.is_dir():
        raise PrunebenchError(f"no image folder at {folder}: {layout_help(root, train, val)}")
    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    if not classes:
        raise PrunebenchError(f"{folder} holds no class folders: {layout_help(root, train, val)}")
    return classes


def count_classes(cfg) -> int:
    """Classes of an image tree: ``dataset.num_classes`` if > 0, else its class folders, counted."""
    if cfg.num_classes > 0:
        return cfg.num_classes
    root = Path(cfg.root).expanduser().resolve()
    return len(class_folders(root / cfg.train_dir, root, cfg.train_dir, cfg.val_dir))


def scan(folder: Path, classes: Sequence[str], listing: Optional[List[str]] = None) -> List[Tuple[str, int]]:
    """(path, label) of every image file under ``folder``/<class>/, in sorted order; ``listing``
    receives "<path relative to folder>\t<size>" of each. A class folder without image
    files, or an empty image file, is a PrunebenchError naming it."""
    samples = []
    for label, name in enumerate(classes):
        found = 0
        for dirpath, _, files in sorted(os.walk(folder / name, followlinks=True)):
            for f in sorted(files):
                if not f.lower().endswith(EXTENSIONS):
                    continue
                path = os.path.join(dirpath, f)
                size = os.stat(path).st_size
                if size == 0:
                    raise PrunebenchError(f"{path} is an empty file (0 bytes), not an image; delete it or replace it "
                                          f"with the image")
                samples.append((path, label))
                if listing is not None:
                    listing.append(f"{os.path.relpath(path, folder)}\t{size}")
                found += 1
        if not found:
            raise PrunebenchError(f"{folder / name} holds no image files ({', '.join(EXTENSIONS)}): an empty class "
                                  f"folder would be a class without images; remove the folder or add its images")
    return samples


def fingerprint(classes: Sequence[str], listing: Sequence[str]) -> str:
    """A short hash of the class names and of the sorted "path<TAB>size" listing of every image file."""
    h = hashlib.sha256("\n".join(classes).encode())
    h.update(b"\0")
    for entry in listing:  # a line at a time: ImageNet's listing is 1.3 million of them
        h.update(entry.encode() + b"\n")
    return h.hexdigest()[:16]


class UnreadableImage(PrunebenchError):
    """An image file that cannot be decoded."""


def _collate(items):
    """A batch of (image, label, error) items: (images, labels, the errors met)."""
    errors = [e for _, _, e in items if e]
    x, y = default_collate([(x, label) for x, label, _ in items])
    return x, y, errors


class _Images(Dataset):
    """Items are (index, seed): the image's file and the seed of its random transform. An image
    that cannot be decoded gives a blank image and the error (raised in the main process, where
    it can name the file in one line; a worker's exception would carry its traceback)."""

    def __init__(self, samples, transform, size: int):
        self.samples, self.transform, self.size = samples, transform, size

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, item):
        from PIL import Image

        index, seed = item
        path, label = self.samples[index]
        try:
            with open(path, "rb") as f:
                image = Image.open(f).convert("RGB")
            with torch.random.fork_rng(devices=[]):  # torchvision's transforms draw from the global RNG
                torch.manual_seed(seed)
                x = self.transform(image)
        except Exception as e:  # noqa: BLE001 - PIL's errors (UnidentifiedImageError, OSError: truncated, ...)
            from PIL import UnidentifiedImageError

            if isinstance(e, UnidentifiedImageError):
                reason = "not an image format PIL can decode"
            else:
                reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            return (torch.zeros(3, self.size, self.size, dtype=torch.uint8), label,
                    f"{path} cannot be read as an image ({type(e).__name__}: {reason}); replace it with a readable "
                    f"copy, or delete it and rerun (a changed image tree trains stages of its own)")
        return x, label, ""


class FolderData(Data):
    def __init__(self, cfg, train: List[Tuple[str, int]], test: List[Tuple[str, int]], num_classes: int,
                 device=torch.device("cpu"), fingerprint: str = "", policy=None):
        from torchvision import transforms as T

        self.cfg, self.train, self.test, self.num_classes = cfg, train, test, num_classes
        self.policy = policy  # (uint8 batch, generator) -> uint8 batch on the device, after crop and flip
        self.fingerprint = fingerprint
        self._device = torch.device(device)
        size = cfg.image_size
        resize = cfg.resize_size or int(round(size * 256 / 224))
        augment = [T.RandomResizedCrop(size, scale=(cfg.min_scale, 1.0))]
        if cfg.flip:
            augment.append(T.RandomHorizontalFlip())
        self.train_transform = T.Compose(augment + [T.PILToTensor()])
        self.test_transform = T.Compose([T.Resize(resize), T.CenterCrop(size), T.PILToTensor()])
        self.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        return (3, self.cfg.image_size, self.cfg.image_size)

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def train_size(self) -> int:
        return len(self.train)

    @property
    def test_size(self) -> int:
        return len(self.test)

    def to(self, device) -> "FolderData":
        return FolderData(self.cfg, self.train, self.test, self.num_classes, device, self.fingerprint, self.policy)

    def with_policy(self, policy) -> "FolderData":
        return FolderData(self.cfg, self.train, self.test, self.num_classes, self._device, self.fingerprint, policy)

    def steps_per_epoch(self, batch_size: int, steps: Optional[int] = None) -> int:
        count = max(1, len(self.train) // batch_size)
        return count if steps is None else min(count, steps)

    def _batches(self, samples, transform, items, batch_size: int, drop_last: bool,
                 augment=None) -> Iterator[Batch]:
        loader = DataLoader(_Images(samples, transform, self.cfg.image_size), batch_size=batch_size, sampler=items,
                            num_workers=self.cfg.workers, drop_last=drop_last, collate_fn=_collate,
                            pin_memory=self._device.type == "cuda", persistent_workers=False)
        mean, std = self.mean.to(self._device), self.std.to(self._device)
        for x, y, errors in loader:
            if errors:
                raise UnreadableImage(errors[0])
            x = x.to(self._device, non_blocking=True)
            if augment is not None:
                x = augment[0](x, augment[1])
            yield (x.float() / 255.0 - mean) / std, y.to(self._device, non_blocking=True)

    @staticmethod
    def _draw(n: int, count: int, generator: torch.Generator) -> List[Tuple[int, int]]:
        """``count`` (index, seed) items of a random permutation of ``n`` images."""
        order = torch.randperm(n, generator=generator, device=generator.device)[:count].cpu()
        seeds = torch.randint(0, 2 ** 62, (count,), generator=generator, device=generator.device).cpu()
        return list(zip(order.tolist(), seeds.tolist()))

    def train_batches(self, batch_size: int, generator: torch.Generator,
                      steps: Optional[int] = None) -> Iterator[Batch]:
        count = self.steps_per_epoch(batch_size, steps) * batch_size
        items = self._draw(len(self.train), min(count, len(self.train)), generator)
        # a set smaller than one batch gives one partial batch, as steps_per_epoch counts it
        return self._batches(self.train, self.train_transform, items, batch_size, drop_last=len(items) >= batch_size,
                             augment=None if self.policy is None else (self.policy, generator))

    def sample_batches(self, num_images: int, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        items = self._draw(len(self.train), min(num_images, len(self.train)), generator)
        return self._batches(self.train, self.test_transform, items, batch_size, drop_last=False)

    def test_batches(self, batch_size: int) -> Iterator[Batch]:
        items = [(i, 0) for i in range(len(self.test))]
        return self._batches(self.test, self.test_transform, items, batch_size, drop_last=False)


def load(cfg) -> FolderData:
    """The image tree at ``dataset.root``; for ``imagenet`` it must hold 1000 classes."""
    root = Path(cfg.root).expanduser().resolve()
    at_least("dataset.image_size", cfg.image_size, 1)
    within("dataset.min_scale", cfg.min_scale, 0, 1, open_low=True)
    at_least("dataset.workers", cfg.workers, 0)
    classes = class_folders(root / cfg.train_dir, root, cfg.train_dir, cfg.val_dir)
    val_classes = class_folders(root / cfg.val_dir, root, cfg.train_dir, cfg.val_dir)
    if val_classes != classes:
        missing = sorted(set(classes) ^ set(val_classes))[:5]
        raise PrunebenchError(f"the class folders of {root / cfg.train_dir} and {root / cfg.val_dir} differ "
                              f"(e.g. {missing}): {layout_help(root, cfg.train_dir, cfg.val_dir)}")
    expected = count_classes(cfg) if cfg.num_classes > 0 else len(classes)
    if expected != len(classes):
        raise PrunebenchError(f"{cfg.name} expects {expected} classes but {root / cfg.train_dir} holds "
                              f"{len(classes)} class folders; fix the tree or set dataset.num_classes")
    listing: List[str] = ["[train]"]
    train = scan(root / cfg.train_dir, classes, listing)
    listing.append("[val]")
    test = scan(root / cfg.val_dir, classes, listing)
    return FolderData(cfg, train, test, len(classes), fingerprint=fingerprint(classes, listing))
