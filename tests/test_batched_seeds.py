"""Seeds trained as one batched model equal the single-seed runs. Compared in float64 where
the comparison is of weights: the batched convolutions sum in another order, which float64
keeps below 1e-7; the pipeline runs compare float32 losses up to rounding."""
import json
import logging
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from prunebench import methods, seeds as seeds_module
from prunebench.config import SlimmingConfig
from prunebench.errors import Diverged
from prunebench.pruning.masks import uniform_masks
from prunebench.train.batched import CannotBatch, SeedStack, train_batched
from prunebench.train.job import TrainJob, train_job
from prunebench.train.step import Speed
from tests.test_fast_step import RECIPE, VGG, build, float64, synthetic  # noqa: F401

SEEDS = [0, 3]
STACKED = "train.seed_batching=stacked"  # the stacked (vmap) model; interleaved: tests/test_interleaved.py


def inits():
    out = []
    for s in SEEDS:
        torch.manual_seed(s)
        out.append(build(VGG).double().state_dict())
    return out


def jobs(synthetic, folder: Path, hooks=None, masks=None, speed=Speed(), **kw):
    """One job per seed, each model at its seed's init."""
    out = []
    for s, init in zip(SEEDS, inits()):
        model = build(VGG).double()
        model.load_state_dict(init)
        (folder / str(s)).mkdir(parents=True, exist_ok=True)
        out.append(TrainJob(kind="sparse", model=model, data=synthetic, recipe=RECIPE, seed=s,
                            checkpoint=folder / str(s) / "checkpoint.pt", hooks=hooks,
                            masks=None if masks is None else masks[s], progress=False, eval_every=1, speed=speed,
                            snapshots={0: folder / str(s) / "init.pt"}, **kw))
    return out


def slimming():
    return methods.create(OmegaConf.structured(SlimmingConfig(name="slimming", sparsity=1e-2)))


