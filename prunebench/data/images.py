"""Image tensors held on the training device as uint8, with the paper's CIFAR
augmentation (pad + random crop + horizontal flip, then normalise) done there in
whole batches, so no DataLoader or PIL sits between the GPU and its next step.

A set is checked when it is made (uint8 images of one shape, one int64 label per image,
every label in [0, num_classes)) and fingerprinted: a hash of its shapes, its labels and
its images, which keys the unpruned stage, so a changed data set never reuses a stage
trained on another (:func:`prunebench.protocol.base_settings`)."""
import hashlib
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from prunebench.data.base import Data
from prunebench.errors import PrunebenchError

CHUNK_BATCHES = 32  # batches of one epoch augmented at once


@dataclass
class ImageData(Data):
    train_x: torch.Tensor  # uint8 (N, C, H, W)
    train_y: torch.Tensor  # int64 (N,)
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: Sequence[float]  # per channel, on the 0..1 scale
    std: Sequence[float]
    num_classes: int
    pad: int = 4
    flip: bool = True
    source: str = "the data set"  # where the arrays came from, named when they are refused
    fingerprint: str = ""  # computed from the arrays when not given (and kept by to())
    policy: Optional[Callable] = None  # (uint8 batch, generator) -> uint8 batch after crop and flip (RandAugment)
    val_x: Optional[torch.Tensor] = None  # training images held out (dataset.val_split), uint8
    val_y: Optional[torch.Tensor] = None

    def __post_init__(self):
        if not self.fingerprint:
            for split, x, y in (("training", self.train_x, self.train_y), ("test", self.test_x, self.test_y)):
                check_arrays(x, y, self.num_classes, f"the {split} split of {self.source}")
            self.fingerprint = fingerprint_arrays(self.train_x, self.train_y, self.test_x, self.test_y,
                                                  about=f"classes {self.num_classes} mean {list(self.mean)} "
                                                        f"std {list(self.std)}")

    def with_policy(self, policy: Optional[Callable]) -> "ImageData":
        """The same set augmenting its training batches with ``policy`` too, on the device."""
        return replace(self, policy=policy)

    def to(self, device) -> "ImageData":
        keys = ("train_x", "train_y", "test_x", "test_y") + (("val_x", "val_y") if self.val_x is not None else ())
        return replace(self, **{k: getattr(self, k).to(device) for k in keys})

    def held_out(self, count: int, seed: int = 0) -> "ImageData":
        """This set with ``count`` training images, drawn with ``seed``, moved to a validation split
        (the fingerprint kept: ``dataset.val_split`` keys the stages itself)."""
        n = self.train_x.shape[0]
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(self.train_x.device)
        val, train = order[:count].sort().values, order[count:].sort().values
        return replace(self, train_x=self.train_x[train], train_y=self.train_y[train], val_x=self.train_x[val],
                       val_y=self.train_y[val])

    @property
    def val_size(self) -> int:
        return 0 if self.val_y is None else self.val_y.numel()

    def val_batches(self, batch_size: int) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        for i in range(0, self.val_size, batch_size):
            yield self.normalize(self.val_x[i:i + batch_size]), self.val_y[i:i + batch_size]

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])

    @property
    def device(self) -> torch.device:
        return self.train_x.device

    @property
    def train_size(self) -> int:
        return self.train_y.numel()

    @property
    def test_size(self) -> int:
        return self.test_y.numel()

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x.float() / 255.0 - mean) / std

    def augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Random crop after zero padding, and random horizontal flip, of a uint8 batch."""
        return self.apply(x, *self.draw(x.shape[0], generator))

    def draw(self, b: int, generator: torch.Generator) -> Tuple[Optional[torch.Tensor], ...]:
        """The random crop offsets (dy, dx) and flips of a batch of ``b`` images (None where
        that augmentation is off), drawn from ``generator`` in this order."""
        dy = dx = flip = None
        if self.pad:
            dy = torch.randint(0, 2 * self.pad + 1, (b, 1, 1, 1), device=self.device, generator=generator)
            dx = torch.randint(0, 2 * self.pad + 1, (b, 1, 1, 1), device=self.device, generator=generator)
        if self.flip:
            flip = torch.rand(b, device=self.device, generator=generator) < 0.5
        return dy, dx, flip

    def apply(self, x: torch.Tensor, dy: Optional[torch.Tensor], dx: Optional[torch.Tensor],
              flip: Optional[torch.Tensor]) -> torch.Tensor:
        """Crop (at offsets dy, dx after zero padding) and flip a uint8 batch as drawn by :meth:`draw`."""
        b, c, h, w = x.shape
        if dy is not None:
            p = self.pad
            padded = F.pad(x, (p, p, p, p))
            rows = dy + torch.arange(h, device=x.device).view(1, 1, h, 1)
            cols = dx + torch.arange(w, device=x.device).view(1, 1, 1, w)
            batch = torch.arange(b, device=x.device).view(b, 1, 1, 1)
            chan = torch.arange(c, device=x.device).view(1, c, 1, 1)
            x = padded[batch, chan, rows, cols]
        if flip is not None:
            x = torch.where(flip.view(b, 1, 1, 1), x.flip(3), x)
        return x

    def steps_per_epoch(self, batch_size: int, steps: Optional[int] = None) -> int:
        """Steps of one epoch of :meth:`train_batches`."""
        count = max(1, self.train_x.shape[0] // batch_size)
        return count if steps is None else min(count, steps)

    def train_batches(self, batch_size: int, generator: torch.Generator,
                      steps: Optional[int] = None) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of augmented, normalised batches in a random order. The last
        partial batch is dropped, so every step has the same shape. The crops and flips
        are drawn batch by batch, then applied to ``CHUNK_BATCHES`` batches at once (a few
        large kernels instead of a dozen small ones a step): the batches are those of a
        batch-by-batch augmentation, the same for every chunk size."""
        n = self.train_x.shape[0]
        order = torch.randperm(n, device=self.device, generator=generator)
        total = self.steps_per_epoch(batch_size, steps)
        for first in range(0, total, CHUNK_BATCHES):
            sizes = [order[i * batch_size:(i + 1) * batch_size].numel()
                     for i in range(first, min(first + CHUNK_BATCHES, total))]
            draws = [self.draw(size, generator) for size in sizes]
            idx = order[first * batch_size:first * batch_size + sum(sizes)]
            x = self.apply(self.train_x[idx], *[None if d[0] is None else torch.cat(d) for d in zip(*draws)])
            x = self.normalize(x if self.policy is None else self.policy(x, generator))
            y = self.train_y[idx]
            start = 0
            for size in sizes:
                yield x[start:start + size], y[start:start + size]
                start += size

    def sample_batches(self, num_images: int, batch_size: int,
                       generator: torch.Generator) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """Normalised, un-augmented batches of ``num_images`` random training images
        (all of them if the set is smaller): the input of statistics collection."""
        n = self.train_x.shape[0]
        idx = torch.randperm(n, device=self.device, generator=generator)[:min(num_images, n)]
        for i in range(0, idx.numel(), batch_size):
            j = idx[i:i + batch_size]
            yield self.normalize(self.train_x[j]), self.train_y[j]

    def test_batches(self, batch_size: int) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        for i in range(0, self.test_x.shape[0], batch_size):
            yield self.normalize(self.test_x[i:i + batch_size]), self.test_y[i:i + batch_size]


