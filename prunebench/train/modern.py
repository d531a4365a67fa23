"""The parts of the modern training recipe (``schedule=modern``) that are not the data's
augmentation (:mod:`prunebench.data.policy`): the learning rate of every step (linear warm-up,
cosine decay), mixup and cutmix of a batch, and the exponential moving average of the weights.
Their settings and sources: docs/modern-cnns.md (torchvision's reference recipe, pytorch/vision
issue 3995 and references/classification)."""
import math
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def step_lr(recipe, milestones: Sequence[int], epoch: int, step: int, steps_per_epoch: int) -> float:
    """The learning rate of (0-based) ``step`` of (0-based) ``epoch``.

    - ``lr_schedule: step``: ``lr`` times ``gamma`` after each milestone epoch (MultiStepLR);
      ``cosine``: ``lr x (1 + cos(pi t / T)) / 2`` with t the steps since the warm-up ended and
      T the steps after it (CosineAnnealingLR to 0, per step).
    - ``warmup: constant``: the first ``warmup_epochs`` epochs at ``lr x warmup_factor`` (SFP's
      recipe); ``linear``: from ``lr x warmup_factor`` at the first step, linearly, to the
      scheduled lr at the end of the warm-up (LinearLR, per step)."""
    warm = recipe.warmup_epochs * steps_per_epoch
    t = epoch * steps_per_epoch + step
    if recipe.lr_schedule == "cosine":
        total = max(1, recipe.epochs * steps_per_epoch - warm)
        lr = recipe.lr * 0.5 * (1.0 + math.cos(math.pi * min(max(t - warm, 0), total) / total))
    else:
        lr = recipe.lr * recipe.gamma ** sum(1 for m in milestones if m <= epoch)
    if t < warm:
        if recipe.warmup == "linear":
            return lr * (recipe.warmup_factor + (1.0 - recipe.warmup_factor) * t / warm)
        return lr * recipe.warmup_factor
    return lr


def per_step(recipe) -> bool:
    """Whether the lr changes within an epoch (cosine decay or a linear warm-up); never where the
    recipe gives one rate an epoch (``lr_epochs``: the revisited strategies' rewound and 1-cycle schedules)."""
    if getattr(recipe, "lr_epochs", None) is not None:
        return False
    return recipe.lr_schedule == "cosine" or (recipe.warmup == "linear" and recipe.warmup_epochs > 0)


def mixing_rng(seed: int, epoch: int) -> np.random.Generator:
    """The host generator of one epoch's mixup/cutmix draws (a few numbers a batch)."""
    return np.random.default_rng([seed, epoch, 7])


def mix(x: torch.Tensor, y: torch.Tensor, num_classes: int, mixup_alpha: float, cutmix_alpha: float,
        rng: np.random.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mixup (Zhang et al., ICLR 2018) or cutmix (Yun et al., ICCV 2019) of a batch with itself
    rolled by one image, as torchvision's reference recipe (RandomMixup / RandomCutmix, one of
    the two chosen at random when both are on): the mixed images and soft targets
    ``lam x onehot(y) + (1 - lam) x onehot(y rolled)``. Cutmix pastes a box of the rolled
    images with area fraction (1 - lam), clipped at the border, and ``lam`` becomes the kept
    area's fraction."""
    target = F.one_hot(y, num_classes).to(x.dtype)
    rolled_x, rolled_t = x.roll(1, 0), target.roll(1, 0)
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or rng.random() < 0.5)
    if use_cutmix:
        lam = float(rng.beta(cutmix_alpha, cutmix_alpha))
        h, w = x.shape[-2:]
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
        rh, rw = int(0.5 * h * math.sqrt(1.0 - lam)), int(0.5 * w * math.sqrt(1.0 - lam))
        y0, y1, x0, x1 = max(cy - rh, 0), min(cy + rh, h), max(cx - rw, 0), min(cx + rw, w)
        x = x.clone()
        x[..., y0:y1, x0:x1] = rolled_x[..., y0:y1, x0:x1]
        lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
    else:
        lam = float(rng.beta(mixup_alpha, mixup_alpha))
        x = lam * x + (1.0 - lam) * rolled_x
    return x, lam * target + (1.0 - lam) * rolled_t


class WeightAverage:
    """An exponential moving average of a model's parameters and floating-point buffers
    (BatchNorm statistics): ``avg = decay x avg + (1 - decay) x current`` every ``every``
    steps (torchvision's ``--model-ema``: an AveragedModel with its buffers, updated every
    ``--model-ema-steps``), reset to the model during the lr warm-up as torchvision does.
    Integer buffers (BatchNorm's batch count) are copied."""

    def __init__(self, model: nn.Module, decay: float, every: int):
        self.decay, self.every = decay, every
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def _pairs(self, model: nn.Module):
        current = model.state_dict()
        floats = [k for k, v in self.state.items() if v.is_floating_point()]
        return current, floats

    @torch.no_grad()
    def reset(self, model: nn.Module) -> None:
        for k, v in model.state_dict().items():
            self.state[k].copy_(v)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        current, floats = self._pairs(model)
        torch._foreach_lerp_([self.state[k] for k in floats], [current[k].detach() for k in floats],
                             1.0 - self.decay)
        for k, v in self.state.items():
            if not v.is_floating_point():
                v.copy_(current[k])

    def copy_to(self, model: nn.Module) -> None:
        model.load_state_dict(self.state)

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return self.state

    def load_state_dict(self, state: Optional[Dict[str, torch.Tensor]]) -> None:
        if state:
            for k, v in state.items():
                self.state[k].copy_(v)
