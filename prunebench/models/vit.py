"""A Vision Transformer for small images (Dosovitskiy et al., "An Image is Worth 16x16
Words", ICLR 2021), with patch 4 for CIFAR-size inputs, whose attention heads and MLP
hidden units are channel groups like a CNN's filters.

Layout: a patch embedding (a ``patch`` x ``patch`` convolution with stride ``patch``),
a class token and learned position embeddings, ``depth`` pre-norm blocks
``x + attn(LN(x))``, ``x + mlp(LN(x))`` with GELU, a final LayerNorm and a linear head
on the class token (``classifier``, the name weight-level methods skip). Initialisation
as DeiT/timm (Touvron et al., ICML 2021): linear weights, class token and position
embeddings truncated N(0, 0.02²), zero biases, LayerNorm scale 1.

The attention's weights are held per head, so that a head is one index of an axis:
``attn.qkv.weight`` is (heads, 3, head_dim, dim) (q, k and v rows of each head) and
``attn.proj.weight`` is (dim, heads, head_dim). A head is then one "filter" of the
group ``block{i}_heads``: the producer ``attn.qkv`` (axis 0 of its weight and bias),
the consumer ``attn.proj`` (axis 1), and removing it removes its q, k and v rows and
the projection's input columns together. ``block{i}_mlp`` is the MLP's hidden units:
``mlp.fc1``'s rows (and bias), ``mlp.fc2``'s input columns. Generic surgery
(:mod:`prunebench.pruning.surgery`) cuts both, and filter criteria score a head by its
q/k/v rows as they score a filter by its weights.

The embedding width (the residual stream every block reads and writes, with the
position embeddings and every LayerNorm) is not a group: methods do not prune it;
``model.width`` scales it (and the MLP) for a smaller model of the family.

A pruned model is its spec: per-block head counts and MLP widths."""
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from prunebench.errors import PrunebenchError
from prunebench.models.groups import ChannelGroup

INIT_STD = 0.02  # DeiT/timm: trunc_normal_(std=.02) for linear weights and the embeddings


def spec_from_config(cfg, in_channels: int, num_classes: int, image_size: Optional[int] = None) -> Dict[str, Any]:
    """The unpruned spec: ``model.width`` scales the embedding width (heads keep their count,
    each narrower) and the MLP with it."""
    if image_size is None:
        raise PrunebenchError("a ViT needs the data set's image size to size its position embeddings")
    if cfg.patch < 1 or image_size % cfg.patch:
        raise PrunebenchError(f"model.patch={cfg.patch} must divide the data set's image size {image_size}; "
                              f"pick a divisor (e.g. 4 for 32x32 CIFAR, 2 or 4 for 16x16 images)")
    if cfg.heads < 1 or cfg.depth < 1 or cfg.dim < 1:
        raise PrunebenchError(f"model.depth ({cfg.depth}), model.dim ({cfg.dim}) and model.heads ({cfg.heads}) "
                              f"must be at least 1")
    if cfg.dim % cfg.heads:
        raise PrunebenchError(f"model.dim={cfg.dim} must be a multiple of model.heads={cfg.heads}")
    head_dim = max(1, round(cfg.dim * cfg.width / cfg.heads))
    dim = head_dim * cfg.heads
    hidden = max(1, round(dim * cfg.mlp_ratio))
    return {"arch": "vit", "image_size": image_size, "patch": cfg.patch, "in_channels": in_channels,
            "num_classes": num_classes, "dim": dim, "head_dim": head_dim, "heads": [cfg.heads] * cfg.depth,
            "mlp": [hidden] * cfg.depth}


def _trunc_normal(t: torch.Tensor) -> None:
    nn.init.trunc_normal_(t, std=INIT_STD, a=-2 * INIT_STD, b=2 * INIT_STD)


class HeadsQKV(nn.Module):
    """q, k and v of every head: ``weight`` (heads, 3, head_dim, dim), ``bias`` (heads, 3, head_dim).
    Output (3, batch, heads, tokens, head_dim)."""

    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.dim, self.heads, self.head_dim = dim, heads, head_dim
        self.weight = nn.Parameter(torch.empty(heads, 3, head_dim, dim))
        self.bias = nn.Parameter(torch.empty(heads, 3, head_dim))

    @property
    def out_channels(self) -> int:
        """The group's width: heads."""
        return self.weight.shape[0]

    def forward(self, x):
        b, n, _ = x.shape
        h = self.weight.shape[0]
        t = F.linear(x, self.weight.flatten(0, 2), self.bias.flatten())  # (b, n, h * 3 * head_dim)
        return t.view(b, n, h, 3, self.head_dim).permute(3, 0, 2, 1, 4)

    def own_flops(self, output: torch.Tensor) -> int:
        return 2 * output.numel() * self.dim

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.weight.shape[0]}, head_dim={self.head_dim}"


