"""One run over two processes: ``torchrun --nproc_per_node=2 -m prunebench`` on the CPU
(gloo backend), interrupted, resumed, and compared with the same run in one process."""
import pytest
import csv
import os
import socket
import subprocess
import sys

import torch

from prunebench import data, distributed, protocol
from tests.conftest import ROOT, compose_config, run_cli

RUN = ("experiment=smoke", "method=l1_norm", "strategies=[scratch_e]", "device=cpu")


def torchrun(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "prunebench", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def rows_of(cwd):
    [run_dir] = (cwd / "outputs" / "runs").iterdir()  # one run folder: rank 0's
    with open(run_dir / "results.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_two_processes_resume_and_train_the_single_process_model(tmp_path):
    one, two, again = tmp_path / "one", tmp_path / "two", tmp_path / "again"
    for d in (one, two, again):
        d.mkdir()
    p = run_cli(*RUN, f"cache_dir={one / 'stages'}", cwd=one)
    assert p.returncode == 0, p.stderr
    names = sorted(d.name for d in (one / "stages").iterdir())
    unpruned, pruned, scratch_e = (next(n for n in names if n.startswith(k + "-"))
                                   for k in ("unpruned", "pruned", "scratch_e"))
    # global BatchNorm statistics train the single-process model: same stage keys. A live job
    # holds scratch_e's lock, so the first distributed run's scratch_e row fails
    cache = two / "stages"
    (cache / scratch_e).mkdir(parents=True)
    (cache / scratch_e / "lock").write_text(f"{socket.gethostname()} {os.getpid()}")
    args = (*RUN, f"cache_dir={cache}", "distributed.sync_bn=true")
    p = torchrun(*args, "lock_timeout=0", "strict=true", cwd=two)  # the busy row fails: exit 1
    assert p.returncode != 0
    assert sorted(d.name for d in cache.iterdir() if (d / "metrics.json").exists()) == sorted([unpruned, pruned])
    mtimes = {n: (cache / n / "metrics.json").stat().st_mtime_ns for n in (unpruned, pruned)}

    (cache / scratch_e / "lock").unlink()
    p = torchrun(*args, cwd=again)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "unpruned: cached" in p.stdout and "pruned: cached" in p.stdout  # resumed, not retrained
    assert {n: (cache / n / "metrics.json").stat().st_mtime_ns for n in (unpruned, pruned)} == mtimes
    rows = rows_of(again)
    assert [r["row"] for r in rows] == ["unpruned", "pruned", "scratch_e"]
    assert all(r["status"] == "ok" for r in rows)
    assert p.stdout.count("scratch_e │") == 1  # rank 0 alone prints the table
    assert sorted(d.name for d in cache.iterdir()) == names  # one set of stage folders
    assert not list(cache.glob("*/lock")) and not list(cache.glob("*/checkpoint.pt"))

    a = torch.load(one / "stages" / unpruned / "model.pt", weights_only=True)
    b = torch.load(cache / unpruned / "model.pt", weights_only=True)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-4, msg=k)
    assert (cache / pruned / "widths.json").read_text() == (one / "stages" / pruned / "widths.json").read_text()
    for r1, r2 in zip(rows_of(one), rows):
        assert abs(float(r1["acc1"]) - float(r2["acc1"])) <= 1.0, (r1["row"], r1["acc1"], r2["acc1"])


def test_per_shard_batchnorm_keys_stages_of_its_own(tmp_path, monkeypatch):
    cfg = compose_config(*RUN, f"cache_dir={tmp_path}")
    fingerprint = data.fingerprint(cfg.dataset)  # the data set, loaded once outside the faked process group
    single = protocol.Run(cfg, fingerprint=fingerprint).stage_values()
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    sharded = protocol.Run(cfg, fingerprint=fingerprint).stage_values()
    assert sharded["unpruned"][1]["bn_shards"] == 2 and sharded != single
    cfg.distributed.sync_bn = True
    assert protocol.Run(cfg, fingerprint=fingerprint).stage_values() == single
