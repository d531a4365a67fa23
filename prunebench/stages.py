"""Stages cached by content. A stage's folder is ``<kind>-<hash>``, the hash of
exactly the settings that change its result, with settings at their schema
default left out, so adding a setting renames nothing. A finished stage holds
``metrics.json``; an unfinished one resumes from ``checkpoint.pt``; ``lock``
keeps two jobs from writing one stage at once: a job that finds a stage locked
looks at it again later (up to ``lock_timeout`` seconds; the scheduler trains other
stages meanwhile) and then reuses what the other job wrote. A lock whose owner is gone (a
dead process on this host, or a lock file naming no owner) is taken over at once, and the
temporary files a killed writer left are removed by the job that takes the lock. Every file
is written atomically (:mod:`prunebench.atomic`); what each must hold is checked when a
finished stage is read (:mod:`prunebench.stagefiles`). Under torchrun only rank 0 writes
(``prunebench.distributed``)."""
import dataclasses
import hashlib
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any, Dict, Iterable, Optional

from omegaconf import DictConfig, OmegaConf

from prunebench import atomic, distributed, stagefiles
from prunebench.errors import PrunebenchError, UnwritableFile

log = logging.getLogger(__name__)


class StageBusy(PrunebenchError):
    """Another job held the stage's lock for longer than the job would wait."""


class UnreadableStage(PrunebenchError):
    """A finished stage whose metrics, architecture, weights or masks cannot be read (``path``)."""

    def __init__(self, message: str, path: Optional[Path] = None):
        super().__init__(message)
        self.path = path


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


OWNERLESS_GRACE_S = 2.0  # an ownerless lock younger than this may still be getting its owner written


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


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
        ``metrics.json`` does not parse or holds no result, or, for a stage that finished ok, a
        file it must hold is missing, cannot be read or holds the wrong thing (:mod:`prunebench.stagefiles`)."""
        path = self.dir / "metrics.json"
        if not path.exists():
            return None
        try:
            metrics = stagefiles.check_metrics(path, atomic.read_json(path))
            if metrics["status"] == "ok":
                stagefiles.check(self.dir, metrics)
        except (atomic.UnreadableFile, FileNotFoundError) as e:
            bad = e.path if isinstance(e, atomic.UnreadableFile) else Path(e.filename)
            what = str(e) if isinstance(e, atomic.UnreadableFile) else f"{e.filename} is missing"
            raise UnreadableStage(f"the finished stage {self.dir} is unreadable: {what}. Retrain it with "
                                  f"retry_failed=true (the file is set aside), or delete {self.dir}", bad) from e
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
        """Create the lock file holding "host pid"; False when it exists already. The file is written
        under another name and linked into place, so a lock file is never seen empty while its owner
        writes it (where the file system has no hard links, it is created in place)."""
        owner = f"{socket.gethostname()} {os.getpid()}".encode()
        tmp = path.with_name(f".lock.{os.getpid()}.tmp")
        try:
            tmp.write_bytes(owner)
            try:
                os.link(tmp, path)
                return True
            except FileExistsError:
                return False
            except OSError:  # no hard links here: create it in place
                pass
            finally:
                tmp.unlink(missing_ok=True)
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return False
            os.write(fd, owner)
            os.close(fd)
            return True
        except OSError as e:
            raise UnwritableFile(path, e) from e

    @staticmethod
    def _owner(path: Path):
        try:
            host, _, pid = path.read_text(errors="replace").partition(" ")
        except FileNotFoundError:
            return None
        return host.strip(), pid.strip()

    def take(self) -> Optional[str]:
        """Take the stage's lock without waiting: None when this job holds it now, else who holds
        it ("host (pid N)"). A lock left by a dead process on this host, or one naming no owner
        (empty or garbled), is taken over at once, and the temporary files of a killed writer are
        removed. Under torchrun rank 0 holds it for every rank (the other ranks always get None)."""
        if not distributed.is_main():
            return None
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UnwritableFile(self.dir, e) from e
        path = self.dir / "lock"
        while not self._take(path):
            owner = self._owner(path)
            if owner is None:
                continue  # released between our attempt and the read
            host, pid = owner
            if not host or not pid.isdigit():
                if _age(path) < OWNERLESS_GRACE_S:  # a lock created in place may be read before its owner is written
                    return "a job writing its lock"
                log.warning("%s names no owner (%r); taken over", path, f"{host} {pid}".strip())
                path.unlink(missing_ok=True)
                continue
            if host == socket.gethostname() and not _alive(int(pid)):
                log.info("%s was held by pid %s, which is gone; taken over", path, pid)
                path.unlink(missing_ok=True)  # left by a process that died: take over
                continue
            return f"{host} (pid {pid})"
        try:
            removed = atomic.remove_temporaries(self.dir)
            if removed:
                log.info("%s: removed %d temporary file%s a killed job left", self.dir, removed, "s" * (removed > 1))
            atomic.write_json(self.dir / "settings.json", {"stage": self.kind, **self.values})
        except BaseException:
            path.unlink(missing_ok=True)  # not held after all
            raise
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
        log.warning("the finished stage %s is unreadable (%s); it trains again (retry_failed=true)", stage.dir,
                    e.path.name if e.path else "?")
        return None
    if result is not None and result["status"] == "failed" and retry_failed:
        return None
    return result


def begin(stage: Stage) -> None:
    """Before a locked stage's work: what a failed or unreadable earlier attempt left goes
    (retry_failed); an unreadable file is set aside as ``<name>.unreadable``, not deleted."""
    if not distributed.is_main() or not (stage.dir / "metrics.json").exists():
        return
    try:
        stage.result()
    except UnreadableStage as e:
        if e.path is not None and e.path.exists():
            aside = e.path.with_name(e.path.name + ".unreadable")
            e.path.replace(aside)
            log.warning("%s set aside as %s; the stage trains again (retry_failed=true)", e.path, aside.name)
    stage.reset()


def conclude(stage: Stage, result: Dict[str, Any]) -> Dict[str, Any]:
    """Write a locked stage's result (rank 0), drop its checkpoint, and give every rank rank 0's result."""
    stage.finish(result)
    if distributed.is_main():
        stage.checkpoint.unlink(missing_ok=True)
    return distributed.broadcast(result)
