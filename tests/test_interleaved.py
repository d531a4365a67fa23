"""Trainings interleaved (a step each in turn; ``train.seed_batching: interleaved``, the default)
compute exactly what each computes alone: every job keeps its own model, optimizer, hooks and
data order, so the comparisons here are of equality, not of tolerance."""
import json
import logging
from pathlib import Path

import pytest
import torch

from prunebench.errors import Diverged, PrunebenchError
from prunebench.pruning.masks import uniform_masks
from prunebench.train.hooks import TrainHooks
from prunebench.train.interleaved import SharedClock, train_interleaved
from prunebench.train.job import TrainJob, train_job
from prunebench.train.step import Speed
from tests.test_batched_seeds import slimming
from tests.test_fast_step import RECIPE, RESNET, VGG, build, synthetic  # noqa: F401


def mixed_jobs(synthetic, folder: Path, speed=Speed(), hooks=None, **kw):
    """Three jobs that could not share one stacked model: VGG with slimming's hooks and a weight
    mask, VGG with another seed and no hooks, and a ResNet with a shorter recipe."""
    out = []
    for name, spec, seed, recipe, job_hooks, masked in (
            ("vgg_slim", VGG, 0, RECIPE, slimming(), True),
            ("vgg", VGG, 3, RECIPE, hooks, False),
            ("resnet", RESNET, 1, RECIPE.__class__(epochs=1, lr=0.02, batch_size=16), None, False)):
        model = build(spec)
        torch.manual_seed(seed)
        for p in model.parameters():  # a different init per job
            p.data.add_(0.01 * torch.randn_like(p))
        (folder / name).mkdir(parents=True, exist_ok=True)
        out.append(TrainJob(kind=name, model=model, data=synthetic, recipe=recipe, seed=seed,
                            checkpoint=folder / name / "checkpoint.pt", hooks=job_hooks,
                            masks=uniform_masks(build(spec), 0.3, seed=seed) if masked else None, progress=False,
                            eval_every=1, speed=speed, **kw))
    return out


def assert_same(alone, together, outs_alone, outs_together):
    for a, b, oa, ob in zip(alone, together, outs_alone, outs_together):
        assert ob["history"] == oa["history"], a.kind
        assert ob["loss"] == oa["loss"] and ob["epochs"] == oa["epochs"]
        for (name, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
            assert torch.equal(x, y), (a.kind, name)
        assert torch.load(b.checkpoint, weights_only=True)["epoch"] == b.recipe.epochs
        assert (b.checkpoint.parent / "history.csv").read_text() == (a.checkpoint.parent / "history.csv").read_text()


@pytest.mark.parametrize("speed", [Speed(), Speed(compile="on", backend="aot_eager", channels_last=True)],
                         ids=["eager", "compiled"])
def test_interleaved_trainings_equal_each_training_alone(synthetic, tmp_path, speed):
    alone = mixed_jobs(synthetic, tmp_path / "alone", speed)
    outs_alone = [train_job(j) for j in alone]
    together = mixed_jobs(synthetic, tmp_path / "together", speed)
    outs = train_interleaved(together)
    assert_same(alone, together, outs_alone, outs)
    params = dict(together[0].model.named_parameters())
    assert all((params[n][~m] == 0).all() for n, m in together[0].masks.items())  # its mask held
    assert outs[0]["seconds"] > 0 and outs[2]["seconds"] > 0


def test_a_training_that_diverges_ends_alone_and_the_others_finish(synthetic, tmp_path):
    class Poison(TrainHooks):
        def on_epoch_end(self, model, epoch):
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))

    alone = mixed_jobs(synthetic, tmp_path / "alone")
    outs_alone = [train_job(j) for j in alone]
    together = mixed_jobs(synthetic, tmp_path / "together", hooks=Poison())
    outs = train_interleaved(together)
    assert isinstance(outs[1], Diverged) and "epoch 2" in str(outs[1])
    assert_same([alone[0], alone[2]], [together[0], together[2]], [outs_alone[0], outs_alone[2]],
                [outs[0], outs[2]])


def test_an_interrupt_stops_every_training_and_a_rerun_resumes_to_the_same_result(synthetic, tmp_path):
    alone = mixed_jobs(synthetic, tmp_path / "alone")
    outs_alone = [train_job(j) for j in alone]

    def stop(entry):
        raise KeyboardInterrupt
    cut = mixed_jobs(synthetic, tmp_path / "cut")
    cut[1].on_epoch = stop
    with pytest.raises(KeyboardInterrupt):
        train_interleaved(cut)
    assert torch.load(cut[1].checkpoint, weights_only=True)["epoch"] == 1
    resumed = mixed_jobs(synthetic, tmp_path / "cut")
    assert_same(alone, resumed, outs_alone, train_interleaved(resumed))


