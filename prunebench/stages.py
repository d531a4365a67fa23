"""Stages cached by content. A stage's folder is ``<kind>-<hash>``, the hash of
exactly the settings that change its result, with settings at their schema
default left out, so adding a setting renames nothing. A finished stage holds
``metrics.json``; an unfinished one resumes from ``checkpoint.pt``; ``lock``
keeps two jobs from writing one stage at once: a job that finds a stage locked
looks at it again later (up to ``lock_timeout`` seconds; the scheduler trains other
stages meanwhile) and then reuses what the other job wrote. Every file is written atomically (:mod:`prunebench.atomic`). Under torchrun
only rank 0 writes (``prunebench.distributed``)."""
import dataclasses
import hashlib
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any, Dict, Iterable, Optional

from omegaconf import DictConfig, OmegaConf

from prunebench import atomic, distributed
from prunebench.errors import PrunebenchError

log = logging.getLogger(__name__)


class StageBusy(PrunebenchError):
    """Another job held the stage's lock for longer than the job would wait."""


class UnreadableStage(PrunebenchError):
    """A finished stage whose metrics, architecture or weights cannot be read."""


def _defaults(node: DictConfig) -> Dict[str, Any]:
    schema = OmegaConf.get_type(node)
    if schema is None or not dataclasses.is_dataclass(schema):
        return {}
    return OmegaConf.to_container(OmegaConf.structured(schema), resolve=False)


def settings(node: DictConfig, exclude: Iterable[str] = ()) -> Dict[str, Any]:
    """The values of a config node that differ from its schema's defaults."""
    values = OmegaConf.to_container(node, resolve=True)
    defaults = _defaults(node)
    out = {}
    for k, v in values.items():
        if k in exclude:
            continue
        child = node[k] if isinstance(node[k], DictConfig) else None
        if child is not None and dataclasses.is_dataclass(OmegaConf.get_type(child)):
            v = settings(child)
            if not v:
                continue
        elif k in defaults and defaults[k] == v:
            continue
        out[k] = v
    return out


def digest(values: Dict[str, Any]) -> str:
    text = json.dumps(values, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Stage:
    def __init__(self, root: Path, kind: str, values: Dict[str, Any]):
        self.kind, self.values = kind, values
        self.key = digest({"stage": kind, **values})
        self.dir = Path(root) / f"{kind}-{self.key}"

    def __repr__(self) -> str:
        return f"Stage({self.dir})"

    @property
    def checkpoint(self) -> Path:
        return self.dir / "checkpoint.pt"

    def result(self) -> Optional[Dict[str, Any]]:
        """The metrics of a finished stage, or None. :class:`UnreadableStage` when its
        ``metrics.json`` does not parse or, for a stage that finished ok, its
        ``arch.json`` or ``model.pt`` is missing or cannot be read."""
        path = self.dir / "metrics.json"
        if not path.exists():
            return None
        try:
            metrics = atomic.read_json(path)
            if not isinstance(metrics, dict) or "status" not in metrics:
                raise atomic.UnreadableFile(path, ValueError("no status"))
            if metrics["status"] == "ok":
                atomic.read_json(self.dir / "arch.json")
                atomic.load(self.dir / "model.pt")
        except (atomic.UnreadableFile, FileNotFoundError) as e:
            what = str(e) if isinstance(e, atomic.UnreadableFile) else f"{e.filename} is missing"
            raise UnreadableStage(f"the finished stage {self.dir} is unreadable: {what}. Retrain it with "
                                  f"retry_failed=true, or delete {self.dir}") from e
        return metrics

    def finish(self, metrics: Dict[str, Any]) -> Dict[str, Any]:
        if not distributed.is_main():  # under torchrun rank 0 writes the stage
            return metrics
        atomic.write_json(self.dir / "metrics.json", metrics)
        return metrics

    def reset(self) -> None:
        if not distributed.is_main():
            return
        for name in ("metrics.json", "checkpoint.pt"):
            (self.dir / name).unlink(missing_ok=True)

    def _take(self, path: Path) -> bool:
        """Create the lock file holding "host pid"; False when it exists already."""
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        os.write(fd, f"{socket.gethostname()} {os.getpid()}".encode())
        os.close(fd)
        return True

    @staticmethod
    def _owner(path: Path):
        try:
            host, _, pid = path.read_text().partition(" ")
        except FileNotFoundError:
            return None
        return host, pid.strip()

    def take(self) -> Optional[str]:
        """Take the stage's lock without waiting: None when this job holds it now, else who holds
        it ("host (pid N)"). A lock left by a dead process on this host is taken over. Under
        torchrun rank 0 holds it for every rank (the other ranks always get None)."""
        if not distributed.is_main():
            return None
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / "lock"
        while not self._take(path):
            owner = self._owner(path)
            if owner is None:
                continue  # released between our attempt and the read
            host, pid = owner
            if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
                path.unlink(missing_ok=True)  # left by a process that died: take over
                continue
            return f"{host} (pid {pid or '?'})"
        atomic.write_json(self.dir / "settings.json", {"stage": self.kind, **self.values})
        return None

    def release(self) -> None:
        if distributed.is_main():
            (self.dir / "lock").unlink(missing_ok=True)

    def busy(self, holder: str, timeout: float) -> StageBusy:
        """The error of a job that waited ``timeout`` seconds for the lock ``holder`` keeps."""
        return StageBusy(f"{self.dir} is being written by {holder}; waited {timeout:g} s (lock_timeout). Rerun "
                         f"when that job is done (its result is reused), raise lock_timeout=SECONDS, or delete "
                         f"{self.dir / 'lock'} if that job is gone")


def finished(stage: Stage, retry_failed: bool) -> Optional[Dict[str, Any]]:
    """The stage's finished result as rank 0 reads it, on every rank (under torchrun rank 0's
    reading decides), or None when it must be trained: not there, or (``retry_failed``) failed
    or unreadable."""
    return distributed.broadcast(_finished(stage, retry_failed) if distributed.is_main() else None)


def _finished(stage: Stage, retry_failed: bool) -> Optional[Dict[str, Any]]:
    try:
        result = stage.result()
    except UnreadableStage as e:
        if not retry_failed:
            raise
        log.warning("%s; retrained (retry_failed=true)", e)
        return None
    if result is not None and result["status"] == "failed" and retry_failed:
        return None
    return result


def begin(stage: Stage) -> None:
    """Before a locked stage's work: what a failed or unreadable earlier attempt left goes (retry_failed)."""
    if distributed.is_main() and (stage.dir / "metrics.json").exists():
        stage.reset()


def conclude(stage: Stage, result: Dict[str, Any]) -> Dict[str, Any]:
    """Write a locked stage's result (rank 0), drop its checkpoint, and give every rank rank 0's result."""
    stage.finish(result)
    if distributed.is_main():
        stage.checkpoint.unlink(missing_ok=True)
    return distributed.broadcast(result)
