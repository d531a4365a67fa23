"""Errors that reach the user as one clear line instead of a traceback, and that line."""
import errno
import os
from pathlib import Path


class PrunebenchError(Exception):
    """Bad input or missing files: the CLI prints the message and exits with status 2."""


class Diverged(RuntimeError):
    """The training loss became NaN or infinite; the stage is marked failed."""


class UnwritableFile(PrunebenchError):
    """A file or folder that could not be written: a full disk, a file-size limit, no permission."""

    def __init__(self, path: Path, cause: OSError, remedy: str = ""):
        self.path, self.cause = Path(path), cause
        super().__init__(f"could not write {self.path}: {why(cause)}; {remedy or what_to_do(cause)}")


_REASONS = {
    errno.ENOSPC: "the disk is full (ENOSPC)",
    errno.EDQUOT: "the disk quota is used up (EDQUOT)",
    errno.EFBIG: "the file is larger than the file-size limit (EFBIG, ulimit -f)",
    errno.EROFS: "the file system is read-only (EROFS)",
    errno.EACCES: "permission denied (EACCES)",
    errno.EPERM: "operation not permitted (EPERM)",
    errno.ENOTDIR: "a part of the path is a file, not a folder (ENOTDIR)",
    errno.EEXIST: "a file of that name is in the way (EEXIST)",
}


def why(error: OSError) -> str:
    """What an OSError means for a write, in words."""
    if error.errno in _REASONS:
        return _REASONS[error.errno]
    name = errno.errorcode.get(error.errno or 0)
    return f"{error.strerror or error}" + (f" ({name})" if name else "")


def what_to_do(error: OSError) -> str:
    """The next step after a failed write; what was written before stays (stages are written atomically)."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free space there (or point cache_dir= / hydra.run.dir= at another disk) and rerun: finished " \
               "stages are kept and an interrupted one resumes from its last checkpoint"
    if error.errno == errno.EFBIG:
        return "raise the limit (ulimit -f unlimited) and rerun: finished stages are kept and an interrupted " \
               "one resumes from its last checkpoint"
    return "make that folder writable, or point cache_dir= (stages) / hydra.run.dir= (the run folder) at a " \
           "writable one, and rerun"


def main_process() -> bool:
    """Rank 0 under torchrun (read from the environment, so known before the process group exists), else True."""
    return int(os.environ.get("RANK", "0")) == 0


def say_error(message: str, console=None) -> None:
    """``error: MESSAGE`` as one line on stderr, never wrapped (a pipe or a log file gets the line as
    it is) and never read as markup; under torchrun rank 0 alone says it."""
    from rich.console import Console
    from rich.text import Text

    if not main_process():
        return
    console = console or Console(stderr=True)
    console.print(Text.assemble(("error: ", "bold red"), " ".join(str(message).split("\n"))), soft_wrap=True)
