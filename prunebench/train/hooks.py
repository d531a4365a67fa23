"""Training hooks: how a method changes training without a loop of its own."""
from typing import Dict, Iterable, Optional

import torch
from torch import nn


class TrainHooks:
    """No-op hooks; methods override the ones they need. ``capturable``: the hooks run traced by
    torch.compile and captured in a CUDA graph (tensor lr, no host reads); False: the stage
    trains with the eager step (``train.compile=on`` falls back)."""

    capturable = True

    def before_training(self, model: nn.Module) -> None:
        """Called once before the first epoch of a training that starts afresh (not on resuming
        from a checkpoint, which holds what this did)."""

    def on_batch(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        """Called with each training batch before its forward pass (a penalty that needs the labels)."""

    def penalty(self, model: nn.Module) -> Optional[torch.Tensor]:
        """A term added to the loss before ``backward()`` (None: nothing)."""
        return None

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> Optional[torch.Tensor]:
        """The training loss of a batch in place of the cross-entropy (None: the cross-entropy);
        knowledge distillation's."""
        return None

    def regularize(self, model: nn.Module) -> None:
        """Called after ``backward()`` and before ``step()``: add to the gradients."""

    def after_step(self, model: nn.Module, lr: float) -> None:
        """Called after every optimizer step with the step's learning rate (masks, proximal steps):
        a float, or a device scalar tensor on the compiled path (use it in tensor arithmetic only)."""

    def on_epoch_end(self, model: nn.Module, epoch: int) -> None:
        """Called after each epoch with its 0-based index."""


class HookList(TrainHooks):
    """Several hooks called in order."""

    def __init__(self, hooks: Iterable[TrainHooks]):
        self.hooks = list(hooks)
        self.capturable = all(h.capturable for h in self.hooks)

    def before_training(self, model):
        for h in self.hooks:
            h.before_training(model)

    def on_batch(self, model, x, y):
        for h in self.hooks:
            h.on_batch(model, x, y)

    def penalty(self, model):
        terms = [t for t in (h.penalty(model) for h in self.hooks) if t is not None]
        return sum(terms) if terms else None

    def loss(self, logits, y):
        return next((out for out in (h.loss(logits, y) for h in self.hooks) if out is not None), None)

    def regularize(self, model):
        for h in self.hooks:
            h.regularize(model)

    def after_step(self, model, lr):
        for h in self.hooks:
            h.after_step(model, lr)

    def on_epoch_end(self, model, epoch):
        for h in self.hooks:
            h.on_epoch_end(model, epoch)


class MaskHook(TrainHooks):
    """Keeps pruned weights at zero: weight-level masks through retraining."""

    def __init__(self, masks: Dict[str, torch.Tensor]):
        self.masks = masks

    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        params = dict(model.named_parameters())
        for name, mask in self.masks.items():
            params[name].mul_(mask.to(params[name].device, params[name].dtype))

    def after_step(self, model, lr):
        self.apply(model)
