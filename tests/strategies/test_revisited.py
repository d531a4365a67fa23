"""Rethinking, revisited (docs/revisited.md): each new strategy's defining behaviour on made-up
cases, the smoke comparison with every new row, the weight-level controls, the held-out
selection recomputed from history.csv, the compute accounting and the provenance, and the
report's verdicts recomputed independently."""
import csv
import json
import math
import statistics
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from scipy import stats as scipy_stats

from prunebench import models, pipeline, protocol
from prunebench.errors import PrunebenchError
from prunebench.measure import spec_flops
from prunebench.pruning import uniform_spec, widths
from prunebench.pruning.masks import shuffled_masks
from prunebench.report import aggregate
from prunebench.stages import Stage
from prunebench.strategies.distill import distillation_loss
from prunebench.strategies.lr_rewind import rewound_lrs
from prunebench.strategies.one_cycle import one_cycle_lrs
from prunebench.strategies.random_arch import random_shape
from prunebench.train import Recipe

NEW = ["finetune_large", "lr_rewind", "one_cycle", "distill", "random_arch", "small_model"]


def by_row(rows):
    return {r["row"]: r for r in rows}


# -- the defining behaviour of each strategy, on made-up cases ------------------------------------------------

def test_rewound_schedule_is_the_last_epochs_of_the_unpruned_one():
    recipe = Recipe(epochs=160, lr=0.1, milestones=[0.5, 0.75], gamma=0.1)
    assert rewound_lrs(recipe, 40) == pytest.approx([0.001] * 40)
    assert rewound_lrs(recipe, 90) == pytest.approx([0.1] * 10 + [0.01] * 40 + [0.001] * 40)
    assert rewound_lrs(recipe, 160) == pytest.approx([0.1] * 80 + [0.01] * 40 + [0.001] * 40)
    warm = Recipe(epochs=4, lr=1.0, milestones=[0.5], gamma=0.5, warmup_epochs=1, warmup_factor=0.1)
    assert rewound_lrs(warm, 4) == pytest.approx([0.1, 1.0, 0.5, 0.5])


def test_one_cycle_rises_then_falls_linearly():
    lrs = one_cycle_lrs(10, 1.0, 0.3, 25.0, 1e-4)
    start, end = 1 / 25, 1 / 25 * 1e-4
    assert lrs[:3] == pytest.approx([start + (1 - start) * k / 3 for k in (1, 2, 3)])
    assert lrs[2] == pytest.approx(1.0) and lrs[-1] == pytest.approx(end)
    assert lrs[3:] == pytest.approx([1 - (1 - end) * k / 7 for k in range(1, 8)])
    assert one_cycle_lrs(5, 0.2, 0.0, 25.0, 0.0) == pytest.approx([0.2, 0.15, 0.1, 0.05, 0.0])  # a linear decay


def test_random_widths_reach_the_target_within_one_channel_step():
    node = OmegaConf.create({"name": "vgg11", "arch": "vgg", "depth": 11, "width": 0.25})
    spec = models.spec_from_config(OmegaConf.merge(OmegaConf.structured(models.schema_of(node)), node), 3, 10)
    with torch.device("meta"):
        base = models.build(spec)
    full = widths(base, "channels")
    target = spec_flops(spec, (3, 16, 16)) // 3
    seen = set()
    for i in range(3):
        shape = random_shape(list(full), 100 + i, 0.1)
        assert all(0.1 <= v <= 1 for v in shape.values())
        out, factor, achieved, _ = uniform_spec(base, target, (3, 16, 16), 1, 0.0, family="channels", shape=shape)
        with torch.device("meta"):
            member = models.build(out)
        w = widths(member, "channels")
        assert achieved == spec_flops(out, (3, 16, 16))
        # one channel more or fewer in any group moves the FLOPs by at most this much
        step = max(abs(spec_flops(member.spec_with_widths({**w, g: w[g] + d}), (3, 16, 16)) - achieved)
                   for g in w for d in (1, -1) if 1 <= w[g] + d <= full[g])
        assert abs(achieved - target) <= step, (i, achieved, target, step)
        seen.add(tuple(sorted(w.items())))
    assert len(seen) == 3  # random members differ