def test_the_shared_clock_splits_wall_time_among_the_live_trainings(monkeypatch):
    now = [0.0]
    monkeypatch.setattr("prunebench.train.interleaved.time.perf_counter", lambda: now[0])
    clock = SharedClock()
    clock.tick(2)  # two trainings from t=0
    now[0] = 4.0
    assert clock() == 2.0  # 4 s of wall time, 2 s each
    clock.tick(1)  # one finished at t=4
    now[0] = 7.0
    assert clock() == 5.0


def train_loss(row):
    return json.loads((Path(row["stage"]) / "metrics.json").read_text()).get("train_loss")


@pytest.mark.parametrize("method", ["slimming", "sss"])
def test_seeds_interleaved_in_the_pipeline_give_the_single_seed_rows(smoke_cfg, tmp_path, caplog, method):
    """Slimming finds one pruned architecture per seed and SSS attaches forward hooks: neither
    can train as one stacked model, and both interleave, to the single-seed runs' numbers."""
    from prunebench import pipeline
    over = (f"method={method}", "strategies=[finetune,scratch_b]", "schedule.eval_every=1")
    with caplog.at_level(logging.INFO, logger="prunebench.seeds"):
        together = pipeline.run(smoke_cfg("seeds=[0,1]", *over))  # interleaved is the default
    assert "seeds [0, 1]: sparse, sparse side by side" in caplog.text
    assert "seeds [0, 1]: finetune, finetune side by side" in caplog.text
    single = []
    for s in (0, 1):
        single += pipeline.run(smoke_cfg(f"seed={s}", f"cache_dir={tmp_path / 'single'}", *over))
    key = lambda r: (r["seed"], r["row"])  # noqa: E731
    assert sorted(map(key, together)) == sorted(map(key, single))
    by_key = {key(r): r for r in together}
    for r in single:
        t = by_key[key(r)]
        assert t["status"] == r["status"] == "ok", key(r)
        assert Path(t["stage"]).name == Path(r["stage"]).name
        assert (t["acc1"], t["params"], train_loss(t)) == (r["acc1"], r["params"], train_loss(r)), key(r)


@pytest.mark.parametrize("seeds", ["seeds=[0,1]", "seed=0"])
def test_an_unknown_seed_batching_is_refused_before_training(smoke_cfg, monkeypatch, seeds):
    from prunebench import pipeline
    from prunebench.train import interleaved, job
    monkeypatch.setattr(job, "train", lambda *a, **k: pytest.fail("trained despite a bad train.seed_batching"))
    monkeypatch.setattr(interleaved, "training_of", lambda *a, **k: pytest.fail("trained despite it"))
    with pytest.raises(PrunebenchError, match="train.seed_batching must be one of interleaved, stacked, got 'vmap'"):
        pipeline.run(smoke_cfg(seeds, "train.seed_batching=vmap"))


def test_a_training_that_fails_beside_the_others_trains_again_alone_from_its_start(synthetic, tmp_path, caplog):
    """Not a divergence (memory, say): the job trains again alone, from the weights it started
    with (it failed in its first epoch, before any checkpoint), to its single-seed result."""
    from prunebench.seeds import SeedBatcher, Waiting

    class FailOnce(TrainHooks):
        failed = False

        def on_batch(self, model, x, y):
            if not FailOnce.failed and self.steps_seen == 3:
                FailOnce.failed = True
                raise RuntimeError("CUDA out of memory (a stand-in)")
            self.steps_seen += 1
        steps_seen = 0

    alone = mixed_jobs(synthetic, tmp_path / "alone")
    outs_alone = [train_job(j) for j in alone]
    together = mixed_jobs(synthetic, tmp_path / "together", hooks=FailOnce())
    group = [Waiting(j) for j in together]
    with caplog.at_level(logging.WARNING, logger="prunebench.seeds"):
        SeedBatcher().interleave(group)
    assert FailOnce.failed and "vgg of seed 3 failed beside the other seeds (RuntimeError" in caplog.text
    assert all(w.done and w.error is None for w in group)
    assert_same(alone, together, outs_alone, [w.out for w in group])
