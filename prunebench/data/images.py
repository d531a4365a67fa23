"""Image tensors held on the training device as uint8, with the paper's CIFAR
augmentation (pad + random crop + horizontal flip, then normalise) done there in
whole batches, so no DataLoader or PIL sits between the GPU and its next step."""
from dataclasses import dataclass, replace
from typing import Iterator, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from prunebench.data.base import Data

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

    def to(self, device) -> "ImageData":
        return replace(self, **{k: getattr(self, k).to(device) for k in ("train_x", "train_y", "test_x", "test_y")})

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
            x = self.normalize(self.apply(self.train_x[idx], *[None if d[0] is None else torch.cat(d)
                                                                 for d in zip(*draws)]))
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
