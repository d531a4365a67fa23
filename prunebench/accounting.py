"""What a row's training cost: training FLOPs per stage and for the whole pipeline behind a row.

A stage's training FLOPs are epochs x images per epoch x 3 x the forward FLOPs of one image
of the model it trained (backward ~ twice the forward; Kaplan et al. 2020's 6N per token is
the same count), where FLOPs are :mod:`prunebench.measure`'s (2 x multiply-accumulates; a
weight-level model's non-zero weights). A stage that also runs another model forward on every
image (the teacher of ``distill``) adds its forward FLOPs once per image.

A row's *pipeline* total adds the stages its result could not exist without, as Liu et al.'s
repository issue #48 counts a fine-tuned model: unpruned + sparse + pruning + fine-tuning; a
row trained from scratch on its own architecture (Scratch-B, uniform, random_arch, small_model)
counts its own (strategy ``pipeline`` rows: :mod:`prunebench.strategies.base`)."""
from typing import Dict, Iterable, Optional

BACKWARD_FACTOR = 3  # forward + backward ~ 3 forwards


def images_per_epoch(train_size: int, batch_size: int, steps: Optional[int] = None) -> int:
    """Images one epoch trains on: whole batches (the last partial one is dropped), at most ``steps`` of them."""
    count = max(1, train_size // batch_size)
    return (count if steps is None else min(count, steps)) * batch_size


def train_flops(epochs: float, images: int, forward_flops: int, extra_forward_flops: int = 0) -> int:
    """epochs x images x (3 x forward FLOPs of the trained model + forward FLOPs of any other model run)."""
    return int(round(epochs * images * (BACKWARD_FACTOR * int(forward_flops) + int(extra_forward_flops))))


def pipeline_total(own: Optional[int], results: Dict[str, Dict], rows: Iterable[str], key: str = "train_flops"):
    """``own`` plus ``key`` of each of ``rows`` present in ``results`` (None when ``own`` is unknown)."""
    if own is None:
        return None
    return own + sum(results[r].get(key) or 0 for r in rows if r in results)
