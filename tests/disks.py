"""Real full, size-limited and read-only folders for the disk tests.

- a full disk: a tmpfs of a few hundred KiB (``mount -t tmpfs``, needs root);
- a read-only folder: a read-only tmpfs for root (for whom ``chmod`` blocks nothing), ``chmod 0o555``
  for anyone else;
- a file-size limit: ``RLIMIT_FSIZE`` in the child process (any user).

Where the mount is not permitted (a container without CAP_SYS_ADMIN) the helpers return None and
the tests check the same path with the failing write simulated in-process."""
import os
import resource
import stat
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional


def _mount(folder: Path, options: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    return p.returncode == 0


def _unmount(folder: Path) -> None:
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@contextmanager
def small_disk(folder: Path, size_kib: int) -> Iterator[Optional[Path]]:
    """``folder`` as a tmpfs of ``size_kib`` KiB, or None where mounting is not permitted."""
    if not _mount(folder, f"size={size_kib}k"):
        yield None
        return
    try:
        yield folder
    finally:
        _unmount(folder)


@contextmanager
def read_only(folder: Path, fill: Optional[Callable[[Path], None]] = None) -> Iterator[Optional[str]]:
    """``folder`` made read-only for this user, after ``fill(folder)`` wrote what it should hold:
    how ("tmpfs ro" or "chmod 555"), or None."""
    if os.geteuid() != 0:
        folder.mkdir(parents=True, exist_ok=True)
        if fill:
            fill(folder)
        folder.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
        try:
            yield "chmod 555"
        finally:
            folder.chmod(0o755)
        return
    if not _mount(folder, "size=8m"):
        yield None
        return
    try:
        if fill:
            fill(folder)
        remounted = subprocess.run(["mount", "-o", "remount,ro", str(folder)], capture_output=True)
        yield "tmpfs ro" if remounted.returncode == 0 else None
    finally:
        _unmount(folder)


def file_size_limit(max_bytes: int):
    """A ``preexec_fn`` limiting the files the child writes to ``max_bytes`` (SIGXFSZ is ignored by
    Python, so a write past it fails with EFBIG)."""
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
    return limit
