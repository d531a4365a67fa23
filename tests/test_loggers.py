"""Experiment loggers: every trained stage's per-epoch history reaches TensorBoard or
W&B (offline) as it trains."""
import sys
import types
from pathlib import Path

import pytest

from prunebench import pipeline
from prunebench.errors import PrunebenchError


def test_tensorboard_receives_every_epoch(smoke_cfg):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rows = {r["row"]: r for r in pipeline.run(smoke_cfg("method=l1_norm", "logger=tensorboard", "schedule.epochs=3",
                                                        "schedule.eval_every=1", "strategies=[scratch_e]"))}
    for row in ["unpruned", "scratch_e"]:
        events = EventAccumulator(str(Path(rows[row]["stage"]) / "tensorboard"))
        events.Reload()
        acc = events.Scalars(f"{row}/acc1")
        assert [e.step for e in acc] == [1, 2, 3]
        assert acc[-1].value == pytest.approx(rows[row]["acc1"], abs=1e-3)
        assert len(events.Scalars(f"{row}/loss")) == 3 and len(events.Scalars(f"{row}/lr")) == 3


def test_wandb_runs_offline_one_run_per_stage(smoke_cfg, monkeypatch):
    runs = []

    class Run:
        def __init__(self, **kw):
            self.kw, self.logged, self.finished = kw, [], False
            runs.append(self)

        def log(self, values, step):
            self.logged.append((step, values))

        def finish(self):
            self.finished = True

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=lambda **kw: Run(**kw)))
    rows = {r["row"]: r for r in pipeline.run(smoke_cfg("method=l1_norm", "logger=wandb", "schedule.epochs=2", "schedule.eval_every=1",
                                                        "strategies=[finetune]"))}
    assert [r.kw["group"] for r in runs] == ["unpruned", "finetune"]
    assert all(r.kw["mode"] == "offline" and r.finished for r in runs)
    assert all(r.kw["reinit"] == "create_new" for r in runs)  # stages in flight together: runs open at once
    unpruned = runs[0]
    assert unpruned.kw["name"] == Path(rows["unpruned"]["stage"]).name
    assert [step for step, _ in unpruned.logged] == [1, 2]
    assert unpruned.logged[-1][1]["acc1"] == pytest.approx(rows["unpruned"]["acc1"])


def test_unknown_logger_is_a_clear_error(tmp_path):
    from prunebench import loggers
    from omegaconf import OmegaConf

    with pytest.raises(PrunebenchError, match="tensorboard"):
        loggers.create(OmegaConf.create({"name": "mlflow"}), tmp_path, "unpruned")
