"""Least squares on a layer's sampled inputs and outputs: the statistics and fits
behind reconstruction-based pruning (ThiNet, channel pruning).

A layer (Conv2d or Linear) is seen as ``weight``: (O, C, K) acting on input
patches ``x``: (n, C, K), K = kh * kw (1 for a linear layer): y = sum_{c,k} w x.
Everything is accumulated over batches into fixed-size float64 sums, so memory
does not grow with the number of samples:

- :class:`NormalEquations`: A = X^T X and B = X^T Y over flattened patches, for
  refitting the whole weight by ridge-stabilised least squares (:meth:`solve`);
- :class:`ContributionGram`: with z[n, o, c] = sum_k w[o, c, k] x[n, c, k] the
  contribution of input channel c to output o, G[c, c'] = sum_{n,o} z_c z_c' and
  g[c] = sum_{n,o} z_c y_o (the regression of the output on the channels'
  contributions), computed from each batch's A and B without forming z.
"""
from typing import Tuple

import torch
from torch import nn

RIDGE = 1e-8  # ridge added to a system's diagonal, relative to the diagonal's mean


def layer_weight(layer: nn.Module) -> torch.Tensor:
    """The weight of a Conv2d or Linear layer as (O, C, K)."""
    w = layer.weight.detach()
    return w.reshape(w.shape[0], w.shape[1], -1)


def set_layer_weight(layer: nn.Module, weight: torch.Tensor) -> None:
    """Write an (O, C, K) weight back into ``layer`` (in place, keeping dtype and device)."""
    with torch.no_grad():
        layer.weight.copy_(weight.reshape(layer.weight.shape).to(layer.weight.dtype))


def moments(x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """X^T X and X^T Y of one batch, in float64: x (n, C, K), y (n, O)."""
    flat = x.reshape(x.shape[0], -1).double()
    return flat.T @ flat, flat.T @ y.double()


def contributions(a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(G, g) of the channels' contributions from patch moments A (CK, CK), B (CK, O)
    and a weight (O, C, K): G[c, c'] = sum_{k,k'} A[ck, c'k'] M[ck, c'k'] with
    M = W^T W over outputs, g[c] = sum_{k,o} W[o, c, k] B[ck, o]."""
    o, c, k = weight.shape
    w = weight.reshape(o, c * k).to(a.dtype)
    gram = (a * (w.T @ w)).reshape(c, k, c, k).sum(dim=(1, 3))
    cross = (b * w.T).reshape(c, k, o).sum(dim=(1, 2))
    return gram, cross


def ridge_solve(a: torch.Tensor, b: torch.Tensor, ridge: float = RIDGE) -> torch.Tensor:
    """Solve (A + lambda I) X = B with lambda = ``ridge`` x mean(diag A): near-exact
    where A is well conditioned, still defined where channels are dead (zero rows)."""
    scale = a.diagonal().mean().clamp_min(torch.finfo(a.dtype).tiny)
    reg = a + ridge * scale * torch.eye(a.shape[0], dtype=a.dtype, device=a.device)
    chol, info = torch.linalg.cholesky_ex(reg)
    if int(info) == 0:
        return torch.cholesky_solve(b if b.dim() == 2 else b[:, None], chol).reshape(b.shape)
    return torch.linalg.lstsq(reg, b).solution


class NormalEquations:
    """A = X^T X and B = X^T Y accumulated over batches; the least-squares weight."""

    def __init__(self):
        self.a = self.b = None
        self.count = 0

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        a, b = moments(x, y)
        self.a = a if self.a is None else self.a + a
        self.b = b if self.b is None else self.b + b
        self.count += x.shape[0]

    def solve(self, channels: int, ridge: float = RIDGE) -> torch.Tensor:
        """The (O, C, K) weight minimising sum_n ||y_n - W x_n||^2 (+ the tiny ridge)."""
        if self.a is None:
            raise ValueError("no samples were added")
        w = ridge_solve(self.a, self.b, ridge)  # (CK, O)
        return w.T.reshape(w.shape[1], channels, -1)


class ContributionGram:
    """G and g of the input channels' contributions to a layer's output, accumulated
    over batches for a fixed ``weight`` (O, C, K); ``yy`` = sum ||y||^2."""

    def __init__(self, weight: torch.Tensor):
        self.weight = weight.double()
        self.gram = self.cross = None
        self.yy = 0.0
        self.count = 0

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        a, b = moments(x, y)
        gram, cross = contributions(a, b, self.weight)
        self.gram = gram if self.gram is None else self.gram + gram
        self.cross = cross if self.cross is None else self.cross + cross
        self.yy += float(y.double().square().sum())
        self.count += x.shape[0]


def channel_scales(gram: torch.Tensor, cross: torch.Tensor, ridge: float = RIDGE) -> torch.Tensor:
    """ThiNet's w-hat: the per-channel factors s minimising sum ||y - sum_c s_c z_c||^2."""
    return ridge_solve(gram, cross, ridge)


def rescale_channels(layer: nn.Module, scales: torch.Tensor) -> None:
    """Multiply the weights ``layer`` applies to each input channel by its factor."""
    w = layer_weight(layer)
    set_layer_weight(layer, w * scales.to(w.device, w.dtype)[None, :, None])
