"""Any timm model (``model=timm model.name=deit_tiny_patch16_224``; timm is an optional
extra: ``pip install prunebench[timm]``), random-initialised, pruned as a
:class:`~prunebench.models.library.LibraryModel`: attention heads and MLP units by their
rows and columns, a ViT's embedding width and a CNN's filters through torch-pruning's
dependency graph.

A pruned model is its spec, ``{"arch": "timm", "name", "num_classes", "image_size",
"options", "keep": {...}}``. ``options`` go to
``timm.create_model`` (``depth``, ``embed_dim``, ``num_heads``, ``patch_size`` ...). A
transformer's attention runs unfused (``fused_attn = False``: the same arithmetic, and
torch's FLOP counter sees its matrix products)."""
from typing import Any, Dict, List, Optional

from torch import nn

from prunebench.errors import PrunebenchError
from prunebench.models.library import LibraryModel


def _timm():
    try:
        import timm
    except ImportError as e:
        raise PrunebenchError("model=timm needs timm: pip install timm (or pip install prunebench[timm])") from e
    return timm


def spec_from_config(cfg, in_channels: int, num_classes: int, image_size: Optional[int] = None) -> Dict[str, Any]:
    if cfg.name == "timm":
        raise PrunebenchError("model=timm needs the timm model's name: model.name=deit_tiny_patch16_224 "
                              "(any of timm.list_models())")
    if cfg.width != 1.0:
        raise PrunebenchError("model.width does not apply to timm models; give their widths in model.options "
                              "(e.g. model.options={embed_dim:96}) or leave it at 1.0")
    if in_channels != 3:
        raise PrunebenchError(f"timm models here take RGB images; this data set has {in_channels} channels")
    return {"arch": "timm", "name": cfg.name, "num_classes": num_classes, "image_size": image_size,
            "options": dict(cfg.options), "keep": {}}


def create(name: str, num_classes: int, image_size: Optional[int], options: Dict[str, Any]) -> nn.Module:
    timm = _timm()
    if name not in timm.list_models():
        raise PrunebenchError(f"unknown timm model {name!r}; see timm.list_models() for the names")
    kwargs = {"pretrained": False, "num_classes": num_classes, **options}
    try:  # transformers size their position embeddings from the image; CNNs take no img_size
        net = timm.create_model(name, **({"img_size": image_size} if image_size and "img_size" not in options
                                         else {}), **kwargs)
    except TypeError:
        net = timm.create_model(name, **kwargs)
    for m in net.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False
    return net


class TimmModel(LibraryModel):
    def __init__(self, name: str, num_classes: int, image_size: Optional[int] = None,
                 options: Optional[Dict[str, Any]] = None, keep: Optional[Dict[str, List[int]]] = None):
        options = dict(options or {})
        base = {"arch": "timm", "name": name, "num_classes": num_classes, "image_size": image_size,
                "options": options}
        super().__init__(create(name, num_classes, image_size, options), base, keep, image_size or 224)
