import json
import math
import os
from pathlib import Path

import pytest
import torch

from prunebench import data, pipeline, protocol
from prunebench.train import job
from prunebench.errors import PrunebenchError
from prunebench.strategies import scratch_b_epochs
from prunebench.stages import Stage

ROWS = ["unpruned", "sparse", "pruned", "finetune", "scratch_e", "scratch_b", "uniform"]


def by_row(rows):
    return {r["row"]: r for r in rows}


def test_scratch_b_epochs_formula():
    b = scratch_b_epochs(160, 796_272_640, 300_000_000)
    assert b["epochs"] == math.ceil(160 * 796_272_640 / 300_000_000) == 425
    assert "ceil(160 x 796272640 / 300000000) = 425" in b["formula"]
    assert scratch_b_epochs(160, 1000, 500)["epochs"] == 320  # exact ratios are not rounded up
    capped = scratch_b_epochs(160, 796_272_640, 300_000_000, max_factor=2)
    assert capped["epochs"] == 320 and "capped" in capped["formula"]


@pytest.mark.parametrize("model", ["vgg11", "resnet20"])
@pytest.mark.parametrize("method", ["slimming", "l1_norm", "random"])
def test_smoke_runs_every_row(smoke_cfg, method, model):
    extra = ["model.width=0.5"] if model.startswith("resnet") else []
    rows = by_row(pipeline.run(smoke_cfg(f"method={method}", f"model={model}", *extra)))
    expected = ROWS if method == "slimming" else [r for r in ROWS if r != "sparse"]
    assert list(rows) == expected
    assert all(r["status"] == "ok" for r in rows.values()), rows
    full = rows["unpruned"]
    for name in ["pruned", "finetune", "scratch_e", "scratch_b", "uniform"]:
        assert rows[name]["flops"] < full["flops"] and rows[name]["params"] < full["params"]
    assert rows["scratch_b"]["epochs"] == math.ceil(full["epochs"] * full["flops"] / rows["pruned"]["flops"])
    assert rows["uniform"]["epochs"] == rows["scratch_b"]["epochs"]
    assert abs(rows["uniform"]["flops"] - rows["pruned"]["flops"]) <= 0.01 * rows["pruned"]["flops"]
    assert rows["scratch_e"]["epochs"] == full["epochs"] and rows["finetune"]["epochs"] == 1


def test_stage_folders_keep_config_metrics_weights_and_widths(smoke_cfg):
    rows = by_row(pipeline.run(smoke_cfg()))
    for name in ["unpruned", "pruned", "finetune"]:
        folder = rows[name]["stage"]
        for f in ["settings.json", "metrics.json", "arch.json", "model.pt", "widths.json"]:
            assert os.path.exists(os.path.join(folder, f)), (name, f)
        assert not os.path.exists(os.path.join(folder, "lock"))


def test_rerun_reuses_every_stage(smoke_cfg, monkeypatch):
    first = pipeline.run(smoke_cfg())

    def no_training(*a, **k):
        raise AssertionError("a cached stage was trained again")
    monkeypatch.setattr(job, "training_of", no_training)  # every training, the pruning iterations' too
    second = pipeline.run(smoke_cfg())
    assert [(r["row"], r["acc1"], r["stage"]) for r in first] == [(r["row"], r["acc1"], r["stage"]) for r in second]


def test_methods_share_the_unpruned_stage(smoke_cfg):
    a = by_row(pipeline.run(smoke_cfg("method=l1_norm")))
    b = by_row(pipeline.run(smoke_cfg("method=random")))
    assert a["unpruned"]["stage"] == b["unpruned"]["stage"]
    assert a["pruned"]["stage"] != b["pruned"]["stage"]


def test_a_diverged_stage_is_marked_failed_and_the_others_go_on(smoke_cfg):
    rows = by_row(pipeline.run(smoke_cfg("strategy.finetune.lr=1e12")))
    assert rows["finetune"]["status"] == "failed" and "NaN" in rows["finetune"]["note"]
    assert all(rows[r]["status"] == "ok" for r in ["unpruned", "pruned", "scratch_e", "scratch_b", "uniform"])


def test_a_diverged_unpruned_stage_fails_its_dependents(smoke_cfg):
    rows = by_row(pipeline.run(smoke_cfg("method=l1_norm", "schedule.lr=1e12")))
    assert rows["unpruned"]["status"] == "failed"
    assert all(r["status"] == "failed" and "not run" in r["note"] for k, r in rows.items() if k != "unpruned")


def test_strategies_subset(smoke_cfg):
    rows = by_row(pipeline.run(smoke_cfg("method=l1_norm", "strategies=[scratch_b]")))
    assert list(rows) == ["unpruned", "pruned", "scratch_b"]


@pytest.mark.parametrize("override,message", [("method.pruning_ratio=1.0", r"\[0, 1\)"),
                                              ("method.pruning_ratio=-0.2", r"\[0, 1\)"),
                                              ("strategies=[finetune,scratch_c]", "scratch_c")])
def test_bad_input_is_a_clear_error(smoke_cfg, override, message):
    with pytest.raises(PrunebenchError, match=message):
        pipeline.run(smoke_cfg(override))


def test_a_stage_locked_by_a_live_job_is_waited_for_then_its_row_fails(smoke_cfg):
    cfg = smoke_cfg("method=l1_norm", "lock_timeout=0.2")
    stage = Stage(cfg.cache_dir, "unpruned", protocol.base_settings(cfg, data.fingerprint(cfg.dataset)))
    stage.dir.mkdir(parents=True)
    (stage.dir / "lock").write_text(f"{os.uname().nodename} {os.getppid()}")  # a live process
    rows = by_row(pipeline.run(cfg))
    assert rows["unpruned"]["status"] == "failed" and "being written" in rows["unpruned"]["note"]
    assert "lock_timeout" in rows["unpruned"]["note"] and not (stage.dir / "metrics.json").exists()
    assert all("not run" in r["note"] for k, r in rows.items() if k != "unpruned")
    (stage.dir / "lock").write_text(f"{os.uname().nodename} 999999999")  # a dead one: taken over
    assert all(r["status"] == "ok" for r in pipeline.run(cfg))


def test_stages_one_at_a_time_equal_the_default_schedule(smoke_cfg, tmp_path):
    """``train.max_concurrent=1`` trains the stages one after another; by default every ready
    training is in flight. Each stage's folder, weights and figures are the same either way."""
    together = pipeline.run(smoke_cfg())
    one_by_one = pipeline.run(smoke_cfg("train.max_concurrent=1", f"cache_dir={tmp_path / 'sequential'}"))
    assert [r["row"] for r in one_by_one] == [r["row"] for r in together] == ROWS
    for a, b in zip(one_by_one, together):
        assert a["status"] == b["status"] == "ok", a["row"]
        for key in ("acc1", "params", "flops", "epochs"):
            assert a[key] == b[key], (a["row"], key)
        assert Path(a["stage"]).name == Path(b["stage"]).name
        wa = torch.load(Path(a["stage"]) / "model.pt", weights_only=True)
        wb = torch.load(Path(b["stage"]) / "model.pt", weights_only=True)
        assert all(torch.equal(wa[k], wb[k]) for k in wa), a["row"]
        assert (json.loads((Path(a["stage"]) / "metrics.json").read_text()).get("train_loss") ==
                json.loads((Path(b["stage"]) / "metrics.json").read_text()).get("train_loss"))
