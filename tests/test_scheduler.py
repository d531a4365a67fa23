"""The one scheduler: every training in flight takes a step in turn, and each computes exactly
what it computes alone (its own model, optimizer, hooks, data order and files), so the
comparisons here are of equality, not of tolerance. Also: what a divergence, a failure beside
other trainings, an interrupt and a stage another job is writing do to a schedule."""
import json
import logging
import os
import threading
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from prunebench import methods, pipeline, protocol, scheduler
from prunebench.methods.slimming import SlimmingConfig
from prunebench.errors import PrunebenchError
from prunebench.pruning.masks import uniform_masks
from prunebench.scheduler import Scheduler, SharedClock, Trainings
from prunebench.stages import Stage
from prunebench.train import job as jobs
from prunebench.train.hooks import TrainHooks
from prunebench.train.job import TrainJob, train_job
from prunebench.train.step import Speed
from tests.train.test_step import RECIPE, RESNET, VGG, build, synthetic  # noqa: F401


def slimming():
    return methods.create(OmegaConf.structured(SlimmingConfig(name="slimming", sparsity=1e-2)))


def mixed_jobs(synthetic, folder: Path, speed=Speed(), hooks=None, **kw):
    """Three jobs of different architectures, hooks and recipes: VGG with slimming's hooks and a
    weight mask, VGG with another seed and no hooks, and a ResNet with a shorter recipe."""
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


def in_flight(train_jobs, cache: Path, **kw):
    run = Trainings(train_jobs, cache)
    Scheduler([run], progress=False, **kw).run()
    return run


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
def test_trainings_in_flight_together_equal_each_training_alone(synthetic, tmp_path, speed, caplog):
    alone = mixed_jobs(synthetic, tmp_path / "alone", speed)
    outs_alone = [train_job(j) for j in alone]
    together = mixed_jobs(synthetic, tmp_path / "together", speed)
    with caplog.at_level(logging.INFO, logger="prunebench.scheduler"):
        outs = in_flight(together, tmp_path / "stages").results()
    assert "resnet: trains 1 epochs; in flight: vgg_slim, vgg, resnet" in caplog.text
    assert_same(alone, together, outs_alone, outs)
    params = dict(together[0].model.named_parameters())
    assert all((params[n][~m] == 0).all() for n, m in together[0].masks.items())  # its mask held
    assert outs[0]["seconds"] > 0 and outs[2]["seconds"] > 0 and outs[0]["wall_seconds"] >= outs[0]["seconds"]


def test_a_training_that_diverges_fails_its_row_and_the_others_finish(synthetic, tmp_path):
    class Poison(TrainHooks):
        def on_epoch_end(self, model, epoch):
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))

    alone = mixed_jobs(synthetic, tmp_path / "alone")
    outs_alone = [train_job(j) for j in alone]
    together = mixed_jobs(synthetic, tmp_path / "together", hooks=Poison())
    run = in_flight(together, tmp_path / "stages")
    failed = run.bench.results["vgg"]
    assert failed["status"] == "failed" and "epoch 2" in failed["note"]
    outs = run.results()
    assert_same([alone[0], alone[2]], [together[0], together[2]], [outs_alone[0], outs_alone[2]], [outs[0], outs[2]])


def test_an_interrupt_stops_every_training_and_a_rerun_resumes_to_the_same_result(synthetic, tmp_path, caplog):
    alone = mixed_jobs(synthetic, tmp_path / "alone")
    outs_alone = [train_job(j) for j in alone]

    def stop(entry):
        raise KeyboardInterrupt
    cut = mixed_jobs(synthetic, tmp_path / "cut")
    cut[1].on_epoch = stop
    with caplog.at_level(logging.WARNING, logger="prunebench.scheduler"), pytest.raises(KeyboardInterrupt):
        in_flight(cut, tmp_path / "stages")
    assert "where each stage stood" in caplog.text and "s left" in caplog.text
    assert torch.load(cut[1].checkpoint, weights_only=True)["epoch"] == 1
    assert not list((tmp_path / "stages").glob("*/lock"))  # every lock released
    resumed = mixed_jobs(synthetic, tmp_path / "cut")
    assert_same(alone, resumed, outs_alone, in_flight(resumed, tmp_path / "stages").results())


