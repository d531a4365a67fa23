"""Stage files that load but hold the wrong thing, damaged checkpoints, figures' inputs, ownerless
locks and a killed writer's temporary files: each is named in one line, or recovered from without
losing anything (``retry_failed=true`` sets an unreadable file aside and trains the stage again;
a damaged checkpoint is set aside and its training starts over) to the table of a clean run."""
import json
import logging
import os
import socket
import time
from pathlib import Path

import pytest
import torch

from prunebench import pipeline, report
from prunebench.errors import PrunebenchError
from prunebench.methods import METHODS
from prunebench.report import plots
from prunebench.train import job

RUN = ("method=magnitude", "strategies=[scratch_e]")  # weight-level: its pruned stage keeps mask.pt


def table(rows):
    return {r["row"]: (r["acc1"], r["params"], r["flops"], r["epochs"], r["status"]) for r in rows}


def by_row(rows):
    return {r["row"]: r for r in rows}


def state_of_wrong_shape(folder):
    state = torch.load(folder / "model.pt", weights_only=True)
    return {k: torch.zeros(3) for k in state}


def masks_of_wrong_shape(folder):
    masks = torch.load(folder / "mask.pt", weights_only=True)
    return {k: torch.ones(2, dtype=torch.bool) for k in masks}


DAMAGE = {  # (row, file, what to write: bytes, a JSON value, a tensor dict, or a function of the folder; None: delete)
    "metrics.json of status ok alone": ("unpruned", "metrics.json", {"status": "ok"}),
    "metrics.json of no status": ("pruned", "metrics.json", {"acc1": 50.0}),
    "metrics.json not JSON": ("scratch_e", "metrics.json", b"\x00{garbage"),
    "arch.json of {}": ("unpruned", "arch.json", {}),
    "arch.json the builder refuses": ("unpruned", "arch.json", {"arch": "vgg", "widths": "many"}),
    "model.pt of {}": ("unpruned", "model.pt", torch.nn.Module()),
    "model.pt of the wrong shapes": ("pruned", "model.pt", state_of_wrong_shape),
    "mask.pt not a tensor file": ("pruned", "mask.pt", b"junk"),
    "mask.pt of {}": ("pruned", "mask.pt", torch.nn.Module()),
    "mask.pt of the wrong shapes": ("pruned", "mask.pt", masks_of_wrong_shape),
    "mask.pt missing": ("pruned", "mask.pt", None),
}


def damage(folder, name, what):
    path = folder / name
    if callable(what) and not isinstance(what, torch.nn.Module):
        what = what(folder)
    if what is None:
        path.unlink()
    elif isinstance(what, bytes):
        path.write_bytes(what)
    elif isinstance(what, torch.nn.Module):
        torch.save({}, path)
    elif isinstance(what, dict) and what and all(isinstance(v, torch.Tensor) for v in what.values()):
        torch.save(what, path)
    else:
        path.write_text(json.dumps(what))
    return path


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_a_damaged_stage_file_is_named_then_set_aside_and_retrained(smoke_cfg, case, caplog):
    row, name, what = DAMAGE[case]
    clean = by_row(pipeline.run(smoke_cfg(*RUN)))
    folder = Path(clean[row]["stage"])
    path = damage(folder, name, what)
    with pytest.raises(PrunebenchError) as e:
        pipeline.run(smoke_cfg(*RUN))
    message = str(e.value)
    assert str(path) in message and "retry_failed=true" in message and "\n" not in message, message
    with caplog.at_level(logging.WARNING):
        again = by_row(pipeline.run(smoke_cfg(*RUN, "retry_failed=true")))
    assert table(again.values()) == table(clean.values())
    assert again[row]["stage"] == str(folder)
    if what is not None:  # the unreadable file is kept beside, not deleted
        assert (folder / f"{name}.unreadable").exists() and "set aside" in caplog.text


CHECKPOINTS = {
    "without its model": lambda ok: {k: v for k, v in ok.items() if k != "model"},
    "of another model": lambda ok: {**ok, "model": {k: torch.zeros(1) for k in ok["model"]}},
    "not a dict": lambda ok: [1, 2, 3],
    "without its epoch": lambda ok: {k: v for k, v in ok.items() if k != "epoch"},
}