def test_shuffled_mask_keeps_each_layers_density():
    g = torch.Generator().manual_seed(0)
    masks = {"a.weight": torch.rand(8, 4, 3, 3, generator=g) < 0.3, "b.weight": torch.rand(10, 20, generator=g) < 0.7}
    out = shuffled_masks(masks, seed=5)
    for name, mask in masks.items():
        assert out[name].shape == mask.shape and out[name].dtype == mask.dtype
        assert int(out[name].sum()) == int(mask.sum())
        assert not torch.equal(out[name], mask)
    assert all(torch.equal(out[k], shuffled_masks(masks, seed=5)[k]) for k in masks)  # seeded


def test_distillation_loss_against_a_hand_computation():
    logits = torch.tensor([[1.0, 2.0, 0.5]])
    teacher = torch.tensor([[2.0, 1.0, 0.0]])
    y = torch.tensor([1])
    t, alpha = 2.0, 0.3

    def softmax(v):
        e = [math.exp(x) for x in v]
        return [x / sum(e) for x in e]
    p_t = softmax([2.0 / t, 1.0 / t, 0.0])
    p_s = softmax([1.0 / t, 2.0 / t, 0.5 / t])
    kl = sum(a * math.log(a / b) for a, b in zip(p_t, p_s))
    ce = -math.log(softmax([1.0, 2.0, 0.5])[1])
    want = (1 - alpha) * ce + alpha * t * t * kl
    assert distillation_loss(logits, teacher, y, t, alpha).item() == pytest.approx(want, rel=1e-6)
    assert distillation_loss(teacher, teacher, y, t, 1.0).item() == pytest.approx(0.0, abs=1e-7)


def test_distillation_loss_smooths_hard_and_mixed_targets_as_the_recipe_does():
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.3, -1.0, 2.0]])
    teacher = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    mixed = torch.tensor([[0.0, 0.7, 0.3], [0.5, 0.0, 0.5]])  # mixup's soft targets
    hard = torch.tensor([1, 2])
    log_p = [[math.log(p) for p in row] for row in torch.softmax(logits.double(), 1).tolist()]

    def ce(targets, eps):  # by hand: the targets (1 - eps) y + eps / K, averaged over the batch
        return sum(-sum(((1 - eps) * q + eps / 3) * lp for q, lp in zip(t, row))
                   for t, row in zip(targets, log_p)) / 2
    kl = distillation_loss(logits, teacher, hard, 2.0, 1.0).item()
    for y, rows in ((hard, [[0, 1, 0], [0, 0, 1]]), (mixed, mixed.tolist())):
        for eps in (0.0, 0.1):
            got = distillation_loss(logits, teacher, y, 2.0, 0.4, label_smoothing=eps).item()
            assert got == pytest.approx(0.6 * ce(rows, eps) + 0.4 * kl, rel=1e-5)


def test_distill_under_mixup_and_label_smoothing_trains_on_the_mixed_soft_targets(smoke_cfg, monkeypatch):
    from prunebench.strategies import distill

    seen = []
    real = distill.distillation_loss

    def recording(logits, teacher, y, temperature, weight, label_smoothing=0.0):
        seen.append((tuple(y.shape), y.dtype, teacher.shape == logits.shape, label_smoothing))
        return real(logits, teacher, y, temperature, weight, label_smoothing)
    monkeypatch.setattr(distill, "distillation_loss", recording)
    rows = by_row(pipeline.run(smoke_cfg("method=l1_norm", "strategies=[distill]", "schedule.mixup_alpha=0.2",
                                         "schedule.label_smoothing=0.1", "strategy.distill.epochs=1")))
    assert rows["distill"]["status"] == "ok"
    assert seen and all(len(shape) == 2 and dtype.is_floating_point and same and eps == 0.1
                        for shape, dtype, same, eps in seen)


# -- settings: keys, checks ------------------------------------------------------------------------------------

