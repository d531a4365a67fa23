"""Ctrl-C (a real SIGINT to ``python -m prunebench``) while several trainings are in flight:
every training stops at its last checkpoint, the run exits 130 with one line and no traceback
(no abort), no lock is left, and a rerun gives the table of an uninterrupted run."""
import csv
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, run_cli

# trainings long enough to be interrupted (scratch_b and uniform train ~4x the epochs), a checkpoint every epoch
BASE = ("experiment=smoke", "method=l1_norm", "strategies=[finetune,scratch_e,scratch_b,uniform]", "schedule.epochs=12",
        "train.checkpoint_every=0")
CASES = {
    "retrainings_in_flight": ((), "in flight: finetune, scratch_e, scratch_b, uniform"),
    "two_seeds": (("seeds=[0,1]",), "in flight: seed 0 finetune, seed 0 scratch_e, seed 0 scratch_b, seed 0 uniform, "
                                    "seed 1 finetune"),
}


def interrupted(args, cwd, when: str):
    """Run the CLI, send SIGINT once a log line holds ``when`` and a retraining has written a checkpoint
    (the stage cache under ``cwd/stages``), return (code, out, err)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}  # threads: conftest's
    p = subprocess.Popen([sys.executable, "-m", "prunebench", *args], cwd=cwd, env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as a terminal's Ctrl-C
    out = []
    deadline = time.monotonic() + 300
    for line in p.stdout:
        out.append(line)
        if when in line:
            while not list((cwd / "stages").glob("scratch_b-*/checkpoint.pt")) and time.monotonic() < deadline:
                time.sleep(0.2)
            p.send_signal(signal.SIGINT)
            break
        assert time.monotonic() < deadline, "the trainings never were in flight together"
    rest, err = p.communicate(timeout=120)
    return p.returncode, "".join(out) + rest, err


def table(cwd):
    [run] = [d for d in (cwd / "outputs" / "runs").iterdir() if (d / "results.csv").exists()]
    with open(run / "results.csv") as f:
        return {(r["seed"], r["row"]): (r["acc1"], r["params"], r["flops"], r["epochs"], r["status"])
                for r in csv.DictReader(f)}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_ctrl_c_stops_every_training_and_a_rerun_gives_the_uninterrupted_table(tmp_path, case):
    extra, when = CASES[case]
    cut, whole = tmp_path / "cut", tmp_path / "whole"
    cut.mkdir(), whole.mkdir()
    args = (*BASE, *extra, f"cache_dir={cut / 'stages'}")
    code, out, err = interrupted(args, cut, when)
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 130, err[-2000:]
    assert len(lines) == 1 and "interrupted" in lines[0] and "rerun the same command" in lines[0]
    assert "Traceback" not in out + err and "terminate called" not in err
    stages = cut / "stages"
    assert not list(stages.glob("*/lock")), "a lock was left behind"
    assert list(stages.glob("scratch_b-*/checkpoint.pt")), "an interrupted training kept no checkpoint"
    assert not all((d / "metrics.json").exists() for d in stages.iterdir()), "nothing was interrupted"

    again = run_cli(*args, cwd=cut)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "cached" in again.stdout  # the finished stages were reused
    p = run_cli(*BASE, *extra, f"cache_dir={whole / 'stages'}", cwd=whole)
    assert p.returncode == 0, p.stderr[-2000:]
    assert table(cut) == table(whole)
