"""Disks that refuse a write (full, over quota, a file-size limit, read-only, no permission): one
line naming the path, why and what to do, no traceback; nothing half-written is ever taken as
finished, and once the disk takes files again a rerun gives the table of a clean run."""
import errno
import os
import subprocess
import sys

import pytest

from prunebench import pipeline, validate
from prunebench.errors import PrunebenchError, UnwritableFile
from tests.conftest import ROOT, compose_config, run_cli
from tests.disks import file_size_limit, read_only, small_disk

RUN = ("experiment=smoke", "method=l1_norm", "strategies=[scratch_e]")
REASONS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "quota", errno.EFBIG: "file-size limit",
           errno.EROFS: "read-only", errno.EACCES: "permission denied"}


def table(rows):
    return {r["row"]: (r["acc1"], r["params"], r["flops"], r["epochs"], r["status"]) for r in rows}


def error_lines(p):
    return [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]


def env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "80",
            "PYTHONDONTWRITEBYTECODE": "1"}


@pytest.mark.parametrize("code,name", [(errno.ENOSPC, "checkpoint.pt"), (errno.EDQUOT, "model.pt"),
                                       (errno.EFBIG, "model.pt"), (errno.EROFS, "settings.json"),
                                       (errno.EACCES, "metrics.json")])
def test_a_write_the_disk_refuses_is_one_line_and_a_rerun_loses_nothing(tmp_path, monkeypatch, code, name):
    """The write is refused at its fsync (where NFS and quotas report it), for the file ``name``."""
    clean = table(pipeline.run(compose_config(*RUN, f"cache_dir={tmp_path / 'clean'}")))
    cache = tmp_path / "stages"
    real = os.fsync

    def refusing(fd):
        if os.readlink(f"/proc/self/fd/{fd}").split("/")[-1].startswith(f".{name}."):
            raise OSError(code, os.strerror(code))
        real(fd)
    monkeypatch.setattr(os, "fsync", refusing)
    with pytest.raises(UnwritableFile) as e:
        pipeline.run(compose_config(*RUN, f"cache_dir={cache}"))
    message = str(e.value)
    assert "\n" not in message and f"/{name}:" in message and REASONS[code] in message and "rerun" in message
    assert not list(cache.rglob("*.tmp")), "a temporary file was left"
    assert not list(cache.glob("*/lock")), "a lock was left"
    finished = [d for d in cache.iterdir() if (d / "metrics.json").exists()]
    assert all((d / "model.pt").exists() and (d / "arch.json").exists() for d in finished)
    assert len(finished) < 3, "the stage whose write failed was taken as finished"
    monkeypatch.setattr(os, "fsync", real)
    assert table(pipeline.run(compose_config(*RUN, f"cache_dir={cache}"))) == clean


@pytest.mark.slow
def test_a_file_size_limit_is_one_line_naming_the_file(tmp_path):
    p = subprocess.run([sys.executable, "-m", "prunebench", *RUN, "model.width=0.25", f"cache_dir={tmp_path / 's'}"],
                       cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=300,
                       preexec_fn=file_size_limit(200_000))  # the unpruned model.pt is ~1 MB
    assert p.returncode == 2, p.stderr[-2000:]
    [line] = error_lines(p)
    assert "file-size limit" in line and "ulimit -f" in line and str(tmp_path / "s") in line
    assert "Traceback" not in p.stdout + p.stderr
    assert not list((tmp_path / "s").rglob("*.tmp")) and not list((tmp_path / "s").glob("*/metrics.json"))
    again = run_cli(*RUN, "model.width=0.25", f"cache_dir={tmp_path / 's'}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_the_cache_stays_safe(tmp_path, monkeypatch):
    with small_disk(tmp_path / "disk", 256) as disk:
        if disk is None:  # no tmpfs here: the same failure at the first stage file, in-process
            monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space")))
            with pytest.raises(UnwritableFile, match="the disk is full"):
                pipeline.run(compose_config(*RUN, f"cache_dir={tmp_path / 'disk' / 's'}"))
            return
        p = subprocess.run([sys.executable, "-m", "prunebench", *RUN, "model.width=0.25", f"cache_dir={disk / 's'}"],
                           cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=300)
        assert p.returncode == 2, p.stderr[-2000:]
        [line] = error_lines(p)
        assert "the disk is full (ENOSPC)" in line and str(disk / "s") in line and "Traceback" not in p.stdout + p.stderr
        assert not list((disk / "s").rglob("*.tmp")) and not list((disk / "s").glob("*/metrics.json"))


@pytest.mark.slow
@pytest.mark.parametrize("where", ["cache_dir", "hydra.run.dir"])
def test_a_read_only_folder_is_refused_before_anything_trains(tmp_path, monkeypatch, where):
    folder = tmp_path / "ro"
    with read_only(folder) as how:
        if how is None:  # no way to make a folder read-only for root here: the check itself, in-process
            monkeypatch.setattr("tempfile.TemporaryFile", lambda **k: (_ for _ in ()).throw(
                OSError(errno.EROFS, "Read-only file system")))
            with pytest.raises(PrunebenchError, match="cannot be written"):
                validate.check_cache(compose_config(*RUN, f"cache_dir={folder / 's'}"))
            return
        cache = tmp_path / "s" if where == "hydra.run.dir" else folder / "s"
        p = subprocess.run([sys.executable, "-m", "prunebench", *RUN, f"cache_dir={cache}", f"{where}={folder / 'x'}"]
                           if where == "hydra.run.dir" else
                           [sys.executable, "-m", "prunebench", *RUN, f"cache_dir={cache}"],
                           cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=300)
        assert p.returncode == 2, (how, p.stderr[-2000:])
        [line] = error_lines(p)
        assert str(folder) in line and ("read-only" in line.lower() or "permission" in line.lower()), line
        assert "Traceback" not in p.stdout + p.stderr
        assert not (tmp_path / "s").exists(), "a stage was written before the refusal"
