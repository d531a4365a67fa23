"""Image tensors held on the training device as uint8, with the paper's CIFAR
augmentation (pad + random crop + horizontal flip, then normalise) done there in
whole batches, so no DataLoader or PIL sits between the GPU and its next step."""
from dataclasses import dataclass, replace
from typing import Iterator, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from prunebench.data.base import Data

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
        b, c, h, w = x.shape
        if self.pad:
            p = self.pad
            padded = F.pad(x, (p, p, p, p))
            dy = torch.randint(0, 2 * p + 1, (b, 1, 1, 1), device=x.device, generator=generator)
            dx = torch.randint(0, 2 * p + 1, (b, 1, 1, 1), device=x.device, generator=generator)
            rows = dy + torch.arange(h, device=x.device).view(1, 1, h, 1)
            cols = dx + torch.arange(w, device=x.device).view(1, 1, 1, w)
            batch = torch.arange(b, device=x.device).view(b, 1, 1, 1)
            chan = torch.arange(c, device=x.device).view(1, c, 1, 1)
            x = padded[batch, chan, rows, cols]
        if self.flip:
            flip = torch.rand(b, device=x.device, generator=generator) < 0.5
            x = torch.where(flip.view(b, 1, 1, 1), x.flip(3), x)
        return x

    def steps_per_epoch(self, batch_size: int, steps: Optional[int] = None) -> int:
        """Steps of one epoch of :meth:`train_batches`."""
        count = max(1, self.train_x.shape[0] // batch_size)
        return count if steps is None else min(count, steps)

    def train_batches(self, batch_size: int, generator: torch.Generator,
                      steps: Optional[int] = None) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of augmented, normalised batches in a random order. The last
        partial batch is dropped, so every step has the same shape."""
        n = self.train_x.shape[0]
        order = torch.randperm(n, device=self.device, generator=generator)
        for i in range(self.steps_per_epoch(batch_size, steps)):
            idx = order[i * batch_size:(i + 1) * batch_size]
            yield self.normalize(self.augment(self.train_x[idx], generator)), self.train_y[idx]

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
