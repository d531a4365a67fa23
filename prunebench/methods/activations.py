"""Samples of a layer's input and output at random output positions, for methods
that reconstruct the next layer's output (ThiNet, channel pruning).

For a convolution the sample at output position (h, w) of an image is the input
patch the kernel sees there, ``x``: (C_in, kh * kw), and the output there,
``y``: (C_out,); ``positions_per_image`` positions are drawn per image, without
replacement (all of them when the map is smaller). For a linear layer an image is
one sample, ``x``: (C_in, 1). So the layer's output is, exactly,

    y[o] = bias[o] + sum_c sum_k weight[o, c, k] * x[c, k]

and the inner sum over k is input channel c's contribution to output o. ``y`` is
returned without the bias. Inputs may come from one model (the pruned one) and
outputs from another (the original), on the same images and positions; the
forward passes stop right after the last layer asked for.
"""
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Iterator, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from prunebench.errors import PrunebenchError
from prunebench.models.groups import Residual


@dataclass
class Samples:
    x: torch.Tensor  # (n, C_in, K): the layer's input patches at the sampled positions
    y: torch.Tensor  # (n, C_out): the target there, without the layer's bias


class _Done(Exception):
    """Raised by the last hook of a forward pass: nothing after it is needed."""


def check_layer(layer: nn.Module, name: str) -> None:
    if isinstance(layer, nn.Linear):
        return
    if not isinstance(layer, nn.Conv2d):
        raise PrunebenchError(f"{name} is a {type(layer).__name__}; only Conv2d and Linear layers can be sampled")
    if layer.groups != 1 or layer.padding_mode != "zeros" or isinstance(layer.padding, str):
        raise PrunebenchError(f"{name}: only ungrouped convolutions with numeric zero padding can be sampled")


def draw_positions(batch: int, height: int, width: int, per_image: int,
                   generator: torch.Generator, device) -> torch.Tensor:
    """Flat output positions (batch, P): ``per_image`` distinct ones per image, or all."""
    total = height * width
    if per_image >= total:
        return torch.arange(total, device=device).expand(batch, total)
    noise = torch.rand(batch, total, device=device, generator=generator)
    return noise.argsort(dim=1)[:, :per_image]


