"""Optional experiment loggers (``logger=tensorboard`` or ``logger=wandb``): every
trained stage logs its per-epoch history (train loss, learning rate, test top-1)
as it goes, beside the ``history.csv`` every stage writes anyway.

- TensorBoard: event files in ``<stage>/tensorboard/`` (``tensorboard --logdir outputs/stages``);
  needs the ``tensorboard`` package (``pip install -e ".[loggers]"``).
- Weights & Biases: one W&B run per stage, named by the stage folder, files under the
  stage folder; ``logger.mode: offline`` (the default) needs no network or account
  (``wandb sync`` uploads later)."""
from pathlib import Path
from typing import Any, Dict, Optional

from prunebench import distributed
from prunebench.errors import PrunebenchError


class Logger:
    """Logs nothing: ``logger=none``."""

    def log(self, entry: Dict[str, Any]) -> None:
        """One epoch's history entry: epoch, lr, loss, acc1 (None when not evaluated)."""

    def close(self) -> None:
        pass


class TensorBoardLogger(Logger):
    def __init__(self, folder: Path, kind: str):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise PrunebenchError("logger=tensorboard needs the tensorboard package: pip install tensorboard "
                                  "(or pip install -e '.[loggers]')") from e
        self.kind = kind
        self.writer = SummaryWriter(log_dir=str(Path(folder) / "tensorboard"))

    def log(self, entry):
        step = entry["epoch"]
        for key in ("loss", "lr", "acc1"):
            if entry.get(key) is not None:
                self.writer.add_scalar(f"{self.kind}/{key}", entry[key], step)
        self.writer.flush()

    def close(self):
        self.writer.close()


class WandbLogger(Logger):
    def __init__(self, folder: Path, kind: str, project: str, mode: str, settings: Dict[str, Any]):
        try:
            import wandb
        except ImportError as e:
            raise PrunebenchError("logger=wandb needs the wandb package: pip install wandb "
                                  "(or pip install -e '.[loggers]')") from e
        # several stages train at once (prunebench.scheduler): each its own run, none finishing another's
        self.run = wandb.init(project=project, name=Path(folder).name, group=kind, dir=str(folder), mode=mode,
                              config=settings, reinit="create_new")

    def log(self, entry):
        self.run.log({k: v for k, v in entry.items() if v is not None and k != "epoch"}, step=entry["epoch"])

    def close(self):
        self.run.finish()


def create(cfg, folder: Path, kind: str, settings: Optional[Dict[str, Any]] = None) -> Logger:
    """The logger ``cfg`` (the ``logger`` node) asks for, for the stage in ``folder``."""
    if cfg.name == "none" or not distributed.is_main():  # under torchrun rank 0 logs
        return Logger()
    if cfg.name == "tensorboard":
        return TensorBoardLogger(folder, kind)
    if cfg.name == "wandb":
        return WandbLogger(folder, kind, cfg.project, cfg.mode, settings or {})
    raise PrunebenchError(f"unknown logger {cfg.name!r}; known: none, tensorboard, wandb")
