"""The stage cache never loses a result, never trains what it should not, and never
runs code from a file: atomic writes, weights-only loads, unreadable files named,
locks waited for, and cache keys that follow every setting a stage reads."""
import copy
from enum import Enum
import logging
import os
import shutil
import threading
import time

import pytest
import torch
from omegaconf import OmegaConf

from prunebench import atomic, data, pipeline, protocol, scheduler
from prunebench.errors import PrunebenchError
from prunebench.stages import Stage
from prunebench.train import Recipe, job, train
from tests.cases import DATA
from tests.conftest import compose_config


def by_row(rows):
    return {r["row"]: r for r in rows}


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_a_file_that_would_run_code_is_refused_naming_it(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2), "x": Exploit()}, path)
    with pytest.raises(PrunebenchError, match=str(path)):
        atomic.load(path)


def test_the_checkpoint_loads_weights_only_and_a_corrupt_one_is_set_aside(tmp_path, caplog):
    ckpt = tmp_path / "checkpoint.pt"
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 10))
    recipe = Recipe(epochs=2, lr=0.01, batch_size=32, milestones=[0.5], steps_per_epoch=2)
    train(model, DATA, recipe, seed=0, checkpoint=ckpt, progress=False)
    state = torch.load(ckpt, weights_only=True)  # optimizer, scheduler and history included
    assert state["epoch"] == 2 and len(state["history"]) == 2 and "momentum_buffer" in str(state["optimizer"])
    ckpt.write_bytes(b"not a checkpoint")
    with caplog.at_level(logging.WARNING):
        out = train(model, DATA, recipe, seed=0, checkpoint=ckpt, progress=False)
    assert (tmp_path / "checkpoint.pt.corrupt").exists() and "starts over" in caplog.text
    assert [h["epoch"] for h in out["history"]] == [1, 2]  # trained again from epoch 0


def test_every_stage_file_is_written_atomically(smoke_cfg, monkeypatch):
    replaced = set()
    real = os.replace

    def spy(src, dst):
        assert os.path.dirname(os.fspath(src)) == os.path.dirname(os.fspath(dst))  # same folder
        replaced.add(os.fspath(dst))
        real(src, dst)
    monkeypatch.setattr(os, "replace", spy)
    rows = pipeline.run(smoke_cfg("method=magnitude", "strategy.lottery.rewind_epoch=1"))
    written = {os.path.join(r["stage"], f) for r in rows for f in os.listdir(r["stage"])}
    assert written and written <= replaced, written - replaced
    names = {os.path.basename(f) for f in written}
    assert {"model.pt", "init.pt", "epoch1.pt", "mask.pt", "arch.json", "widths.json", "density.json",
            "history.csv", "settings.json", "metrics.json"} <= names


@pytest.mark.parametrize("name", ["metrics.json", "model.pt", "arch.json"])
def test_an_unreadable_finished_stage_is_named_or_retrained(smoke_cfg, name):
    cfg = ("method=l1_norm", "strategies=[scratch_e]")
    first = by_row(pipeline.run(smoke_cfg(*cfg)))
    folder = first["unpruned"]["stage"]
    with open(os.path.join(folder, name), "wb") as f:
        f.write(b"\x00garbage")
    with pytest.raises(PrunebenchError, match="retry_failed=true") as e:
        pipeline.run(smoke_cfg(*cfg))
    assert folder in str(e.value) and name in str(e.value)
    again = by_row(pipeline.run(smoke_cfg(*cfg, "retry_failed=true")))
    assert again["unpruned"]["status"] == "ok" and again["unpruned"]["stage"] == folder


def test_a_weight_level_stage_without_its_mask_is_an_error(smoke_cfg):
    first = by_row(pipeline.run(smoke_cfg("method=magnitude", "strategies=[scratch_e]")))
    os.remove(os.path.join(first["pruned"]["stage"], "mask.pt"))
    with pytest.raises(PrunebenchError, match="mask.pt"):
        pipeline.run(smoke_cfg("method=magnitude", "strategies=[finetune]"))