def patches(layer: nn.Conv2d, x: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
    """The input patches (batch * P, C_in, kh * kw) seen at flat output positions (batch, P)."""
    b, c = x.shape[:2]
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = layer.kernel_size, layer.stride, layer.padding, layer.dilation
    out_w = (x.shape[3] + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    rows, cols = flat // out_w, flat % out_w
    padded = F.pad(x, (pw, pw, ph, ph))
    i = (rows * sh)[:, :, None, None] + (torch.arange(kh, device=x.device) * dh)[None, None, :, None]
    j = (cols * sw)[:, :, None, None] + (torch.arange(kw, device=x.device) * dw)[None, None, None, :]
    img = torch.arange(b, device=x.device)[:, None, None, None]
    taken = padded.permute(0, 2, 3, 1)[img, i, j]  # (b, P, kh, kw, C)
    return taken.reshape(b * flat.shape[1], kh * kw, c).transpose(1, 2)


def at_positions(y: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
    """Values (batch * P, C) of a (batch, C, H, W) map at flat positions (batch, P)."""
    b, c = y.shape[:2]
    taken = y.flatten(2).gather(2, flat[:, None, :].expand(b, c, flat.shape[1]))  # (b, C, P)
    return taken.transpose(1, 2).reshape(-1, c)


def residual_block(model: nn.Module, layer: str) -> Optional[Residual]:
    """The residual block whose branch ends with convolution ``layer``, if the model declares one
    (``model.residuals()``)."""
    for r in getattr(model, "residuals", lambda: [])():
        if r.conv == layer:
            return r
    return None


@contextmanager
def evaluating(*models: nn.Module):
    """Eval mode (BatchNorm running statistics) inside, the modules' own modes restored after."""
    modes = {m: m.training for model in models for m in model.modules()}
    try:
        for model in models:
            model.eval()
        yield
    finally:
        for m, mode in modes.items():
            m.training = mode


def _forward(model: nn.Module, x: torch.Tensor, hooks: Sequence[Tuple[nn.Module, bool, object]],
             last: nn.Module) -> None:
    """Run ``model`` on ``x`` with temporary hooks ((module, pre?, fn)); stop after ``last``'s."""
    def stop(module, inputs, output):
        raise _Done

    handles = []
    try:
        for module, pre, fn in hooks:
            handles.append(module.register_forward_pre_hook(fn) if pre else module.register_forward_hook(fn))
        handles.append(last.register_forward_hook(stop))  # registered last: runs after the others
        model(x)
    except _Done:
        pass
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def sample(data, layers: Sequence[str], inputs_from: nn.Module, targets_from: Optional[nn.Module] = None, *,
           num_images: int, batch_size: int, positions_per_image: int, seed: int,
           residual: bool = False) -> Iterator[Dict[str, Samples]]:
    """Yield, batch by batch of ``num_images`` training images, {layer: Samples}.

    ``x``: the input of ``layer`` in ``inputs_from``. ``y``: the output of ``layer``
    in ``targets_from`` (default: the same model), less its bias. With ``residual``,
    where ``layer`` is the last convolution of a residual block (``model.residuals()``:
    ResNet's conv2, read by bn2 and then added to the shortcut; PreResNet's last
    convolution, added directly), ``y`` is instead what that convolution must output
    in ``inputs_from`` for the block's output (before any final ReLU) to equal the
    block's output in ``targets_from``: the original convolution's output plus the
    difference of the two models' shortcuts, mapped back through the BatchNorm's
    eval-mode scale where one follows (a / (a^2 + eps^2), which stays bounded where
    the scale is near zero)."""
    if batch_size < 1 or positions_per_image < 1:
        raise PrunebenchError(f"batch_size and positions_per_image must be >= 1, got {batch_size}, "
                              f"{positions_per_image}")
    targets_from = inputs_from if targets_from is None else targets_from
    same = targets_from is inputs_from
    for name in layers:
        check_layer(inputs_from.get_submodule(name), name)
    blocks = {name: residual_block(inputs_from, name) for name in layers} if residual and not same else {}
    blocks = {k: v for k, v in blocks.items() if v is not None}
    order = {m: i for i, m in enumerate(targets_from.modules())}
    last_target = max((targets_from.get_submodule(n) for n in layers), key=order.get)
    order = {m: i for i, m in enumerate(inputs_from.modules())}
    last_input = max((inputs_from.get_submodule(n) for n in layers), key=order.get)
    gen = torch.Generator(device=data.device).manual_seed(seed)
    with evaluating(inputs_from, targets_from):
        for images, _ in data.sample_batches(num_images, batch_size, gen):
            positions: Dict[str, torch.Tensor] = {}
            xs: Dict[str, torch.Tensor] = {}
            ys: Dict[str, torch.Tensor] = {}
            block_inputs: Dict[Tuple[str, bool], torch.Tensor] = {}

            def where(name, output):
                if output.dim() == 2:
                    return None
                if name not in positions:
                    b, _, h, w = output.shape
                    positions[name] = draw_positions(b, h, w, positions_per_image, gen, output.device)
                return positions[name]

            def layer_hook(name, take_x, take_y):
                def hook(module, inputs, output):
                    flat = where(name, output)
                    if take_x:
                        xs[name] = inputs[0].unsqueeze(-1) if flat is None else patches(module, inputs[0], flat)
                    if take_y:
                        y = output if flat is None else at_positions(output, flat)
                        ys[name] = y - module.bias if module.bias is not None else y
                return hook

            def block_hook(name, is_target):
                def hook(module, inputs):
                    block_inputs[(name, is_target)] = inputs[0]
                return hook

            hooks = [(targets_from.get_submodule(n), False, layer_hook(n, same, True)) for n in layers]
            hooks += [(targets_from.get_submodule(b.block), True, block_hook(n, True)) for n, b in blocks.items()]
            _forward(targets_from, images, hooks, last_target)
            if not same:
                hooks = [(inputs_from.get_submodule(n), False, layer_hook(n, True, False)) for n in layers]
                hooks += [(inputs_from.get_submodule(b.block), True, block_hook(n, False)) for n, b in blocks.items()]
                _forward(inputs_from, images, hooks, last_input)
            for name, r in blocks.items():
                block = inputs_from.get_submodule(r.block)
                gap = at_positions(block.shortcut(block_inputs[(name, True)] - block_inputs[(name, False)]),
                                   positions[name])
                if r.bn is not None:
                    bn = inputs_from.get_submodule(r.bn)
                    a = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                    eps = 1e-2 * a.square().mean().sqrt()
                    gap = gap * (a / (a.square() + eps.square()))
                ys[name] = ys[name] + gap
            yield {n: Samples(xs[n], ys[n]) for n in layers}
