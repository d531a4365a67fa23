"""torchvision's transformers (``model=torchvision model.name=vit_b_16``, ``swin_t``, ...),
pruned as a :class:`~prunebench.models.library.LibraryModel` by their MLP hidden units
(:mod:`prunebench.models.units`: the first linear layer's rows, the second's columns).

Their heads stay: ``nn.MultiheadAttention`` (ViT) and Swin's window attention split the
embedding width into heads of width ``dim / heads``, so a head cannot go alone. Their
embedding width stays too: torch-pruning's graph does not carry it through their reshapes
to the configured width (a pruned ``vit_b_16`` or ``swin_t`` fails its forward pass), so
the graph is off for them. The other torchvision models keep the graph path
(:mod:`prunebench.models.torchvision_models`). A ViT is built for the data set's image
size (``image_size``; torchvision's default is 224)."""
from typing import Any, Dict, List, Optional

from prunebench.errors import PrunebenchError
from prunebench.models import torchvision_models
from prunebench.models.library import LibraryModel

PREFIXES = ("vit_", "swin_")  # torchvision's transformer classifiers: ViT, Swin and Swin V2


def spec_from_config(cfg, in_channels: int, num_classes: int, image_size: Optional[int] = None) -> Dict[str, Any]:
    """A transformer's spec (arch ``torchvision_transformer``), else torchvision's graph path."""
    spec = torchvision_models.spec_from_config(cfg, in_channels, num_classes)
    if not cfg.name.startswith(PREFIXES):
        return spec
    sized = image_size if cfg.name.startswith("vit_") else None
    return {**spec, "arch": "torchvision_transformer", "image_size": sized}


class TorchvisionTransformer(LibraryModel):
    def __init__(self, name: str, num_classes: int, image_size: Optional[int] = None,
                 keep: Optional[Dict[str, List[int]]] = None):
        import torchvision

        if name not in torchvision.models.list_models(module=torchvision.models) or not name.startswith(PREFIXES):
            raise PrunebenchError(f"{name!r} is not one of torchvision's transformer classifiers ({', '.join(PREFIXES)}"
                                  f"...); see torchvision.models.list_models()")
        options = {"image_size": image_size} if image_size else {}
        net = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **options)
        base = {"arch": "torchvision_transformer", "name": name, "num_classes": num_classes,
                "image_size": image_size}
        super().__init__(net, base, keep, image_size or 224, graph=False)

    def torchvision_name(self) -> str:
        return self.spec["name"]

    def load_torchvision_state_dict(self, state: Dict) -> None:
        self.net.load_state_dict(state)
