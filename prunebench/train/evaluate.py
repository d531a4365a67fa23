"""Top-1 / top-5 accuracy on the test split, in large batches."""
from typing import Dict

import torch
from torch import nn

from prunebench.data import Data
from prunebench.errors import PrunebenchError


@torch.no_grad()
def evaluate(model: nn.Module, data: Data, batch_size: int = 1000) -> Dict[str, float]:
    if data.test_size == 0:
        raise PrunebenchError("the test set is empty; check the data set's settings (dataset.root, sizes)")
    model.eval()
    k = min(5, data.num_classes)
    top1 = torch.zeros((), device=data.device)
    topk = torch.zeros((), device=data.device)
    for x, y in data.test_batches(batch_size):
        pred = model(x).topk(k, dim=1).indices
        hit = pred == y[:, None]
        top1 += hit[:, 0].sum()
        topk += hit.any(dim=1).sum()
    n = data.test_size
    out = {"acc1": 100.0 * top1.item() / n}
    if data.num_classes > 10:
        out["acc5"] = 100.0 * topk.item() / n
    return out