def assert_equal_runs(single, batched, outs_single, outs_batched, rel=1e-6, atol=1e-7):
    for a, b, oa, ob in zip(single, batched, outs_single, outs_batched):
        assert [h["loss"] for h in ob["history"]] == pytest.approx([h["loss"] for h in oa["history"]], rel=rel)
        assert [h["acc1"] for h in ob["history"]] == [h["acc1"] for h in oa["history"]]
        assert [h["lr"] for h in ob["history"]] == pytest.approx([h["lr"] for h in oa["history"]])
        for (name, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
            assert torch.allclose(x.double(), y.double(), atol=atol), name
    assert outs_batched[0]["history"][0]["loss"] != outs_batched[1]["history"][0]["loss"]  # two seeds, two runs


def test_two_seeds_batched_with_slimming_and_masks_equal_two_single_seed_runs(synthetic, float64, tmp_path):
    masks = {s: uniform_masks(build(VGG), 0.3, seed=s) for s in SEEDS}
    single = jobs(synthetic, tmp_path / "single", slimming(), masks)
    outs_single = [train_job(j) for j in single]
    batched = jobs(synthetic, tmp_path / "batched", slimming(), masks)
    outs_batched = train_batched(batched)
    assert_equal_runs(single, batched, outs_single, outs_batched)
    for j, s in zip(batched, SEEDS):
        params = dict(j.model.named_parameters())
        assert all((params[n][~m] == 0).all() for n, m in masks[s].items())  # each seed kept its own mask
        assert (j.checkpoint.parent / "history.csv").read_text().count("\n") == RECIPE.epochs + 1
        saved = torch.load(j.checkpoint.parent / "init.pt", weights_only=True)
        assert all(torch.equal(saved[k], v) for k, v in inits()[SEEDS.index(s)].items())
        state = torch.load(j.checkpoint, weights_only=True)  # the single-seed checkpoint's form
        assert state["epoch"] == RECIPE.epochs and set(state) >= {"model", "optimizer", "scheduler", "history"}


def test_seeds_batched_through_the_compiled_step_equal_single_eager_runs(synthetic, float64, tmp_path):
    single = jobs(synthetic, tmp_path / "single", slimming())
    outs_single = [train_job(j) for j in single]
    batched = jobs(synthetic, tmp_path / "batched", slimming(), speed=Speed(compile="on", backend="aot_eager",
                                                                              channels_last=True))
    assert_equal_runs(single, batched, outs_single, train_batched(batched), atol=1e-6)


def test_an_interrupted_batched_stage_resumes_batched_and_seed_by_seed(synthetic, float64, tmp_path):
    whole = jobs(synthetic, tmp_path / "whole")
    outs_whole = train_batched(whole)

    def stop(entry):
        if entry["epoch"] == 1:
            raise KeyboardInterrupt
    cut = jobs(synthetic, tmp_path / "cut", on_epoch=stop)
    with pytest.raises(KeyboardInterrupt):
        train_batched(cut)
    assert [torch.load(j.checkpoint, weights_only=True)["epoch"] for j in cut] == [1, 1]
    resumed = jobs(synthetic, tmp_path / "cut")
    assert_equal_runs(whole, resumed, outs_whole, train_batched(resumed))
    # one seed alone resumes from the checkpoint the batched stage wrote
    cut = jobs(synthetic, tmp_path / "cut2", on_epoch=stop)
    with pytest.raises(KeyboardInterrupt):
        train_batched(cut)
    alone = jobs(synthetic, tmp_path / "cut2")
    assert torch.load(alone[1].checkpoint, weights_only=True)["epoch"] == 1
    out = train_job(alone[1])
    assert len(out["history"]) == RECIPE.epochs
    assert out["history"][-1]["loss"] == pytest.approx(outs_whole[1]["history"][-1]["loss"], rel=1e-6)
    for (name, x), y in zip(whole[1].model.state_dict().items(), alone[1].model.state_dict().values()):
        assert torch.allclose(x.double(), y.double(), atol=1e-7), name
    # the seeds' checkpoints now stand at different epochs: no batching, nothing written
    with pytest.raises(CannotBatch, match="different epochs"):
        train_batched(jobs(synthetic, tmp_path / "cut2"))


def test_jobs_that_cannot_share_a_model_are_refused(synthetic, tmp_path):
    class Stateful(slimming().__class__):
        batchable = False
    with pytest.raises(CannotBatch, match="not batchable"):
        train_batched(jobs(synthetic, tmp_path, Stateful(slimming().cfg)))
    other = jobs(synthetic, tmp_path)
    other[1].recipe = RECIPE.__class__(epochs=1, lr=0.05, batch_size=32)
    with pytest.raises(CannotBatch, match="different settings"):
        train_batched(other)


def test_the_stack_runs_each_seed_through_its_own_weights(synthetic):
    torch.manual_seed(0)
    models = [build(VGG), build(VGG)]
    with torch.no_grad():
        for p in models[1].parameters():
            p.mul_(0.5)
    stack = SeedStack(models).eval()
    x = torch.randn(2, 4, 3, 32, 32)
    out = stack(x)
    for i, m in enumerate(models):
        assert torch.allclose(out[i], m.eval()(x[i]), atol=1e-5)
    assert all(p.shape[0] == 2 for p in stack.tree.parameters())
    assert sum(p.numel() for p in stack.parameters()) == 2 * sum(p.numel() for p in models[0].parameters())


@pytest.mark.parametrize("error,logged", [
    (Diverged("loss became NaN/inf in epoch 1 (seeds [1], batched with [0, 1])"), "go on one by one"),
    (RuntimeError("vmap cannot batch this"), "could not train batched (RuntimeError: vmap cannot batch this)"),
])
def test_a_batched_training_that_fails_goes_on_seed_by_seed(smoke_cfg, monkeypatch, caplog, error, logged):
    from prunebench import pipeline

    def broken(js):
        raise error
    monkeypatch.setattr(seeds_module, "train_batched", broken)
    with caplog.at_level(logging.INFO, logger="prunebench.seeds"):
        rows = pipeline.run(smoke_cfg("seeds=[0,1]", STACKED, "strategies=[finetune]"))
    assert logged in caplog.text
    assert all(r["status"] == "ok" for r in rows) and sorted({r["seed"] for r in rows}) == [0, 1]


def by_seed_and_row(rows):
    return {(r["seed"], r["row"]): r for r in rows}


def train_loss(row):
    return json.loads((Path(row["stage"]) / "metrics.json").read_text()).get("train_loss")


@pytest.mark.parametrize("method,batched_rows", [
    ("l1_norm", ["unpruned", "finetune", "scratch_e", "scratch_b"]),  # predefined: one pruned architecture
    ("slimming", ["unpruned", "sparse"]),  # batchable hooks; the pruned architectures differ by seed
])
def test_seeds_batched_in_the_pipeline_give_the_single_seed_stages(smoke_cfg, tmp_path, caplog, method,
                                                                    batched_rows):
    from prunebench import pipeline
    over = (f"method={method}", "strategies=[finetune,scratch_e,scratch_b]", "schedule.eval_every=1")
    with caplog.at_level(logging.INFO, logger="prunebench.seeds"):
        batched = pipeline.run(smoke_cfg("seeds=[0,1]", STACKED, *over))  # train.batch_seeds is on by default
    for row in batched_rows:
        assert f"{row}: seeds [0, 1] batched" in caplog.text, row
    assert "one by one" not in caplog.text
    single = []
    for s in (0, 1):
        single += pipeline.run(smoke_cfg(f"seed={s}", f"cache_dir={tmp_path / 'single'}", *over))
    b = by_seed_and_row(batched)
    assert set(b) == set(by_seed_and_row(single))
    for key, r in by_seed_and_row(single).items():
        assert b[key]["status"] == r["status"] == "ok", key
        assert Path(b[key]["stage"]).name == Path(r["stage"]).name  # the same stage, cached under the same key
        if r["row"] != "pruned":
            assert train_loss(b[key]) == pytest.approx(train_loss(r), rel=1e-4), key  # float32: up to rounding
            assert b[key]["acc1"] == pytest.approx(r["acc1"], abs=1.0), key


def test_seeds_one_by_one_when_asked(smoke_cfg, caplog):
    from prunebench import pipeline
    with caplog.at_level(logging.INFO, logger="prunebench.seeds"):
        rows = pipeline.run(smoke_cfg("seeds=[0,1]", "train.batch_seeds=false", "strategies=[finetune]"))
    assert "batched" not in caplog.text
    assert sorted({r["seed"] for r in rows}) == [0, 1]


def test_a_seed_given_twice_is_refused(smoke_cfg):
    from prunebench import pipeline
    from prunebench.errors import PrunebenchError
    with pytest.raises(PrunebenchError, match="seeds must differ"):
        pipeline.run(smoke_cfg("seeds=[0,0]"))


def test_seeds_trainings_side_by_side_equal_sequential_ones(smoke_cfg, caplog):
    """The seeds' retrainings of differing pruned architectures (slimming finds one per seed) train
    ``parallel_stages`` at a time; one intra-op thread, as in test_pipeline's side-by-side test."""
    import shutil

    from prunebench import pipeline
    over = ("seeds=[0,1]", STACKED, "method=slimming", "strategies=[finetune,scratch_e]")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sequential = pipeline.run(smoke_cfg(*over))
        retrained = [r for r in sequential if r["row"] in ("finetune", "scratch_e")]
        assert len({r["params"] for r in retrained if r["row"] == "finetune"}) == 2  # two architectures
        loss = {(r["seed"], r["row"]): train_loss(r) for r in retrained}
        for r in retrained:
            shutil.rmtree(r["stage"])
        with caplog.at_level(logging.INFO, logger="prunebench.seeds"):
            parallel = pipeline.run(smoke_cfg(*over, "train.parallel_stages=2"))
    finally:
        torch.set_num_threads(threads)
    assert "2 trainings of the seeds side by side" in caplog.text
    assert [(r["seed"], r["row"]) for r in parallel] == [(r["seed"], r["row"]) for r in sequential]
    for a, b in zip(sequential, parallel):
        assert b["status"] == "ok" and a["stage"] == b["stage"] and a["acc1"] == b["acc1"], (a["seed"], a["row"])
    assert {(b["seed"], b["row"]): train_loss(b) for b in parallel if (b["seed"], b["row"]) in loss} == loss


def test_an_error_in_the_batcher_reaches_every_seed_instead_of_a_hang(smoke_cfg, monkeypatch):
    from prunebench import pipeline

    def broken(self, mode):
        raise RuntimeError("no key")
    monkeypatch.setattr(seeds_module.Waiting, "key", broken)
    with pytest.raises(RuntimeError, match="no key"):
        pipeline.run(smoke_cfg("seeds=[0,1]", "strategies=[finetune]"))


def test_a_seed_that_diverges_stops_the_batch_and_the_others_go_on_from_their_checkpoints(synthetic, float64,
                                                                                          tmp_path):
    from prunebench.train.hooks import TrainHooks

    class PoisonSecondSeed(TrainHooks):  # batchable: acts on the stacked tensors, seed index 1 only
        def on_epoch_end(self, model, epoch):
            if epoch == 0:
                with torch.no_grad():
                    next(model.parameters())[1].fill_(float("nan"))

    whole = jobs(synthetic, tmp_path / "whole")
    outs_whole = train_batched(whole)
    poisoned = jobs(synthetic, tmp_path / "poisoned", PoisonSecondSeed())
    with pytest.raises(Diverged, match=rf"epoch 2 \(seeds \[{SEEDS[1]}\]"):
        train_batched(poisoned)
    states = [torch.load(j.checkpoint, weights_only=True) for j in poisoned]
    assert [s["epoch"] for s in states] == [1, 1]  # every seed stands at the last epoch whose loss was finite
    alone = jobs(synthetic, tmp_path / "poisoned")[0]  # seed 0 goes on alone, to the batched result
    out = train_job(alone)
    assert out["history"][-1]["loss"] == pytest.approx(outs_whole[0]["history"][-1]["loss"], rel=1e-6)


def test_a_seed_waiting_for_another_jobs_stage_lets_the_other_seeds_go_on(smoke_cfg, monkeypatch, caplog):
    """Seed 1's unpruned stage is locked by another live job: seed 0 trains meanwhile (before the
    lock goes), instead of both waiting for each other until lock_timeout."""
    import os
    import threading
    import time

    from prunebench import pipeline
    from prunebench.stages import Stage
    over = ("strategies=[finetune]", "lock_timeout=120")
    one = smoke_cfg("seed=1", *over)
    locked = Stage(one.cache_dir, "unpruned", pipeline.base_settings(one))
    locked.dir.mkdir(parents=True)
    (locked.dir / "lock").write_text(f"{os.uname().nodename} {os.getppid()}")  # held by a live job
    seed0 = Stage(one.cache_dir, "unpruned", pipeline.base_settings(smoke_cfg("seed=0", *over)))
    monkeypatch.setattr(pipeline, "LOCK_POLL_S", 0.05)
    seen = {}

    def other_job_lets_go():
        deadline = time.monotonic() + 100
        while not (seed0.dir / "metrics.json").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        seen["seed 0 trained while seed 1 waited"] = (seed0.dir / "metrics.json").exists()
        (locked.dir / "lock").unlink()
    t = threading.Thread(target=other_job_lets_go)
    t.start()
    rows = pipeline.run(smoke_cfg("seeds=[0,1]", *over))
    t.join()
    assert seen == {"seed 0 trained while seed 1 waited": True}
    assert all(r["status"] == "ok" for r in rows) and sorted({r["seed"] for r in rows}) == [0, 1]


def test_slimming_on_a_torchvision_model_trains_its_seeds_batched(smoke_cfg, caplog):
    """The channel groups of a torchvision model come from a traced graph: traced on the plain model
    before stacking (a trace through stacked weights would fail), so slimming's hook finds them."""
    from prunebench import pipeline
    with caplog.at_level(logging.INFO, logger="prunebench.seeds"):
        rows = pipeline.run(smoke_cfg("seeds=[0,1]", STACKED, "model=torchvision", "model.name=mobilenet_v2", "model.width=1.0",
                                      "method=slimming", "dataset.image_size=32", "strategies=[finetune]"))
    assert "sparse: seeds [0, 1] batched" in caplog.text and "could not train batched" not in caplog.text
    assert all(r["status"] == "ok" for r in rows)
