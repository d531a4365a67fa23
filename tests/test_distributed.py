"""One run over two processes: ``torchrun --nproc_per_node=2 -m prunebench`` on the CPU
(gloo backend), against the same run in one process; and an interrupted run resumed."""
import csv
import os
import socket
import subprocess
import sys

import torch

from prunebench import distributed, pipeline
from prunebench.stages import Stage
from tests.conftest import ROOT, compose_config, run_cli

RUN = ("experiment=smoke", "method=l1_norm", "strategies=[scratch_e]", "device=cpu")


def torchrun(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "prunebench", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def rows_of(cwd):
    [run_dir] = (cwd / "outputs" / "runs").iterdir()  # one run folder: rank 0's
    with open(run_dir / "results.csv") as f:
        return list(csv.DictReader(f))


def test_two_processes_train_the_single_process_model(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    p = run_cli(*RUN, f"cache_dir={one / 'stages'}", cwd=one)
    assert p.returncode == 0, p.stderr
    p = torchrun(*RUN, f"cache_dir={two / 'stages'}", "distributed.sync_bn=true", cwd=two)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = rows_of(two)
    assert [r["row"] for r in rows] == ["unpruned", "pruned", "scratch_e"]
    assert all(r["status"] == "ok" for r in rows)
    assert p.stdout.count("scratch_e │") == 1  # rank 0 alone prints the table
    # global BatchNorm statistics: the single-process run's stages, keys included
    names = sorted(d.name for d in (one / "stages").iterdir())
    assert sorted(d.name for d in (two / "stages").iterdir()) == names
    assert not list((two / "stages").glob("*/lock")) and not list((two / "stages").glob("*/checkpoint.pt"))
    unpruned = next(n for n in names if n.startswith("unpruned"))
    a = torch.load(one / "stages" / unpruned / "model.pt", weights_only=True)
    b = torch.load(two / "stages" / unpruned / "model.pt", weights_only=True)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-4, msg=k)
    pruned = next(n for n in names if n.startswith("pruned"))
    assert (two / "stages" / pruned / "widths.json").read_text() == (one / "stages" / pruned / "widths.json").read_text()
    for r1, r2 in zip(rows_of(one), rows):
        assert abs(float(r1["acc1"]) - float(r2["acc1"])) <= 1.0, (r1["row"], r1["acc1"], r2["acc1"])


def test_an_interrupted_run_resumes_from_its_finished_stages(tmp_path, monkeypatch):
    cache = tmp_path / "stages"
    cfg = compose_config(*RUN, f"cache_dir={cache}")
    monkeypatch.setattr(distributed, "world_size", lambda: 2)  # the stage keys of a 2-process run
    run = pipeline.Run(cfg)
    assert run.common["bn_shards"] == 2  # per-shard BatchNorm statistics: stages of their own
    blocked = Stage(cache, *run.stage_values()["scratch_e"])
    blocked.dir.mkdir(parents=True)
    (blocked.dir / "lock").write_text(f"{socket.gethostname()} {os.getpid()}")  # a live job holds scratch_e
    p = torchrun(*RUN, f"cache_dir={cache}", cwd=tmp_path)
    assert p.returncode != 0  # stopped at scratch_e, after unpruned and pruned finished
    done = {d.name.split("-")[0]: d for d in cache.iterdir() if (d / "metrics.json").exists()}
    assert sorted(done) == ["pruned", "unpruned"]
    mtimes = {k: (d / "metrics.json").stat().st_mtime_ns for k, d in done.items()}
    (blocked.dir / "lock").unlink()
    (tmp_path / "again").mkdir()
    p = torchrun(*RUN, f"cache_dir={cache}", cwd=tmp_path / "again")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "unpruned: cached" in p.stdout and "pruned: cached" in p.stdout
    assert {k: (d / "metrics.json").stat().st_mtime_ns for k, d in done.items()} == mtimes
    assert (blocked.dir / "metrics.json").exists() and len(list(cache.iterdir())) == 3
    assert all(r["status"] == "ok" for r in rows_of(tmp_path / "again"))
