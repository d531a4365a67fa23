"""The initialisation of the CIFAR models, as the authors' models do it
(rethinking-network-pruning, cifar/*/models), and of the ImageNet ResNet (torchvision's
is the same with ``bn_init`` 1): He normal with fan-out for every
convolution, BatchNorm scale ``bn_init`` (1, or network slimming's 0.5) and shift 0,
and, where ``linear_std`` is given (VGG), linear layers N(0, linear_std²) with zero
bias; otherwise linear layers keep PyTorch's default."""
from typing import Optional

from torch import nn


def he_init(model: nn.Module, bn_init: float = 1.0, linear_std: Optional[float] = None) -> None:
    if next(model.parameters()).is_meta:  # shapes only (validation, the dry run): no values to draw
        return
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, bn_init)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear_std is not None:
            nn.init.normal_(m.weight, 0, linear_std)
            nn.init.zeros_(m.bias)