def test_the_shared_clock_splits_wall_time_among_the_live_trainings(monkeypatch):
    now = [0.0]
    monkeypatch.setattr("prunebench.scheduler.time.perf_counter", lambda: now[0])
    clock = SharedClock()
    clock.tick(2)  # two trainings from t=0
    now[0] = 4.0
    assert clock() == 2.0  # 4 s of wall time, 2 s each
    clock.tick(1)  # one finished at t=4
    now[0] = 7.0
    assert clock() == 5.0


def test_a_training_that_fails_beside_others_trains_again_alone_from_its_start(synthetic, tmp_path, caplog):
    """Not a divergence (memory, say): the job trains again alone, from the weights it started
    with (it failed in its first epoch, before any checkpoint), to its single result."""
    class FailOnce(TrainHooks):
        failed = False
        steps_seen = 0

        def on_batch(self, model, x, y):
            if not FailOnce.failed and self.steps_seen == 3:
                FailOnce.failed = True
                raise RuntimeError("CUDA out of memory (a stand-in)")
            self.steps_seen += 1

    alone = mixed_jobs(synthetic, tmp_path / "alone")
    outs_alone = [train_job(j) for j in alone]
    together = mixed_jobs(synthetic, tmp_path / "together", hooks=FailOnce())
    with caplog.at_level(logging.WARNING, logger="prunebench.scheduler"):
        run = in_flight(together, tmp_path / "stages")
    assert FailOnce.failed and "vgg failed beside 2 other trainings (RuntimeError" in caplog.text
    assert all(r["status"] == "ok" for r in run.bench.results.values())
    assert_same(alone, together, outs_alone, run.results())


def test_an_error_that_a_training_raises_alone_is_raised_after_the_others_finish(synthetic, tmp_path):
    class Broken(TrainHooks):
        def on_batch(self, model, x, y):
            raise RuntimeError("broken hook")

    together = mixed_jobs(synthetic, tmp_path / "together")
    together[1].hooks = Broken()
    run = Trainings(together, tmp_path / "stages")
    with pytest.raises(RuntimeError, match="broken hook"):
        Scheduler([run], max_concurrent=1, progress=False).run()  # alone from the start: no retry
    results = run.bench.results
    assert results["vgg_slim"]["status"] == "ok" and results["vgg"]["status"] == "failed"
    assert not (Stage(tmp_path / "stages", "training", {"job": "vgg"}).dir / "metrics.json").exists()
    assert results["resnet"]["status"] == "failed" and "stopped on an error" in results["resnet"]["note"]


def train_loss(row):
    return json.loads((Path(row["stage"]) / "metrics.json").read_text()).get("train_loss")


@pytest.mark.parametrize("method", ["slimming", "sss"])
def test_seeds_in_flight_together_give_the_single_seed_rows(smoke_cfg, tmp_path, caplog, method):
    """Every stage of both seeds in one schedule: slimming's unpruned and sparse stages train
    together, and so do the retrainings of both seeds; the rows are the single-seed runs'."""
    over = (f"method={method}", "strategies=[finetune,scratch_e,scratch_b,uniform]", "schedule.eval_every=1")
    with caplog.at_level(logging.INFO, logger="prunebench.scheduler"):
        together = pipeline.run(smoke_cfg("seeds=[0,1,2]", *over))
    assert "seed 2 sparse: trains 1 epochs; in flight: seed 0 unpruned, seed 0 sparse, seed 1 unpruned, " \
           "seed 1 sparse, seed 2 unpruned, seed 2 sparse" in caplog.text
    assert "seed 0 uniform: trains" in caplog.text
    line = next(ln for ln in caplog.text.splitlines() if "seed 0 uniform: trains" in ln)
    assert "seed 0 finetune, seed 0 scratch_e, seed 0 scratch_b, seed 0 uniform" in line
    single = []
    for s in (0, 1, 2):
        single += pipeline.run(smoke_cfg(f"seed={s}", f"cache_dir={tmp_path / 'single'}", *over))
    key = lambda r: (r["seed"], r["row"])  # noqa: E731
    assert [key(r) for r in together] == [key(r) for r in single]
    for t, r in zip(together, single):
        assert t["status"] == r["status"] == "ok", key(r)
        assert Path(t["stage"]).name == Path(r["stage"]).name
        assert (t["acc1"], t["params"], t["epochs"], train_loss(t)) == (r["acc1"], r["params"], r["epochs"],
                                                                        train_loss(r)), key(r)