def test_each_new_strategy_keys_its_cache_with_its_own_settings(smoke_cfg):
    strategies = "strategies=[finetune," + ",".join(NEW) + "]"
    base = protocol.Run(smoke_cfg("method=l1_norm", strategies)).stage_values()
    changed = {"finetune_large": "strategy.finetune_large.lr=0.02", "lr_rewind": "strategy.lr_rewind.epochs=1",
               "one_cycle": "strategy.one_cycle.warmup=0.5", "distill": "strategy.distill.temperature=2",
               "random_arch": "strategy.random_arch.members=2", "small_model": "strategy.small_model.width=0.1"}
    for name, override in changed.items():
        other = protocol.Run(smoke_cfg("method=l1_norm", strategies, override)).stage_values()
        assert Stage("x", *other[name]).key != Stage("x", *base[name]).key, name
        assert all(Stage("x", *other[r]).key == Stage("x", *base[r]).key for r in base if r != name), name


@pytest.mark.parametrize("override,message", [
    ("strategy.lr_rewind.epochs=5", "strategy.lr_rewind.epochs"),
    ("strategy.distill.weight=2", "strategy.distill.weight"),
    ("strategy.one_cycle.warmup=1", "strategy.one_cycle.warmup"),
    ("strategy.random_arch.members=0", "strategy.random_arch.members"),
    ("strategy.small_model.width=null", "strategy.small_model names no model"),
    ("strategy.small_model.model=nosuchmodel", "no conf/model option"),
    ("dataset.val_split=-1", "dataset.val_split"),
])
def test_bad_settings_are_one_line_errors(smoke_cfg, override, message):
    strategies = "strategies=[finetune," + ",".join(NEW) + "]"
    with pytest.raises(PrunebenchError, match=message):
        protocol.Run(smoke_cfg(strategies, override))


# -- runs -------------------------------------------------------------------------------------------------------

def test_smoke_comparison_every_new_row_ok_with_its_accounting(smoke_cfg):
    rows = by_row(pipeline.run(smoke_cfg("strategies=[finetune," + ",".join(NEW) + "]")))
    again = by_row(pipeline.run(smoke_cfg("strategies=[finetune," + ",".join(NEW) + "]")))  # from the cache
    assert {n: (r["acc1"], r["total_train_flops"]) for n, r in again.items()} == {
        n: (r["acc1"], r["total_train_flops"]) for n, r in rows.items()}
    assert all(rows[name]["status"] == "ok" for name in ["finetune", *NEW]), {n: rows[n]["note"] for n in rows}
    for name, r in rows.items():
        assert r["train_flops"] is not None and r["total_train_flops"] >= r["train_flops"] >= 0
        assert r["wall_seconds"] is not None and r["config_hash"] and r["torch_version"] == torch.__version__
    images = 4 * 32  # smoke: 4 steps of 32 images an epoch
    ft = rows["finetune"]
    assert ft["train_flops"] == ft["epochs"] * images * 3 * ft["flops"]
    assert ft["total_train_flops"] == sum(rows[r]["train_flops"] for r in ("unpruned", "sparse", "pruned", "finetune"))
    for own in ("random_arch", "small_model"):
        assert rows[own]["total_train_flops"] == rows[own]["train_flops"]  # trained from scratch: its own
    teacher = rows["distill"]["epochs"] * images * rows["unpruned"]["flops"]
    assert rows["distill"]["train_flops"] == 3 * rows["distill"]["epochs"] * images * rows["distill"]["flops"] + teacher
    metrics = json.loads((Path(rows["random_arch"]["stage"]) / "metrics.json").read_text())
    assert len(metrics["members"]) == 3 and rows["random_arch"]["members_n"] == 3
    accs = [m["acc1"] for m in metrics["members"]]
    assert rows["random_arch"]["acc1"] == pytest.approx(statistics.mean(accs))
    assert rows["random_arch"]["acc1_std"] == pytest.approx(statistics.stdev(accs))
    assert len({json.dumps(m["widths"], sort_keys=True) for m in metrics["members"]}) == 3
    assert metrics["provenance"]["config_hash"] == rows["random_arch"]["config_hash"]
    small = json.loads((Path(rows["small_model"]["stage"]) / "widths.json").read_text())
    assert max(small.values()) <= 32  # VGG-11 at width 0.0625 (the smoke preset's small model)
    history = {n: list(csv.DictReader(open(Path(rows[n]["stage"]) / "history.csv"))) for n in ("finetune", "distill")}
    assert history["distill"][0]["loss"] != history["finetune"][0]["loss"]  # the distillation loss trained it


