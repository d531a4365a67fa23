"""Training hooks: how a method changes training without a loop of its own."""
from torch import nn


class TrainHooks:
    """No-op hooks; methods override the ones they need."""

    def regularize(self, model: nn.Module) -> None:
        """Called after ``backward()`` and before ``step()``: add to the gradients."""

    def after_step(self, model: nn.Module) -> None:
        """Called after every optimizer step (masks, projections)."""

    def on_epoch_end(self, model: nn.Module, epoch: int) -> None:
        """Called after each epoch with its 0-based index."""