@pytest.mark.parametrize("case", sorted(CHECKPOINTS))
def test_a_damaged_checkpoint_is_set_aside_and_the_stage_starts_over(smoke_cfg, case, caplog):
    args = (*RUN, "schedule.epochs=2", "train.checkpoint_every=0")
    clean = by_row(pipeline.run(smoke_cfg(*args)))
    folder = Path(clean["scratch_e"]["stage"])
    ok = {"model": torch.load(folder / "model.pt", weights_only=True), "optimizer": {}, "scheduler": {},
          "epoch": 1, "seconds": 1.0, "loss": 2.0}
    (folder / "metrics.json").unlink()  # scratch_e unfinished, with a damaged checkpoint
    torch.save(CHECKPOINTS[case](ok), folder / "checkpoint.pt")
    with caplog.at_level(logging.WARNING):
        again = by_row(pipeline.run(smoke_cfg(*args)))
    assert "starts over" in caplog.text and (folder / "checkpoint.pt.corrupt").exists()
    assert table(again.values()) == table(clean.values())


@pytest.mark.parametrize("name,content", [("widths.json", "{not json"), ("widths.json", '{"conv1": "wide"}'),
                                          ("history.csv", "epoch,loss\nx,y\n"), ("history.csv", "\x00\x01\x02"),
                                          ("model.pt", "garbage")])
def test_the_runs_figures_skip_and_name_a_damaged_file(smoke_cfg, tmp_path, caplog, name, content):
    rows = pipeline.run(smoke_cfg("method=l1_norm", "strategies=[finetune,scratch_e,scratch_b]"))
    run_dir = tmp_path / "run"
    report.write(rows, run_dir, "a run")
    row = "pruned" if name == "widths.json" else "unpruned"
    path = os.path.join(by_row(rows)[row]["stage"], name)
    with open(path, "w") as f:
        f.write(content)
    with caplog.at_level(logging.WARNING):
        figures = plots.for_run(run_dir, rows)
    assert figures and f"skipped {path}" in caplog.text
    assert all("\n" not in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("owner", ["", "   ", "garbled", f"{socket.gethostname()}", f"{socket.gethostname()} 99999999"])
def test_a_lock_whose_owner_is_gone_is_taken_over_at_once(smoke_cfg, caplog, owner):
    args = ("method=l1_norm", "strategies=[scratch_e]")
    first = by_row(pipeline.run(smoke_cfg(*args)))
    folder = Path(first["scratch_e"]["stage"])
    (folder / "metrics.json").unlink()
    (folder / "lock").write_text(owner)
    start = time.monotonic()
    with caplog.at_level(logging.INFO):
        again = by_row(pipeline.run(smoke_cfg(*args)))  # the default lock_timeout: 6 hours
    assert time.monotonic() - start < 120 and again["scratch_e"]["status"] == "ok"
    assert "taken over" in caplog.text and not (folder / "lock").exists()


def test_temporary_files_a_killed_writer_left_are_removed(smoke_cfg, caplog):
    args = ("method=l1_norm", "strategies=[scratch_e]")
    first = by_row(pipeline.run(smoke_cfg(*args)))
    folder = Path(first["scratch_e"]["stage"])
    (folder / "metrics.json").unlink()
    for name in (".model.pt.k3j2h1.tmp", ".checkpoint.pt.x9y8.tmp"):
        (folder / name).write_bytes(b"half a file")
    with caplog.at_level(logging.INFO):
        again = by_row(pipeline.run(smoke_cfg(*args)))
    assert again["scratch_e"]["status"] == "ok" and not list(folder.glob(".*.tmp"))
    assert "removed 2 temporary files" in caplog.text


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_finished_stage_reads_back_as_written(smoke_cfg, monkeypatch, method):
    """What each stage file must hold is what prunebench writes, for every method (a sparse stage's
    model carries what the method attached): a rerun reuses every stage and trains nothing."""
    args = (f"method={method}", "strategies=[scratch_e]")
    first = table(pipeline.run(smoke_cfg(*args)))
    monkeypatch.setattr(job, "training_of", lambda *a, **k: pytest.fail("a finished stage was trained again"))
    assert table(pipeline.run(smoke_cfg(*args))) == first