def test_weight_level_smoke_with_shuffled_and_reinit(smoke_cfg):
    rows = by_row(pipeline.run(smoke_cfg("method=magnitude", "strategies=[scratch_e,lottery,shuffled,reinit]")))
    assert all(rows[n]["status"] == "ok" for n in ("scratch_e", "lottery", "shuffled", "reinit"))
    pruned = json.loads((Path(rows["pruned"]["stage"]) / "density.json").read_text())
    masks = torch.load(Path(rows["pruned"]["stage"]) / "mask.pt")
    params = dict(models.load(Path(rows["shuffled"]["stage"])).named_parameters())
    moved = 0
    for name, mask in masks.items():  # the shuffled row's weights keep each layer's density, not its positions
        kept = params[name] != 0
        assert kept.float().mean().item() == pytest.approx(pruned[name.rsplit(".", 1)[0]], abs=1e-6)
        moved += int((kept & ~mask.bool()).sum())
    assert moved > 0
    assert rows["shuffled"]["params"] == rows["pruned"]["params"]


def test_val_split_selects_the_epoch_recomputed_from_history(smoke_cfg):
    rows = pipeline.run(smoke_cfg("method=l1_norm", "dataset.val_split=48", "schedule.epochs=3",
                                  "schedule.eval_every=1", "strategies=[finetune,scratch_e]",
                                  "strategy.finetune.epochs=2"))
    trained = [r for r in rows if r["row"] in ("unpruned", "finetune", "scratch_e")]
    assert trained
    for r in trained:
        with open(Path(r["stage"]) / "history.csv") as f:
            history = [{k: float(v) for k, v in h.items()} for h in csv.DictReader(f)]
        assert all("val_acc1" in h for h in history)
        best = max(history, key=lambda h: (h["val_acc1"], -h["epoch"]))
        assert r["val_epoch"] == int(best["epoch"])
        assert r["acc1_val_selected"] == pytest.approx(best["acc1"])
    data_rows = protocol.Run(smoke_cfg("method=l1_norm", "dataset.val_split=48")).bench.data
    assert data_rows.val_size == 48 and data_rows.train_size == 256 - 48


def test_val_split_keys_every_stage_and_is_off_by_default(smoke_cfg):
    off = protocol.Run(smoke_cfg("method=l1_norm")).stage_values()
    on = protocol.Run(smoke_cfg("method=l1_norm", "dataset.val_split=16")).stage_values()
    assert all(Stage("x", *on[r]).key != Stage("x", *off[r]).key for r in off)


# -- the report over seeds, recomputed independently -----------------------------------------------------------

def write_run(folder: Path, seed: int, accs: dict, flops: dict):
    folder.mkdir(parents=True)
    cfg = {"model": {"name": "vgg11"}, "dataset": {"name": "digits"}, "method": {"name": "l1_norm",
           "pruning_ratio": 0.5}, "seed": seed}
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    with open(folder / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["row", "method", "model", "dataset", "pruning_ratio", "seed", "acc1",
                                          "acc1_best", "params", "flops", "total_train_flops", "status",
                                          "config_hash"])
        w.writeheader()
        for row, acc in accs.items():
            w.writerow({"row": row, "method": "l1_norm", "model": "vgg11", "dataset": "digits", "pruning_ratio": 0.5,
                        "seed": seed, "acc1": acc, "acc1_best": acc, "params": 1000, "flops": 2000,
                        "total_train_flops": flops[row], "status": "ok", "config_hash": "abc"})