def test_a_stage_finished_by_another_job_while_waiting_is_reused(smoke_cfg, tmp_path, monkeypatch):
    args = ("method=l1_norm", "strategies=[scratch_e]")
    other = compose_config("experiment=smoke", f"cache_dir={tmp_path / 'other'}", *args)
    done = by_row(pipeline.run(other))  # what the other job wrote
    cfg = smoke_cfg(*args, "lock_timeout=60")
    stage = Stage(cfg.cache_dir, "unpruned", protocol.base_settings(cfg, data.fingerprint(cfg.dataset)))
    stage.dir.mkdir(parents=True)
    (stage.dir / "lock").write_text(f"{os.uname().nodename} {os.getppid()}")  # held by a live job
    monkeypatch.setattr(scheduler, "LOCK_POLL_S", 0.05)

    def other_job_finishes():
        time.sleep(0.5)
        for f in os.listdir(done["unpruned"]["stage"]):
            shutil.copy(os.path.join(done["unpruned"]["stage"], f), stage.dir / f)
        (stage.dir / "lock").unlink()
    threading.Thread(target=other_job_finishes).start()
    real = job.training_of
    trained = []
    monkeypatch.setattr(job, "training_of", lambda j, **k: trained.append(j.kind) or real(j, **k))
    rows = by_row(pipeline.run(cfg))
    assert rows["unpruned"]["acc1"] == done["unpruned"]["acc1"] and rows["unpruned"]["status"] == "ok"
    assert "unpruned" not in trained and "scratch_e" in trained


# -- cache keys ---------------------------------------------------------------

STRUCTURED, SPARSE, AT_INIT = "l1_norm", "slimming", "snip"
NOT_KEYED = {  # settings no stage's result depends on
    "dataset.root", "dataset.download", "schedule.name", "schedule.eval_every", "schedule.eval_batch_size",
    "strategy.name", "device", "cache_dir", "retry_failed", "progress", "dry_run", "lock_timeout", "strict",
    "measure.latency_batch", "measure.latency_repeats", "measure.saturating_batch", "measure.onnx", "paper", "notes",
    "prune_only",  # which stages run, not what one computes
    "logger", "distributed",  # what is logged; DDP settings (keyed by bn_shards only under torchrun)
    "train",  # how a step runs (compiled, channels_last, side by side): train.precision is keyed, below
}
SPARSE_COMMON = {"sparse_init", "sparse_epochs", "sparse_lr"}
SPARSE_READS = {"slimming": {"sparsity"} | SPARSE_COMMON}  # method settings the sparse stage trains with
STRATEGY_READS = {"finetune": {"finetune"}, "scratch_e": {"scratch_e"}, "scratch_b": {"scratch_b"},
                  "uniform": {"scratch_b", "uniform"}, "lottery": {"lottery"}}
ALTERNATIVES = {  # values to change to where "another value" is not obvious
    "model.arch": None, "model.depth": 13, "model.classifier": "li", "model.shortcut": None, "model.block": None,
    "model.growth": None, "model.compression": None, "dataset.name": None, "method.name": None, "device": "auto", "method.selection": "threshold",
    "method.sparse_init": "unpruned", "method.sparse_epochs": 2, "method.sparse_lr": 0.01,
    "method.skip": ["conv2"], "method.layer_ratios": {"conv2": 0.25}, "schedule.milestones": [0.5],
    "train.precision": "bf16", "train.compile": "on", "train.backend": "aot_eager", "train.max_concurrent": 1,
    "strategy.scratch_b.max_factor": 2.0, "strategy.uniform.match": "params", "strategy.lottery.rewind_epoch": 1,
    "strategy.scratch_e.epochs": 3, "strategy.scratch_e.milestones": [0.5], "strategy.scratch_b.epochs": 3,
    "strategy.scratch_b.milestones": [0.5], "strategy.scratch_b.base_epochs": 3,
    "prune_only": None, "distributed.backend": "gloo",
    "schedule.warmup": "linear", "schedule.lr_schedule": "cosine", "schedule.optimizer": "adamw",
    "schedule.augment": "trivialaugment",
}
SCRATCH_B_ALONE = {"strategy.scratch_b.epochs", "strategy.scratch_b.milestones"}  # the baselines keep the formula
CHOICES = {"method.global_threshold": ("exact", "inclusive"), "strategy.scratch_b.flops": ("nonzero", "dense"),
           "strategy.scratch_b.rounding": ("ceil", "floor")}  # settings of two values: the other one
WEIGHT_LAYERS = {"method.skip": ["features.4"], "method.layer_ratios": {"features.4": 0.25},
                 "method.selection": "layer"}