class HeadsProjection(nn.Module):
    """The output projection reading every head: ``weight`` (dim, heads, head_dim), ``bias`` (dim)."""

    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.dim, self.head_dim = dim, head_dim
        self.weight = nn.Parameter(torch.empty(dim, heads, head_dim))
        self.bias = nn.Parameter(torch.empty(dim))

    def forward(self, o):  # o: (b, heads, n, head_dim)
        b, h, n, d = o.shape
        return F.linear(o.transpose(1, 2).reshape(b, n, h * d), self.weight.flatten(1), self.bias)

    def own_flops(self, output: torch.Tensor) -> int:
        return 2 * output.numel() * self.weight.shape[1] * self.head_dim

    def extra_repr(self) -> str:
        return f"heads={self.weight.shape[1]}, head_dim={self.head_dim}, dim={self.dim}"


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.qkv = HeadsQKV(dim, heads, head_dim)
        self.proj = HeadsProjection(dim, heads, head_dim)
        self.scale = head_dim ** -0.5

    def forward(self, x):
        q, k, v = self.qkv(x)
        attn = (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)
        return self.proj(attn @ v)


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int, hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, head_dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, hidden)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """A ViT built from its spec; ``heads`` and ``mlp`` list each block's width."""

    transformer = True  # structured methods must score heads and MLP units (Method.check_transformer)
    folds_constants = False  # surgery drops removed units as they are (no ReLU(BN) constants to carry)

    def __init__(self, image_size: int, patch: int, in_channels: int, num_classes: int, dim: int, head_dim: int,
                 heads: Sequence[int], mlp: Sequence[int]):
        super().__init__()
        if len(heads) != len(mlp) or not heads:
            raise ValueError(f"a ViT lists one head count and one MLP width per block, got {list(heads)}, {list(mlp)}")
        if min(heads) < 1 or min(mlp) < 1:
            raise ValueError(f"every block keeps one head and one MLP unit at least, got {list(heads)}, {list(mlp)}")
        self.spec = {"arch": "vit", "image_size": image_size, "patch": patch, "in_channels": in_channels,
                     "num_classes": num_classes, "dim": dim, "head_dim": head_dim,
                     "heads": [int(h) for h in heads], "mlp": [int(m) for m in mlp]}
        self.tokens = (image_size // patch) ** 2 + 1
        self.patch_embed = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.tokens, dim))
        self.blocks = nn.ModuleList(Block(dim, h, head_dim, m) for h, m in zip(heads, mlp))
        self.norm = nn.LayerNorm(dim)
        self.classifier = nn.Linear(dim, num_classes)
        if not self.pos_embed.is_meta:
            self.reset_weights()

    def reset_weights(self) -> None:
        _trunc_normal(self.cls_token)
        _trunc_normal(self.pos_embed)
        for m in self.modules():
            if isinstance(m, (nn.Linear, HeadsQKV, HeadsProjection)):
                _trunc_normal(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.classifier(self.norm(x)[:, 0])

    def channel_groups(self) -> List[ChannelGroup]:
        out = []
        for i in range(len(self.blocks)):
            out.append(ChannelGroup(f"block{i}_heads", f"blocks.{i}.attn.qkv", None, (f"blocks.{i}.attn.proj",)))
            out.append(ChannelGroup(f"block{i}_mlp", f"blocks.{i}.mlp.fc1", None, (f"blocks.{i}.mlp.fc2",)))
        return out

    def spec_with_widths(self, widths: Dict[str, int], selections: Optional[Dict] = None) -> Dict[str, Any]:
        n = len(self.spec["heads"])
        return {**self.spec,
                "heads": [int(widths.get(f"block{i}_heads", self.spec["heads"][i])) for i in range(n)],
                "mlp": [int(widths.get(f"block{i}_mlp", self.spec["mlp"][i])) for i in range(n)]}

    def width_counter(self, input_shape, measure: str = "flops"):
        """widths -> FLOPs (of one image, as torch's FlopCounterMode counts them: 2 per
        multiply-add of every matrix product and convolution) or parameters."""
        spec = self.spec
        d, hd, t = spec["dim"], spec["head_dim"], self.tokens
        patches = t - 1
        conv = d * spec["in_channels"] * spec["patch"] ** 2
        n = len(spec["heads"])

        def widths_of(widths):
            return [(int(widths.get(f"block{i}_heads", spec["heads"][i])),
                     int(widths.get(f"block{i}_mlp", spec["mlp"][i]))) for i in range(n)]

        if measure == "flops":
            def count(widths: Dict[str, int]) -> int:
                total = 2 * patches * conv + 2 * d * spec["num_classes"]
                for h, m in widths_of(widths):
                    total += 2 * t * d * 3 * h * hd  # q, k, v
                    total += 2 * 2 * h * t * t * hd  # q k^T and attention x v
                    total += 2 * t * h * hd * d  # projection
                    total += 2 * 2 * t * d * m  # fc1, fc2
                return total
        elif measure == "params":
            fixed = conv + d + d + t * d + 2 * d + d * spec["num_classes"] + spec["num_classes"]

            def count(widths: Dict[str, int]) -> int:
                total = fixed
                for h, m in widths_of(widths):
                    total += 4 * d  # two LayerNorms
                    total += h * 3 * hd * (d + 1) + d * h * hd + d  # qkv, projection
                    total += m * (d + 1) + d * m + d  # fc1, fc2
                return total
        else:
            raise PrunebenchError(f"measure must be 'flops' or 'params', got {measure!r}")
        return count
