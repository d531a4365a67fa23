"""``prunebench-report`` on odd folders: what it cannot read (a foreign results.csv, a config.yaml
that is not YAML, a damaged widths.json or history.csv) is skipped and named in one warning line;
a sweep job that left no results.csv, and a line with fewer seeds than its sweep, are warned about;
a folder it cannot write is named in one line (exit 2), and ``--out`` writes elsewhere."""
import json
import logging
import os
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from prunebench.report import aggregate
from tests.conftest import ROOT
from tests.disks import read_only
from tests.report_fixtures import accs, config, write_run


def sweep(folder, seeds=(0, 1)):
    for seed in seeds:
        write_run(folder / f"{seed}_l1_norm_s{seed}", seed, accs(90.0 + seed, 91.0), config(seed))
    return folder


def foreign_csv(folder):
    (folder / "notes").mkdir()
    path = folder / "notes" / "results.csv"
    path.write_text("name,score\nmine,3\n")
    return path


def not_yaml(folder):
    run = write_run(folder / "9_l1_norm_s9", 9, accs(90.0, 91.0), config(9))
    path = run / "config.yaml"
    path.write_text("model: [unclosed\n  : :")
    return path


def damaged_widths(folder):
    path = folder / "stages" / "0_l1_norm_s0-pruned" / "widths.json"
    path.write_text("{ half")
    return path


def damaged_history(folder):
    path = folder / "stages" / "1_l1_norm_s1-finetune" / "history.csv"
    path.write_text("when,what\n1,2\n")
    return path


UNREADABLE = {"a foreign results.csv": foreign_csv, "a config.yaml that is not YAML": not_yaml,
              "a damaged widths.json": damaged_widths, "a damaged history.csv": damaged_history}


@pytest.mark.parametrize("case", sorted(UNREADABLE))
def test_what_the_report_cannot_read_is_skipped_and_named(tmp_path, caplog, case):
    folder = sweep(tmp_path / "sweep")
    path = UNREADABLE[case](folder)
    with caplog.at_level(logging.WARNING):
        out = aggregate.report(folder, metric="acc1")
    assert out["runs"] and out["paper"] and out["plots"]  # the readable runs are reported
    named = [r.getMessage() for r in caplog.records if str(path) in r.getMessage()]
    assert named and all("\n" not in m for m in named) and "skipped" in named[0]
    assert {r.seed for r in out["runs"]} == {0, 1}


def test_a_killed_sweep_job_and_the_seeds_it_leaves_out_are_warned_about(tmp_path, caplog):
    folder = sweep(tmp_path / "sweep")
    OmegaConf.save(OmegaConf.create({"hydra": {"overrides": {"task": ["experiment=smoke", "seed=0,1,2"]}}}),
                   folder / "multirun.yaml")
    killed = folder / "2_l1_norm_s2"
    (killed / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(config(2)), killed / ".hydra" / "config.yaml")
    with caplog.at_level(logging.WARNING):
        out = aggregate.report(folder, metric="acc1", plots=False)
    text = caplog.text
    assert f"{killed} holds no results.csv" in text
    assert "2 of the 3 seeds of the sweep" in text and "missing [2]" in text
    [rec] = [r for r in out["summary"] if r["row"] == "finetune"]
    assert rec["runs"] == 2  # the mean covers the seeds that finished, and the warning says so


def test_a_sweep_with_every_seed_is_not_warned_about(tmp_path, caplog):
    folder = sweep(tmp_path / "sweep")
    (folder / "multirun.yaml").write_text(json.dumps({"hydra": {"overrides": {"task": ["seed=range(0,2)"]}}}))
    with caplog.at_level(logging.WARNING):
        aggregate.report(folder, metric="acc1", plots=False)
    assert "seeds of the sweep" not in caplog.text and "holds no results.csv" not in caplog.text


def report_cli(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "50"}
    return subprocess.run([sys.executable, "-m", "prunebench.report.aggregate", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_folder_the_report_cannot_write_is_one_line_and_out_writes_elsewhere(tmp_path, monkeypatch):
    folder = tmp_path / "sweep"
    with read_only(folder, fill=sweep) as how:
        if how is None:  # no read-only folder for root here: the same refusal, in-process
            monkeypatch.setattr(aggregate, "write_summary", lambda s, f: (_ for _ in ()).throw(
                PermissionError(13, "Permission denied", str(f / "summary.csv"))))
            with pytest.raises(Exception, match="--out"):
                aggregate.report(sweep(tmp_path / "other"), plots=False)
            return
        p = report_cli(folder, "--no-plots")
        assert p.returncode == 2, p.stderr[-2000:]
        [line] = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
        assert str(folder) in line and "--out" in line and "Traceback" not in p.stderr
        p = report_cli(folder, "--no-plots", "--out", tmp_path / "elsewhere")
        assert p.returncode == 0, p.stderr[-2000:]
        assert (tmp_path / "elsewhere" / "paper.md").exists() and (tmp_path / "elsewhere" / "summary.csv").exists()
