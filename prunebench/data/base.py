"""What the training loop, the evaluation and the methods read of a data set.

Two kinds implement it: :class:`~prunebench.data.images.ImageData` holds a whole
(small) set on the training device as uint8 and augments whole batches there
(CIFAR, digits, synthetic); :class:`~prunebench.data.folder.FolderData` streams an
ImageNet-style tree of image files through DataLoader workers. Both give
normalised float batches on :attr:`Data.device`, and both draw every random
choice from the ``torch.Generator`` they are handed, so a seed fixes an epoch."""
from abc import ABC, abstractmethod
from typing import Iterator, Optional, Tuple

import torch

Batch = Tuple[torch.Tensor, torch.Tensor]  # normalised float images (B, C, H, W), int64 labels (B,)


class Data(ABC):
    num_classes: int
    fingerprint: str  # a short hash of the data (arrays, or an image tree's file list): keys the unpruned stage

    @property
    @abstractmethod
    def input_shape(self) -> Tuple[int, int, int]:
        """One image's (C, H, W) as the model sees it."""

    @property
    @abstractmethod
    def device(self) -> torch.device:
        """Where the batches are delivered."""

    @property
    @abstractmethod
    def train_size(self) -> int:
        """Images in the training split."""

    @property
    @abstractmethod
    def test_size(self) -> int:
        """Images in the test split."""

    @abstractmethod
    def to(self, device) -> "Data":
        """The same data set, delivering its batches on ``device``."""

    @abstractmethod
    def with_policy(self, policy) -> "Data":
        """The same data set whose training batches ``policy`` (uint8 batch, generator) -> uint8 batch
        augments on the device after the crop and flip (RandAugment, TrivialAugment:
        :mod:`prunebench.data.policy`)."""

    @abstractmethod
    def steps_per_epoch(self, batch_size: int, steps: Optional[int] = None) -> int:
        """Steps of one epoch of :meth:`train_batches` (capped at ``steps``)."""

    @abstractmethod
    def train_batches(self, batch_size: int, generator: torch.Generator,
                      steps: Optional[int] = None) -> Iterator[Batch]:
        """One epoch of augmented batches in an order drawn from ``generator``; the
        last partial batch is dropped, so every step has the same shape."""

    @abstractmethod
    def sample_batches(self, num_images: int, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        """Un-augmented batches of ``num_images`` random training images (all of them if
        the set is smaller): the input of statistics collection."""

    @abstractmethod
    def test_batches(self, batch_size: int) -> Iterator[Batch]:
        """The test split, in order, un-augmented."""

    @property
    def val_size(self) -> int:
        """Training images held out for selection (``dataset.val_split``); 0 without."""
        return 0

    def val_batches(self, batch_size: int) -> Iterator[Batch]:
        """The held-out training images, in order, un-augmented."""
        return iter(())