def check_arrays(x: torch.Tensor, y: torch.Tensor, num_classes: int, where: str) -> None:
    """uint8 images (N, C, H, W) and N int64 labels in [0, num_classes), else a PrunebenchError naming ``where``."""
    if x.dtype != torch.uint8 or x.dim() != 4:
        raise PrunebenchError(f"{where} holds no uint8 images of shape (N, C, H, W) (got {x.dtype} {tuple(x.shape)}); "
                              f"fix or replace the data set's files")
    if y.dim() != 1 or y.dtype != torch.int64:
        raise PrunebenchError(f"{where} holds no int64 label vector (got {y.dtype} {tuple(y.shape)}); fix or "
                              f"replace the data set's files")
    if x.shape[0] != y.shape[0]:
        raise PrunebenchError(f"{where} holds {x.shape[0]} images but {y.shape[0]} labels; fix or replace the data "
                              f"set's files")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise PrunebenchError(f"{where} holds labels in [{int(y.min())}, {int(y.max())}], outside [0, {num_classes}) "
                              f"for {num_classes} classes; fix or replace the data set's files")


def fingerprint_arrays(*tensors: torch.Tensor, about: str = "") -> str:
    """A short hash of ``about`` and the tensors' dtypes, shapes and bytes: equal for the same
    data, different for any change. Every byte is hashed: SHA-256 reads over 1 GB/s, so CIFAR's
    180 MB cost about a tenth of a second, once per load."""
    h = hashlib.sha256(about.encode())
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f";{t.dtype} {tuple(t.shape)};".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()[:16]