@pytest.mark.parametrize("override,message", [("train.max_concurrent=0", "train.max_concurrent must be >= 1"),
                                              ("train.checkpoint_every=-1", "train.checkpoint_every must be >= 0")])
def test_bad_schedule_settings_are_refused_before_training(smoke_cfg, monkeypatch, override, message):
    monkeypatch.setattr(jobs, "training_of", lambda *a, **k: pytest.fail("trained despite a bad setting"))
    for seeds in ("seeds=[0,1]", "seed=0"):
        with pytest.raises(PrunebenchError, match=message):
            pipeline.run(smoke_cfg(seeds, override))


def test_a_stage_another_job_writes_is_looked_at_again_while_the_others_train(smoke_cfg, monkeypatch, caplog):
    """The finetune stage is locked by a live job: the other retrainings train meanwhile; once the
    lock goes, finetune trains too."""
    cfg = smoke_cfg("method=l1_norm", "strategies=[finetune,scratch_e,scratch_b]", "lock_timeout=60")
    plans = {p.row: p for p in protocol.Run(cfg).stages()}
    stage = Stage(cfg.cache_dir, plans["finetune"].kind, plans["finetune"].values)
    stage.dir.mkdir(parents=True)
    (stage.dir / "lock").write_text(f"{os.uname().nodename} {os.getppid()}")  # held by a live job
    monkeypatch.setattr(scheduler, "LOCK_POLL_S", 0.05)
    trained = []
    real = jobs.training_of
    monkeypatch.setattr(jobs, "training_of", lambda j, **k: trained.append(j.kind) or real(j, **k))

    def release_once_scratch_b_trained():
        while "scratch_b" not in trained:
            time.sleep(0.01)
        (stage.dir / "lock").unlink()
    threading.Thread(target=release_once_scratch_b_trained, daemon=True).start()
    with caplog.at_level(logging.INFO, logger="prunebench.scheduler"):
        rows = {r["row"]: r for r in pipeline.run(cfg)}
    assert "is being written by" in caplog.text and "looked at again every 0.05 s" in caplog.text
    assert trained.index("scratch_b") < trained.index("finetune")
    assert all(r["status"] == "ok" for r in rows.values())


def test_the_report_says_when_each_stage_ran(smoke_cfg, caplog):
    with caplog.at_level(logging.INFO, logger="prunebench.scheduler"):
        pipeline.run(smoke_cfg("method=l1_norm", "strategies=[scratch_b]"))
    report = caplog.text[caplog.text.index("schedule, "):]
    for row in ("unpruned", "pruned", "scratch_b"):
        assert any(line.strip().startswith(row) and "wall" in line for line in report.splitlines()), row
    assert "s/epoch" in report


