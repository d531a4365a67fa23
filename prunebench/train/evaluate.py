"""Top-1 / top-5 accuracy on the test split, in large batches."""
from typing import Dict

import torch
from torch import nn

from prunebench.data import Data
from prunebench.errors import PrunebenchError


@torch.no_grad()
def hits(model: nn.Module, data: Data, batch_size: int = 1000, split: str = "test") -> torch.Tensor:
    """Test images (``split="val"``: the held-out training images) whose label is the model's first
    guess, and among its first five (first min(5, classes)), as a device tensor [top-1 hits, top-5
    hits]: nothing is read back."""
    if data.test_size == 0:
        raise PrunebenchError("the test set is empty; check the data set's settings (dataset.root, sizes)")
    model.eval()
    k = min(5, data.num_classes)
    out = torch.zeros(2, device=data.device)
    for x, y in (data.val_batches(batch_size) if split == "val" else data.test_batches(batch_size)):
        hit = model(x).topk(k, dim=1).indices == y[:, None]
        out[0] += hit[:, 0].sum()
        out[1] += hit.any(dim=1).sum()
    return out


def accuracy(counts: torch.Tensor, data: Data, split: str = "test") -> Dict[str, float]:
    """``acc1`` (and ``acc5`` with more than 10 classes), in %, from :func:`hits`' counts on the host."""
    n = data.val_size if split == "val" else data.test_size
    out = {"acc1": 100.0 * counts[0].item() / n}
    if data.num_classes > 10:
        out["acc5"] = 100.0 * counts[1].item() / n
    return out


def evaluate(model: nn.Module, data: Data, batch_size: int = 1000, split: str = "test") -> Dict[str, float]:
    return accuracy(hits(model, data, batch_size, split).cpu(), data, split)