def test_report_verdicts_match_an_independent_welch_test(tmp_path):
    accs = {"unpruned": [90.0, 90.5, 90.2], "finetune": [88.0, 88.4, 88.1], "scratch_b": [89.0, 89.9, 89.2],
            "lr_rewind": [89.5, 89.6, 89.8], "random_arch": [87.0, 88.5, 86.0], "small_model": [88.9, 89.0, 89.3]}
    flops = {"unpruned": 100, "finetune": 125, "scratch_b": 100, "lr_rewind": 200, "random_arch": 101,
             "small_model": 99}
    for seed in range(3):
        write_run(tmp_path / f"s{seed}", seed, {r: v[seed] for r, v in accs.items()}, flops)
    out = aggregate.report(tmp_path, metric="acc1", plots=True)
    with open(tmp_path / "revisited.csv") as f:
        recs = {(r["a"], r["b"]): r for r in csv.DictReader(f)}
    assert ("finetune", "lr_rewind") in recs and ("scratch_b", "random_arch") in recs
    assert ("finetune", "distill") not in recs  # rows the runs do not have
    for (a, b), r in recs.items():
        p = scipy_stats.ttest_ind(accs[a], accs[b], equal_var=False).pvalue
        assert float(r["p"]) == pytest.approx(p)
        assert float(r["diff"]) == pytest.approx(statistics.mean(accs[a]) - statistics.mean(accs[b]), abs=1e-4)
        assert float(r["a_std"]) == pytest.approx(statistics.stdev(accs[a]), abs=1e-4)
        better = a if statistics.mean(accs[a]) > statistics.mean(accs[b]) else b
        assert r["verdict"].startswith(f"{better} better") == (p < 0.05)
    assert float(recs[("finetune", "lr_rewind")]["b_total_train_flops"]) == 200
    assert any(p.name.startswith("compute_") and p.suffix == ".png" for p in out["plots"])
    assert "config_hash abc" in (tmp_path / "revisited.md").read_text()
    assert "config_hash abc" in (tmp_path / "paper.md").read_text()
    with pytest.raises(PrunebenchError, match="acc1_val_selected"):
        aggregate.report(tmp_path, metric="acc1_val_selected", plots=False)


def test_small_model_from_a_conf_option_or_the_runs_own_model(smoke_cfg):
    from prunebench.strategies import small_model

    cfg = smoke_cfg("strategy.small_model.model=torchvision", "strategy.small_model.name=mobilenet_v2",
                    "strategy.small_model.width=0.75")
    spec = models.spec_from_config(small_model.model_config(cfg), 3, 10)
    assert spec["name"] == "mobilenet_v2" and spec["width_mult"] == 0.75
    assert small_model.label(cfg) == "mobilenet_v2 width 0.75"
    cfg = smoke_cfg("model=resnet56", "model.shortcut=avgpool_pad", "strategy.small_model.width=null",
                    "strategy.small_model.depth=32")
    node = small_model.model_config(cfg)
    assert (node.depth, node.shortcut, node.width) == (32, "avgpool_pad", 0.125)  # the run's options carried over
    assert small_model.label(cfg) == "resnet32 width 0.125"


REVISITED_PRESETS = ["slimming_vgg19_cifar10", "l1_norm_resnet56b_cifar10", "magnitude_vgg19_cifar10_80"]


@pytest.mark.parametrize("preset", REVISITED_PRESETS)
def test_revisited_preset_is_its_rethinking_preset_plus_the_new_rows(preset):
    from tests.conftest import compose_config

    new, old = compose_config(f"experiment=revisited/{preset}"), compose_config(f"experiment=rethinking/{preset}")
    assert {"finetune", "scratch_e", "scratch_b", "uniform"} <= set(new.strategies)
    assert {"finetune_large", "lr_rewind", "one_cycle", "distill", "small_model"} <= set(new.strategies)
    assert ("random_arch" in new.strategies) == (new.method.name != "magnitude")
    assert ("shuffled" in new.strategies) == (new.method.name == "magnitude")
    for key in ("model", "method", "schedule", "paper"):
        assert new[key] == old[key], key
    assert new.dataset.val_split == 5000 and old.dataset.val_split == 0


@pytest.mark.slow
def test_revisited_preset_runs_every_row(smoke_cfg):
    cfg = smoke_cfg("experiment=revisited/l1_norm_resnet56b_cifar10", "dataset=synthetic", "schedule=smoke",
                    "device=cpu", "progress=false", "strategy.finetune.epochs=1", "strategy.lr_rewind.epochs=1",
                    "measure.latency_repeats=2", "model.width=0.125", "method.min_channels=1",
                    "dataset.val_split=16", "strategy.random_arch.members=1")
    rows = {r["row"]: r for r in pipeline.run(cfg)}
    assert set(cfg.strategies) <= set(rows) and all(r["status"] == "ok" for r in rows.values()), rows
    assert rows["small_model"]["flops"] < rows["unpruned"]["flops"]
    assert all(rows[r]["acc1_val_selected"] is not None for r in cfg.strategies)