@pytest.mark.slow
def test_runs_killed_at_random_moments_then_rerun_give_the_uninterrupted_table(smoke_cfg, tmp_path):
    """``kill -9`` of a two-seed run, twice, at moments drawn at random (after k stage files
    appeared: checkpoints, finished stages), then a rerun: the table of a run never interrupted."""
    import random
    import signal
    import subprocess
    import sys

    from tests.conftest import ROOT

    over = ["seeds=[0,1]", "method=slimming", "schedule.epochs=4", "schedule.steps_per_epoch=6",
            "train.checkpoint_every=0", "strategies=[finetune,scratch_e,scratch_b,uniform]"]
    whole = pipeline.run(smoke_cfg(*over))
    cache = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    draw = random.Random(1)  # kills after 3, then 2 new stage files
    for attempt in range(2):
        want = draw.randint(1, 8)
        p = subprocess.Popen([sys.executable, "-m", "prunebench", "experiment=smoke", f"cache_dir={cache}",
                              f"hydra.run.dir={tmp_path / f'run{attempt}'}", *over], cwd=tmp_path, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        def written():
            return {(f, f.stat().st_mtime_ns) for f in cache.glob("*/*") if f.name in ("checkpoint.pt", "metrics.json")
                    and f.exists()}
        before, seen = written(), set()
        deadline = time.monotonic() + 300
        while p.poll() is None and time.monotonic() < deadline:
            try:
                seen |= written() - before  # files this attempt wrote
            except FileNotFoundError:  # a checkpoint removed between the listing and its stat
                continue
            if len(seen) >= want:
                break
            time.sleep(0.005)
        p.send_signal(signal.SIGKILL)
        p.wait()
    again = pipeline.run(smoke_cfg(*over, f"cache_dir={cache}"))
    key = ("row", "seed", "status", "acc1", "acc1_best", "params", "flops", "epochs")
    assert [tuple(r[k] for k in key) for r in again] == [tuple(r[k] for k in key) for r in whole]
    assert [Path(r["stage"]).name for r in again] == [Path(r["stage"]).name for r in whole]
    assert not list(cache.glob("*/lock"))


@pytest.mark.slow
def test_two_processes_started_at_once_on_one_cache_share_its_stages(tmp_path):
    """Two runs of one command on one cache, started together: every stage is trained by one of
    them and read from the cache by the other (which trains its other stages meanwhile), and
    both write the same table."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    cache = tmp_path / "stages"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    over = ["experiment=smoke", "method=l1_norm", "strategies=[finetune,scratch_e,scratch_b,uniform]",
            f"cache_dir={cache}"]
    procs = [subprocess.Popen([sys.executable, "-m", "prunebench", *over, f"hydra.run.dir={tmp_path / f'run{i}'}"],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(log[-2000:] for log in logs)
    rows = ("unpruned", "pruned", "finetune", "scratch_e", "scratch_b", "uniform")
    for row in rows:
        trained = [any(line.split(" - ")[-1].startswith(f"{row}: {cache}") for line in log.splitlines())
                   for log in logs]
        read = [any(line.split(" - ")[-1].startswith(f"{row}: cached") for line in log.splitlines()) for log in logs]
        assert sorted(trained) == [False, True] and trained != read, (row, trained, read)
    tables = [(tmp_path / f"run{i}" / "results.csv").read_text() for i in range(2)]
    assert tables[0] == tables[1]
    assert len({f.parent for f in cache.glob("*/metrics.json")}) == len(rows)


def test_an_unreadable_stage_of_one_seed_stops_that_seed_alone(smoke_cfg, tmp_path):
    """A stage file that cannot be read (seed 1's finished finetune) is that seed's error: the
    other seed's trainings go on to their end, and the error is raised after."""
    from prunebench.stages import UnreadableStage

    over = ("method=l1_norm", "strategies=[finetune,scratch_b]")
    first = {r["row"]: r for r in pipeline.run(smoke_cfg("seed=1", *over))}
    (Path(first["finetune"]["stage"]) / "metrics.json").write_text("{not json")
    with pytest.raises(UnreadableStage):
        pipeline.run(smoke_cfg("seeds=[0,1]", *over))
    seed0 = {r["row"]: Path(r["stage"]) for r in pipeline.plan(smoke_cfg("seed=0", *over))}
    assert all((seed0[row] / "metrics.json").exists() for row in ("unpruned", "pruned", "finetune", "scratch_b"))


def test_a_training_whose_close_fails_is_its_rows_error_and_the_others_finish(synthetic, tmp_path):
    class Closing(Trainings):
        def stages(self):
            plans = super().stages()
            broken = plans[1]
            work = broken.work

            def failing(stage):
                training = work(stage)
                return jobs.Training(training.job, training.then, close=lambda: _fail("disk full"))
            broken.work = failing
            return plans

    def _fail(message):
        raise OSError(message)

    together = mixed_jobs(synthetic, tmp_path / "together")
    run = Closing(together, tmp_path / "stages")
    with pytest.raises(OSError, match="disk full"):
        Scheduler([run], progress=False).run()
    results = run.bench.results
    assert results["vgg_slim"]["status"] == "ok" and results["resnet"]["status"] == "ok"
    assert results["vgg"]["status"] == "failed" and "disk full" in results["vgg"]["note"]
    assert not list((tmp_path / "stages").glob("*/lock"))


def test_the_dry_run_plans_every_seeds_own_stages(smoke_cfg):
    over = ("method=l1_norm", "strategies=[scratch_e]")
    planned = pipeline.plan(smoke_cfg("seeds=[3,4]", *over))
    assert [(r["seed"], r["row"]) for r in planned] == [(3, "unpruned"), (3, "pruned"), (3, "scratch_e"),
                                                      (4, "unpruned"), (4, "pruned"), (4, "scratch_e")]
    for seed in (3, 4):
        rows = pipeline.run(smoke_cfg(f"seed={seed}", *over))
        assert [r["stage"] for r in rows] == [r["stage"] for r in planned if r["seed"] == seed]
