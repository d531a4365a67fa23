"""What a pruning method is: training hooks (optional), a sparse stage (optional)
and per-channel importance scores. Selection and surgery are shared."""
from abc import ABC, abstractmethod
from typing import Dict

import torch
from torch import nn

from prunebench.data import ImageData
from prunebench.train.hooks import TrainHooks


class Method(TrainHooks, ABC):
    """A structured pruning method. ``cfg`` is its node of the composed config."""

    sparse: bool = False  # trains a sparse model (its own stage) before pruning
    paper: str = ""

    def __init__(self, cfg, seed: int = 0):
        self.cfg = cfg
        self.seed = seed

    def sparse_settings(self) -> Dict:
        """The settings that change the sparse stage (its cache key)."""
        return {}

    @abstractmethod
    def scores(self, model: nn.Module, data: ImageData) -> Dict[str, torch.Tensor]:
        """Importance of every channel of every prunable layer, by group name; higher is kept."""
