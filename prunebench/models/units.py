"""The prunable units of library transformers (timm's ViT/DeiT blocks, torchvision's
ViT and Swin MLPs), found by module type: attention heads and MLP hidden units.

- heads (timm's ``Attention``, ``qkv`` a Linear to 3 x heads x head_dim, ``proj`` reading
  heads x head_dim): removing head h removes rows ``s * H * d + h * d + (0 .. d-1)`` of
  ``qkv`` for s = q, k, v (weight and bias) and columns ``h * d + (0 .. d-1)`` of
  ``proj``; the module's ``num_heads`` and ``attn_dim`` follow. A head is scored by its
  q, k and v rows (:func:`unit_rows`), as a filter by its weights.
- mlp (timm's ``Mlp``, torchvision's two-layer ``MLP`` blocks): removing hidden unit j
  removes row j of the first linear layer (weight and bias) and column j of the second.

Attention modules with a norm over the heads' concatenation (timm's ``scale_norm``), a
gate, or fused q/k/v layouts other than timm's are left whole, and so are gated or
normalised MLPs (their hidden layers are not plain rows)."""
from dataclasses import dataclass
from typing import List, Sequence

import torch
from torch import nn


@dataclass(frozen=True)
class Unit:
    name: str  # group name: the module path with dots as underscores, then _heads (or _mlp where it lacks it)
    kind: str  # heads | mlp
    path: str  # the attention or MLP module
    producer: str  # qkv | fc1 (module path)
    consumer: str  # proj | fc2 (module path)


def _is_timm_attention(m: nn.Module) -> bool:
    return (isinstance(getattr(m, "qkv", None), nn.Linear) and isinstance(getattr(m, "proj", None), nn.Linear)
            and hasattr(m, "num_heads") and hasattr(m, "head_dim") and hasattr(m, "attn_dim")
            and isinstance(getattr(m, "norm", nn.Identity()), nn.Identity) and getattr(m, "gate", None) is None
            and m.qkv.out_features == 3 * m.num_heads * m.head_dim == 3 * m.attn_dim)


def _mlp_layers(m: nn.Module):
    """(first, second) linear-layer names of a plain two-layer MLP, else None."""
    if type(m).__name__ == "Mlp" and isinstance(getattr(m, "fc1", None), nn.Linear) and \
            isinstance(getattr(m, "norm", nn.Identity()), nn.Identity) and m.fc1.out_features == m.fc2.in_features:
        return "fc1", "fc2"
    if isinstance(m, nn.Sequential) and type(m).__name__ in ("MLP", "MLPBlock"):
        linears = [n for n, c in m.named_children() if isinstance(c, nn.Linear)]
        first, second = (m.get_submodule(n) for n in linears[:2]) if len(linears) == 2 else (None, None)
        if first is not None and first.out_features == second.in_features:
            return linears[0], linears[1]
    return None


def find_units(net: nn.Module) -> List[Unit]:
    out = []
    for path, m in net.named_modules():
        stem = path.replace(".", "_")
        if _is_timm_attention(m):
            out.append(Unit(f"{stem}_heads", "heads", path, f"{path}.qkv", f"{path}.proj"))
            continue
        layers = _mlp_layers(m)
        if layers:
            name = stem if stem.endswith("mlp") else f"{stem}_mlp"
            out.append(Unit(name, "mlp", path, f"{path}.{layers[0]}", f"{path}.{layers[1]}"))
    return out


def width(net: nn.Module, unit: Unit) -> int:
    if unit.kind == "heads":
        return net.get_submodule(unit.path).num_heads
    return net.get_submodule(unit.producer).out_features


def unit_rows(net: nn.Module, unit: Unit, weight: torch.Tensor) -> torch.Tensor:
    """``weight`` (shaped like the producer's) as one row per unit: a head's q, k and v rows together."""
    if unit.kind == "heads":
        attn = net.get_submodule(unit.path)
        h, d = attn.num_heads, attn.head_dim
        return weight.reshape(3, h, d, -1).transpose(0, 1).reshape(h, -1)
    return weight.flatten(1)


def _narrow_linear(layer: nn.Linear, index: torch.Tensor, axis: int) -> None:
    index = index.to(layer.weight.device)
    with torch.no_grad():
        layer.weight = nn.Parameter(layer.weight.index_select(axis, index).clone())
        if axis == 0 and layer.bias is not None:
            layer.bias = nn.Parameter(layer.bias.index_select(0, index).clone())
    if axis == 0:
        layer.out_features = index.numel()
    else:
        layer.in_features = index.numel()


def cut(net: nn.Module, unit: Unit, kept: Sequence[int]) -> None:
    """Keep the units ``kept`` lists (indices into the current ones), in place."""
    kept = torch.as_tensor([int(i) for i in kept], dtype=torch.long)
    producer, consumer = net.get_submodule(unit.producer), net.get_submodule(unit.consumer)
    if unit.kind == "mlp":
        _narrow_linear(producer, kept, 0)
        _narrow_linear(consumer, kept, 1)
        return
    attn = net.get_submodule(unit.path)
    h, d = attn.num_heads, attn.head_dim
    cols = (kept[:, None] * d + torch.arange(d)).flatten()
    rows = torch.cat([s * h * d + cols for s in range(3)])
    _narrow_linear(producer, rows, 0)
    _narrow_linear(consumer, cols, 1)
    attn.num_heads = kept.numel()
    attn.attn_dim = kept.numel() * d
