"""RandAugment (Cubuk et al., NeurIPS 2020) and TrivialAugment (Müller & Hutter, ICCV 2021) on
whole uint8 batches on the training device, each image drawing its own operations: the
``schedule.augment`` of the modern recipe (torchvision's reference recipe trains with
``--auto-augment ta_wide``). The operations and their magnitude ranges are torchvision's
(``torchvision.transforms.RandAugment`` and ``TrivialAugmentWide``, 31 magnitude bins):
identity, shear x/y, translate x/y, rotate, brightness, colour, contrast, sharpness, posterize,
solarize, autocontrast, equalize. Geometric operations sample the nearest pixel and fill with 0.

Every random choice comes from the ``torch.Generator`` handed in, so a seed fixes an epoch."""
import math
from dataclasses import dataclass
from typing import Dict, Optional

import torch
import torch.nn.functional as F

from prunebench.errors import PrunebenchError

BINS = 31
OPS = ("identity", "shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness", "color", "contrast",
       "sharpness", "posterize", "solarize", "autocontrast", "equalize")
SIGNED = {"shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness", "color", "contrast", "sharpness"}


def magnitudes(policy: str, size: int) -> Dict[str, torch.Tensor]:
    """Each operation's magnitude at each of the 31 bins, as torchvision's ``_augmentation_space``
    of ``TrivialAugmentWide`` (``trivialaugment``) and ``RandAugment`` (``randaugment``) on
    ``size``-pixel images."""
    lin = lambda hi: torch.linspace(0.0, hi, BINS)  # noqa: E731
    wide = policy == "trivialaugment"
    posterize_span = 6 if wide else 4
    return {"identity": torch.zeros(BINS), "shear_x": lin(0.99 if wide else 0.3), "shear_y": lin(0.99 if wide else 0.3),
            "translate_x": lin(32.0 if wide else 150.0 / 331.0 * size),
            "translate_y": lin(32.0 if wide else 150.0 / 331.0 * size), "rotate": lin(135.0 if wide else 30.0),
            "brightness": lin(0.99 if wide else 0.9), "color": lin(0.99 if wide else 0.9),
            "contrast": lin(0.99 if wide else 0.9), "sharpness": lin(0.99 if wide else 0.9),
            "posterize": 8 - (torch.arange(BINS) / ((BINS - 1) / posterize_span)).round(),
            "solarize": torch.linspace(255.0, 0.0, BINS), "autocontrast": torch.zeros(BINS),
            "equalize": torch.zeros(BINS)}


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def _geometric(op: str, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """x float (B, C, H, W) in 0..255, m (B,): the affine map from output to input, in the
    normalised coordinates of ``affine_grid`` (translations in pixels are 2m / side there)."""
    b, _, h, w = x.shape
    theta = torch.zeros(b, 2, 3, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    if op == "shear_x":
        theta[:, 0, 1] = m * h / w
    elif op == "shear_y":
        theta[:, 1, 0] = m * w / h
    elif op == "translate_x":
        theta[:, 0, 2] = 2.0 * m / w
    elif op == "translate_y":
        theta[:, 1, 2] = 2.0 * m / h
    else:  # rotate by m degrees about the centre
        a = m * math.pi / 180.0
        theta[:, 0, 0], theta[:, 0, 1] = torch.cos(a), -torch.sin(a) * h / w
        theta[:, 1, 0], theta[:, 1, 1] = torch.sin(a) * w / h, torch.cos(a)
    return _affine(x, theta)


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] != 3:
        return x.mean(1, keepdim=True)
    return (0.2989 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).floor()


def _blend(a: torch.Tensor, b: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """a x factor + b x (1 - factor), clamped to 0..255 and truncated to an integer (PIL's ImageEnhance, as
    torchvision's tensor ops)."""
    return (factor.view(-1, 1, 1, 1) * a + (1 - factor.view(-1, 1, 1, 1)) * b).clamp(0, 255).floor()


def _smooth(x: torch.Tensor) -> torch.Tensor:
    """PIL's SMOOTH filter (3x3, centre 5, others 1, / 13) inside, the border pixels as they are."""
    c = x.shape[1]
    k = torch.ones(3, 3, device=x.device)
    k[1, 1] = 5.0
    k = (k / 13.0).expand(c, 1, 3, 3)
    out = x.clone()
    out[:, :, 1:-1, 1:-1] = F.conv2d(x, k, groups=c).round()
    return out


def _equalize(x: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation of each image's channels (PIL's ImageOps.equalize, as torchvision's)."""
    b, c, h, w = x.shape
    flat = x.reshape(b * c, h * w).long()
    hist = torch.zeros(b * c, 256, device=x.device).scatter_add_(1, flat, torch.ones_like(flat, dtype=torch.float))
    last = hist.gather(1, (flat.max(1, keepdim=True).values))  # count of the largest value present
    step = torch.div(hist.sum(1, keepdim=True) - last, 255, rounding_mode="floor")
    lut = torch.div(hist.cumsum(1) + torch.div(step, 2, rounding_mode="floor"), step.clamp(min=1),
                    rounding_mode="floor")
    lut = torch.cat([torch.zeros_like(lut[:, :1]), lut[:, :-1]], 1).clamp(0, 255)
    out = lut.gather(1, flat)
    return torch.where(step > 0, out, flat.float()).reshape(b, c, h, w)


def apply_op(op: str, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """One operation on a float batch in 0..255, magnitude ``m`` per image."""
    if op == "identity":
        return x
    if op in ("shear_x", "shear_y", "translate_x", "translate_y", "rotate"):
        return _geometric(op, x, m)
    if op == "brightness":
        return _blend(x, torch.zeros_like(x), 1.0 + m)
    if op == "color":
        return _blend(x, _gray(x).expand_as(x), 1.0 + m)
    if op == "contrast":
        return _blend(x, _gray(x).mean((1, 2, 3), keepdim=True).expand_as(x), 1.0 + m)
    if op == "sharpness":
        return _blend(x, _smooth(x), 1.0 + m)
    if op == "posterize":
        keep = (256 - 2 ** (8 - m.long())).view(-1, 1, 1, 1)
        return (x.long() & keep).float()
    if op == "solarize":
        return torch.where(x >= m.view(-1, 1, 1, 1), 255.0 - x, x)
    if op == "autocontrast":
        lo = x.amin((2, 3), keepdim=True)
        hi = x.amax((2, 3), keepdim=True)
        inv_scale = torch.where(hi > lo, (hi - lo) * (1.0 / 255.0), torch.ones_like(hi))
        return torch.where(hi > lo, ((x - lo) / inv_scale).clamp(0, 255).floor(), x)
    if op == "equalize":
        return _equalize(x)
    raise ValueError(op)


@dataclass(frozen=True)
class Policy:
    """``name``: trivialaugment (one operation an image, a random bin) | randaugment (``num_ops``
    operations an image at bin ``magnitude``)."""
    name: str
    num_ops: int = 2
    magnitude: int = 9

    def check(self) -> None:
        if self.name not in ("trivialaugment", "randaugment"):
            raise PrunebenchError(f"schedule.augment must be none, trivialaugment or randaugment, got {self.name!r}")
        if not 0 <= self.magnitude < BINS or self.num_ops < 1:
            raise PrunebenchError(f"schedule.randaugment_magnitude must be in [0, {BINS - 1}] and "
                                  f"schedule.randaugment_ops >= 1, got {self.magnitude}, {self.num_ops}")

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The augmented uint8 batch ``x`` (B, C, H, W)."""
        b = x.shape[0]
        table = magnitudes(self.name, x.shape[-1])
        out = x.float()
        rounds = 1 if self.name == "trivialaugment" else self.num_ops
        for _ in range(rounds):
            ops = torch.randint(0, len(OPS), (b,), device=x.device, generator=generator)
            if self.name == "trivialaugment":
                bins = torch.randint(0, BINS, (b,), device=x.device, generator=generator)
            else:
                bins = torch.full((b,), self.magnitude, device=x.device)
            signs = torch.where(torch.rand(b, device=x.device, generator=generator) < 0.5, -1.0, 1.0)
            for k, op in enumerate(OPS):
                idx = (ops == k).nonzero().flatten()
                if op == "identity" or idx.numel() == 0:
                    continue
                m = table[op].to(x.device)[bins[idx]]
                if op in SIGNED:
                    m = m * signs[idx]
                out[idx] = apply_op(op, out[idx], m)
        return out.round().clamp(0, 255).to(torch.uint8)


def policy_of(recipe) -> Optional[Policy]:
    """The device augmentation of a recipe (None: ``augment: none``)."""
    if recipe.augment == "none":
        return None
    policy = Policy(recipe.augment, recipe.randaugment_ops, recipe.randaugment_magnitude)
    policy.check()
    return policy

