"""The files of a stage folder, written atomically and read safely.

Every file is written to a temporary file in the same folder and moved over the
target with :func:`os.replace` (atomic on POSIX and Windows within one file
system), so a job killed mid-write leaves the previous file or none, never half
of one (and at most a ``.<name>.*.tmp`` beside it, which :func:`remove_temporaries` clears
once the stage's lock is held). A write that fails (full disk, file-size limit, no
permission) is an :class:`~prunebench.errors.UnwritableFile` naming the path. Tensor
files are read with ``torch.load(weights_only=True)``: tensors, dicts, lists, numbers and
strings only, so a crafted file cannot run code; a file that cannot be read that way is an
:class:`UnreadableFile` naming it."""
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from prunebench.errors import PrunebenchError, UnwritableFile

TEMPORARY = ".*.tmp"  # the names replacing() gives its temporary files


class UnreadableFile(PrunebenchError):
    """A stage file that is truncated, corrupt, or holds more than plain tensors and numbers."""

    def __init__(self, path: Path, cause: BaseException):
        self.path = Path(path)
        reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        super().__init__(f"{self.path} cannot be read ({type(cause).__name__}: {reason[:200]}); it is truncated, "
                         f"corrupt or was not written by prunebench")


@contextmanager
def replacing(path: Path, mode: str = "w") -> Iterator[Any]:
    """An open temporary file beside ``path`` that replaces ``path`` when the block ends without error."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise UnwritableFile(path, e) from e
    try:
        with os.fdopen(fd, mode, **({"newline": ""} if "b" not in mode else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise UnwritableFile(path, e) from e
        if isinstance(e, RuntimeError) and isinstance(e.__cause__ or e.__context__, OSError):
            cause = e.__cause__ or e.__context__  # torch.save wraps the OSError of its writer
            raise UnwritableFile(path, cause) from e
        raise


def remove_temporaries(folder: Path) -> int:
    """Delete the temporary files a killed writer left in ``folder`` (call it holding the folder's
    lock, so no live writer owns them); the number removed."""
    removed = 0
    for tmp in Path(folder).glob(TEMPORARY):
        try:
            tmp.unlink()
            removed += 1
        except FileNotFoundError:
            pass
    return removed


def write_text(path: Path, text: str) -> None:
    with replacing(path) as f:
        f.write(text)


def write_json(path: Path, value: Any) -> None:
    write_text(path, json.dumps(value, indent=1, default=str))


def save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` atomically; ``obj`` must be weights_only-loadable (tensors, dicts,
    lists, tuples, numbers, strings, None)."""
    with replacing(path, "wb") as f:
        torch.save(obj, f)


def load(path: Path, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``; :class:`UnreadableFile` when that fails."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # UnpicklingError (refused or corrupt), RuntimeError (bad zip), EOFError
        raise UnreadableFile(path, e) from e


def read_json(path: Path) -> Any:
    """The JSON value in ``path``; :class:`UnreadableFile` when it does not parse."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise
    except (ValueError, UnicodeDecodeError, OSError) as e:
        raise UnreadableFile(path, e) from e
