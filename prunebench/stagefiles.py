"""What each file of a finished stage must hold, checked when a finished stage is read.

A file that parses but holds the wrong thing (``arch.json`` of ``{}``, a ``model.pt`` whose
tensors are not the architecture's, a ``metrics.json`` of ``{"status": "ok"}`` alone) is an
:class:`~prunebench.atomic.UnreadableFile` naming it, as a truncated one is: the stage is then
unreadable (:class:`prunebench.stages.UnreadableStage`), and ``retry_failed=true`` sets the file
aside and trains the stage again.

- ``metrics.json``: an object whose ``status`` is ``ok`` or ``failed``; an ok stage's holds the
  numbers every row shows (:data:`OK_METRICS`).
- ``arch.json``: a model spec that builds (on the meta device: no weights allocated).
- ``model.pt``: that model's state dict, every tensor of the right shape (a sparse stage's also
  holds what its method attached for training).
- ``mask.pt`` (a weight-level pruned stage: its metrics hold ``density``): one tensor of the
  shape of each pruned weight."""
from pathlib import Path
from typing import Any, Dict

import torch

from prunebench import atomic

OK_METRICS = ("acc1", "params", "flops")  # numbers a finished ok stage must hold
STATUSES = ("ok", "failed")


def wrong(path: Path, what: str) -> atomic.UnreadableFile:
    return atomic.UnreadableFile(path, ValueError(what))


def check_metrics(path: Path, metrics: Any) -> Dict[str, Any]:
    if not isinstance(metrics, dict) or metrics.get("status") not in STATUSES:
        raise wrong(path, f"no status {' or '.join(STATUSES)}")
    if metrics["status"] == "ok":
        missing = [k for k in OK_METRICS if not isinstance(metrics.get(k), (int, float))]
        if missing:
            raise wrong(path, f"an ok stage without its {', '.join(missing)}")
    return metrics


def meta_model(folder: Path):
    """The model ``arch.json`` describes, built on the meta device."""
    from prunebench import models

    path = Path(folder) / "arch.json"
    spec = atomic.read_json(path)
    if not isinstance(spec, dict) or spec.get("arch") not in models.ARCHS:
        raise wrong(path, f"no model spec (an object whose arch is one of {', '.join(sorted(models.ARCHS))})")
    try:
        with torch.device("meta"):
            return models.build(spec)
    except Exception as e:  # noqa: BLE001 - any spec the builder refuses is a damaged file
        raise atomic.UnreadableFile(path, e) from e


def check_state(path: Path, state: Any, expected: Dict[str, torch.Tensor], extra_allowed: bool = False) -> None:
    """``state`` holds a tensor of the expected shape under every expected name, and nothing else
    (``extra_allowed``: other tensors too, such as what a method attached to a sparse stage's model)."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise wrong(path, "no dict of tensors")
    missing = sorted(set(expected) - set(state))
    extra = [] if extra_allowed else sorted(set(state) - set(expected))
    if missing or extra:
        raise wrong(path, f"the tensors do not match arch.json (missing {missing[:3]}, unexpected {extra[:3]})")
    shapes = [k for k, v in expected.items() if tuple(state[k].shape) != tuple(v.shape)]
    if shapes:
        raise wrong(path, f"tensors of the wrong shape for arch.json: {shapes[:3]}")


def check_model(folder: Path) -> None:
    folder = Path(folder)
    model = meta_model(folder)
    path = folder / "model.pt"
    check_state(path, atomic.load(path), model.state_dict(), extra_allowed=True)  # a sparse stage's attached modules


def check_masks(folder: Path) -> None:
    folder = Path(folder)
    model = meta_model(folder)
    path = folder / "mask.pt"
    masks = atomic.load(path)
    params = dict(model.named_parameters())
    if not isinstance(masks, dict) or not masks or not all(isinstance(v, torch.Tensor) for v in masks.values()):
        raise wrong(path, "no dict of mask tensors")
    strangers = sorted(k for k in masks if k not in params)
    if strangers:
        raise wrong(path, f"masks of weights the model does not have: {strangers[:3]}")
    check_state(path, masks, {k: params[k] for k in masks})


def check(folder: Path, metrics: Dict[str, Any]) -> None:
    """Every file a finished ok stage must hold, checked; :class:`~prunebench.atomic.UnreadableFile`
    (or FileNotFoundError) on the first one that fails."""
    check_model(folder)
    if metrics.get("density") is not None:  # a weight-level pruned stage: its masks
        check_masks(folder)