def leaves(node, prefix=""):
    for key in node:
        path = f"{prefix}{key}"
        value = node._get_node(key)
        if OmegaConf.is_dict(value) and OmegaConf.get_type(value) not in (dict, None):
            yield from leaves(value, path + ".")
        else:
            yield path


def changed(path, value, method):
    if path == "method.iteration_training":  # rewind: weight-level methods only
        return "rewind" if method == AT_INIT else None
    if method == AT_INIT and path in WEIGHT_LAYERS:
        return WEIGHT_LAYERS[path]
    if path in CHOICES:
        return CHOICES[path][1 - CHOICES[path].index(value)]
    if path in ALTERNATIVES:
        return ALTERNATIVES[path]
    if isinstance(value, Enum):  # a setting of a few values (the schema's Enum): another one
        return next(str(m) for m in type(value) if m != value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value / 2 if value else 0.1
    if isinstance(value, str):
        return value + "x"
    return None


def keys(cfg, tmp_path):
    return {row: Stage(tmp_path, kind, vals).key for row, (kind, vals) in protocol.Run(cfg).stage_values().items()}


def readers(path, rows, method, cfg):
    """The rows whose stage reads ``path`` or follows one that does (its key holds its source's)."""
    out = direct_readers(path, rows, method, cfg)
    source = "sparse" if "sparse" in rows else "unpruned"
    if source in out and method != AT_INIT or "sparse" in out:
        out.add("pruned")
    if "pruned" in out:
        out |= {r for r in rows if r in STRATEGY_READS}
    return out


def direct_readers(path, rows, method, cfg):
    """The rows whose stage reads ``path``, from the stages' code."""
    top, _, rest = path.partition(".")
    strategies = {r for r in rows if r in STRATEGY_READS}
    if path == "train.precision":  # bf16 trains other weights: every trained stage and what follows
        return set(rows)
    if path in NOT_KEYED or top in NOT_KEYED:
        return set()
    if top in ("model", "dataset", "seed"):
        return set(rows)
    if top == "schedule":
        return set(rows) - ({"pruned"} if method == AT_INIT else set())
    if top == "method":
        return {"pruned"} | strategies | ({"sparse"} if rest in SPARSE_READS.get(method, ()) else set())
    if top == "strategy":
        node = rest.split(".")[0]
        out = {s for s in strategies if node in STRATEGY_READS[s]}
        if path in SCRATCH_B_ALONE:
            out &= {"scratch_b"}
        if path == "strategy.finetune.lr" and cfg.method.iterations > 1 and cfg.method.iteration_epochs > 0:
            out.add("pruned")  # fine-tuning between pruning iterations
        return out
    raise AssertionError(f"no reader declared for {path}")


@pytest.mark.parametrize("method,extra", [(STRUCTURED, ()), (SPARSE, ()), (AT_INIT, ()),
                                          (STRUCTURED, ("method.iterations=2", "method.iteration_epochs=1"))])
def test_a_stage_key_changes_exactly_with_what_the_stage_reads(tmp_path, method, extra):
    base = compose_config("experiment=smoke", f"method={method}", f"cache_dir={tmp_path}", *extra)
    before = keys(base, tmp_path)
    checked = 0
    for path in leaves(base):
        value = OmegaConf.select(base, path)
        new = changed(path, value, method)
        if new is None or path == "strategies":
            continue
        cfg = copy.deepcopy(base)
        OmegaConf.update(cfg, path, new, merge=False)
        after = keys(cfg, tmp_path)
        moved = {row for row in before if before[row] != after[row]}
        assert moved == readers(path, before, method, base), (path, value, new)
        checked += 1
    assert checked > 30


@pytest.mark.parametrize("method", ["slimming", "magnitude"])
def test_the_authors_global_threshold_renames_the_pruned_stage_and_every_stage_after_it(tmp_path, method):
    """slimming and magnitude now remove int(N p) + 1 by default: their pruned stages (and the retrainings
    that hold its key) must not reuse a stage cut with int(N p); `exact` keeps the former keys."""
    authors = compose_config("experiment=smoke", f"method={method}", f"cache_dir={tmp_path}")
    exact = compose_config("experiment=smoke", f"method={method}", f"cache_dir={tmp_path}",
                           "method.global_threshold=exact")
    before, after = keys(exact, tmp_path), keys(authors, tmp_path)
    assert {row for row in before if before[row] != after[row]} == set(before) - {"unpruned", "sparse"}
    values = protocol.Run(exact).stage_values()
    assert "global_threshold" not in values["pruned"][1]["method"]  # at the schema default: the former key
    assert protocol.Run(authors).stage_values()["pruned"][1]["method"]["global_threshold"] == "inclusive"


def test_sfp_all_scope_renames_the_sparse_stage_and_after_and_groups_keeps_the_former_keys(tmp_path):
    """method=sfp now zeroes every convolution (scope: all): its sparse stage and everything after it
    must not reuse the block-conv1-only stages; scope=groups (the former rule) keeps their keys."""
    all_ = compose_config("experiment=smoke", "method=sfp", "model=resnet20", f"cache_dir={tmp_path}")
    groups = compose_config("experiment=smoke", "method=sfp", "model=resnet20", f"cache_dir={tmp_path}",
                            "method.scope=groups")
    assert all_.method.scope == "all"
    before, after = keys(groups, tmp_path), keys(all_, tmp_path)
    assert {row for row in after if row in before and before[row] != after[row]} == set(before) - {"unpruned"}
    values = protocol.Run(groups).stage_values()
    assert "scope" not in values["sparse"][1]["sparse"] and "scope" not in values["pruned"][1]["method"]


def test_a_warm_up_schedule_renames_every_trained_stage(tmp_path):
    base = compose_config("experiment=smoke", "method=l1_norm", f"cache_dir={tmp_path}")
    warm = compose_config("experiment=smoke", "method=l1_norm", f"cache_dir={tmp_path}", "schedule.warmup_epochs=1")
    before, after = keys(base, tmp_path), keys(warm, tmp_path)
    assert all(before[row] != after[row] for row in before)


def test_rewinding_iterations_key_the_pruned_stage_by_the_snapshot_and_the_recipe(tmp_path):
    args = ("experiment=smoke", "method=magnitude", "method.iterations=2", "method.iteration_training=rewind",
            "schedule.epochs=2", f"cache_dir={tmp_path}")
    base = keys(compose_config(*args), tmp_path)
    epoch1 = keys(compose_config(*args, "strategy.lottery.rewind_epoch=1"), tmp_path)
    assert {r for r in base if base[r] != epoch1[r]} == set(base) - {"unpruned"}  # pruned and after
    lr = keys(compose_config(*args, "strategy.finetune.lr=0.01"), tmp_path)
    assert {r for r in base if base[r] != lr[r]} == {"finetune"}  # the fine-tuning lr plays no part in rewinding
    plain = keys(compose_config(*args[:2], f"cache_dir={tmp_path}", "schedule.epochs=2"), tmp_path)
    assert plain["pruned"] != base["pruned"] and plain["unpruned"] == base["unpruned"]


def test_densenet_filter_view_keys_its_stages_and_leaves_slimming_as_it_was(tmp_path):
    """Filter criteria on DenseNet score every convolution through the concatenations (the
    model's ``filter_groups``) where they saw DenseNet-BC's bottlenecks alone before: their sparse
    and pruned stages (and what follows) carry ``groups: filters``. Network slimming's stages on
    DenseNet keep their keys (pinned: computed before the filter view existed, with a fixed data
    fingerprint)."""
    cfg = compose_config("experiment=rethinking/slimming_densenet40_cifar10_40", f"cache_dir={tmp_path}")
    slimming = {row: Stage(tmp_path, kind, vals).key
                for row, (kind, vals) in protocol.Run(cfg, fingerprint="pinned").stage_values().items()}
    assert slimming == {"unpruned": "ffa7ff8ac1", "sparse": "e8a5e8528a", "pruned": "c20de0ad0d",
                        "finetune": "ff7e10d87d", "scratch_e": "2f69131cce", "scratch_b": "01b340c1de",
                        "uniform": "343744da21", "lottery": "d0241a2225"}
    for method in ("l1_norm", "sss"):
        values = protocol.Run(compose_config(f"method={method}", "model=densenet_bc100",
                                             f"cache_dir={tmp_path}"), fingerprint="none").stage_values()
        assert all(values[row][1].get("groups") == "filters" for row in ("pruned", "sparse") if row in values)
    values = protocol.Run(compose_config("method=l1_norm", "model=resnet56", f"cache_dir={tmp_path}"),
                          fingerprint="none").stage_values()
    assert "groups" not in values["pruned"][1]  # other models: as before
