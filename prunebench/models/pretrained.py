"""torchvision's ImageNet weights for the unpruned model (``model.pretrained=true``),
through torchvision's weights API (``get_model(name, weights="DEFAULT")``; the
download goes to torchvision's cache, ``$TORCH_HOME``). A model that can take them
names its torchvision counterpart (``torchvision_name()``) and maps the state dict
(``load_torchvision_state_dict``)."""
from torch import nn

from prunebench.errors import PrunebenchError


def load_pretrained(model: nn.Module) -> None:
    """Load torchvision's default ImageNet weights into ``model`` in place."""
    if not hasattr(model, "load_torchvision_state_dict"):
        raise PrunebenchError(f"model.pretrained=true: {type(model).__name__} has no torchvision counterpart; "
                              f"use an ImageNet model (vgg11_bn, vgg16_bn, resnet34, resnet50, torchvision)")
    import torchvision

    name = model.torchvision_name()
    try:
        reference = torchvision.models.get_model(name, weights="DEFAULT")
    except Exception as e:  # offline, proxy, disk
        raise PrunebenchError(f"model.pretrained=true: torchvision could not give the weights of {name} "
                              f"({type(e).__name__}: {e}); put the file in torchvision's cache ($TORCH_HOME) "
                              f"or set model.pretrained=false") from e
    try:
        model.load_torchvision_state_dict(reference.state_dict())
    except RuntimeError as e:  # missing keys or other shapes: not the unpruned torchvision model
        raise PrunebenchError(f"model.pretrained=true needs torchvision's {name} as it is (width 1, 3 input "
                              f"channels, 1000 classes): {str(e).splitlines()[0]}") from e
