"""Stages cached by content. A stage's folder is ``<kind>-<hash>``, the hash of
exactly the settings that change its result, with settings at their schema
default left out, so adding a setting renames nothing. A finished stage holds
``metrics.json``; an unfinished one resumes from ``checkpoint.pt``; ``lock``
keeps two jobs from writing one stage at once. Under torchrun only rank 0 writes
(``prunebench.distributed``)."""
import dataclasses
import hashlib
import json
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterable, Optional

from omegaconf import DictConfig, OmegaConf

from prunebench import distributed
from prunebench.errors import PrunebenchError


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
        """The metrics of a finished stage, or None."""
        path = self.dir / "metrics.json"
        return json.loads(path.read_text()) if path.exists() else None

    def finish(self, metrics: Dict[str, Any]) -> Dict[str, Any]:
        if not distributed.is_main():  # under torchrun rank 0 writes the stage
            return metrics
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / "metrics.json.tmp"
        tmp.write_text(json.dumps(metrics, indent=1, default=str))
        os.replace(tmp, self.dir / "metrics.json")
        return metrics

    def reset(self) -> None:
        if not distributed.is_main():
            return
        for name in ("metrics.json", "checkpoint.pt"):
            (self.dir / name).unlink(missing_ok=True)

    @contextmanager
    def lock(self):
        if not distributed.is_main():  # under torchrun rank 0 holds the lock for every rank
            yield self
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "settings.json").write_text(json.dumps({"stage": self.kind, **self.values}, indent=1,
                                                           default=str))
        path = self.dir / "lock"
        me = f"{socket.gethostname()} {os.getpid()}"
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                host, _, pid = path.read_text().partition(" ")
                if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
                    path.unlink(missing_ok=True)  # left by a process that died: take over
                    continue
                raise PrunebenchError(f"{self.dir} is being written by {host} (pid {pid or '?'}); wait for it, "
                                      f"or delete {path} if that job is gone")
            os.write(fd, me.encode())
            os.close(fd)
            break
        try:
            yield self
        finally:
            path.unlink(missing_ok=True)
