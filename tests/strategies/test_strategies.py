"""Strategies are units behind a registry: each names itself, keys its own cache, and
the protocol, the bench, the scheduler and the planner hold no strategy-specific branch. Also: the per-epoch history and
acc1_best, the uniform baseline matched by parameters, the weight-level
density-corrected re-initialisation."""
import ast
import csv
import inspect
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from prunebench import bench, pipeline, planner, protocol, scheduler, strategies
from prunebench.pruning.masks import sparse_init
from prunebench.stages import Stage


def by_row(rows):
    return {r["row"]: r for r in rows}


def test_registry_names_are_the_rows_and_the_yaml_list():
    assert list(strategies.STRATEGIES) == ["finetune", "scratch_e", "scratch_b", "uniform", "lottery", "guided",
                                           "finetune_large", "lr_rewind", "one_cycle", "distill", "random_arch",
                                           "shuffled", "reinit", "small_model"]
    for name, cls in strategies.STRATEGIES.items():
        assert cls.name == name and inspect.getmodule(cls).__doc__


@pytest.mark.parametrize("module", [pipeline, protocol, bench, scheduler, planner], ids=lambda m: m.__name__)
def test_the_run_names_no_strategy(module):
    source = inspect.getsource(module)
    strings = {n.value for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert not strings & set(strategies.STRATEGIES), f"{module.__name__} holds a strategy-specific branch"


def test_methods_and_strategies_do_not_import_the_run():
    root = Path(pipeline.__file__).parent
    run = {f"prunebench.{m}" for m in ("pipeline", "protocol", "bench", "scheduler", "planner")}
    for path in [*root.glob("methods/*.py"), *root.glob("strategies/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
            elif isinstance(node, ast.Import):
                names = {a.name for a in node.names}
            else:
                continue
            assert not names & run, (path, names & run)


def test_each_strategy_keys_its_cache_with_its_own_settings(smoke_cfg):
    base = protocol.Run(smoke_cfg("method=l1_norm")).stage_values()
    changed = {"finetune": "strategy.finetune.lr=0.5", "scratch_b": "strategy.scratch_b.max_factor=2",
               "uniform": "strategy.uniform.match=params", "lottery": "strategy.lottery.rewind_epoch=1"}
    for name, override in changed.items():
        other = protocol.Run(smoke_cfg("method=l1_norm", override)).stage_values()
        assert Stage("x", *other[name]).key != Stage("x", *base[name]).key, name
        untouched = [r for r in base if r != name and not (name == "scratch_b" and r == "uniform")]
        assert all(Stage("x", *other[r]).key == Stage("x", *base[r]).key for r in untouched), name


def test_scratch_e_and_b_keys_move_only_with_their_own_recipe(smoke_cfg):
    base = protocol.Run(smoke_cfg("method=l1_norm")).stage_values()
    assert "scratch_e" not in base["scratch_e"][1]  # unset: the key Scratch-E always had

    def moved(*overrides):
        other = protocol.Run(smoke_cfg("method=l1_norm", *overrides)).stage_values()
        return {r for r in base if Stage("x", *other[r]).key != Stage("x", *base[r]).key}
    assert moved("strategy.scratch_e.epochs=3") == {"scratch_e"}
    assert moved("strategy.scratch_e.milestones=[0.5]") == {"scratch_e"}
    assert moved("strategy.scratch_b.epochs=3") == {"scratch_b"}  # the uniform baseline keeps the formula
    assert moved("strategy.scratch_b.milestones=[0.5]") == {"scratch_b"}
    assert moved("strategy.scratch_b.max_factor=2") == {"scratch_b", "uniform"}


def test_scratch_e_and_b_train_their_own_epochs_and_lr_steps(smoke_cfg):
    rows = by_row(pipeline.run(smoke_cfg(
        "method=l1_norm", "schedule.epochs=2", "schedule.milestones=[0.5]", "strategies=[scratch_e,scratch_b,uniform]",
        "strategy.scratch_e.epochs=3", "strategy.scratch_e.milestones=[0.34]",
        "strategy.scratch_b.epochs=4", "strategy.scratch_b.milestones=[0.25,0.75]")))
    lrs = {row: [h["lr"] for h in json.loads((Path(rows[row]["stage"]) / "metrics.json").read_text())["history"]]
           for row in ("unpruned", "scratch_e", "scratch_b", "uniform")}
    assert lrs["unpruned"] == pytest.approx([0.05, 0.005])
    assert lrs["scratch_e"] == pytest.approx([0.05, 0.005, 0.005])  # step after epoch round(0.34 x 3) = 1
    assert lrs["scratch_b"] == pytest.approx([0.05, 0.005, 0.005, 0.0005])  # steps after epochs 1 and 3
    assert "lr x0.1 after epochs 1, 3 (strategy.scratch_b.milestones)" in rows["scratch_b"]["note"]
    full, pruned = rows["unpruned"], rows["pruned"]
    formula = -(-full["epochs"] * full["flops"] // pruned["flops"])
    assert rows["uniform"]["epochs"] == formula and len(lrs["uniform"]) == formula  # the budget formula, not 4


@pytest.mark.parametrize("override,message", [("strategy.scratch_e.epochs=0", "strategy.scratch_e.epochs must be"),
                                              ("strategy.scratch_b.milestones=[30]", "fractions of its epochs")])
def test_bad_own_recipes_are_one_line_errors(smoke_cfg, override, message):
    from prunebench.errors import PrunebenchError

    with pytest.raises(PrunebenchError, match=message):
        protocol.Run(smoke_cfg("method=l1_norm", override))


def test_iterative_pruning_keys_the_fine_tuning_lr(smoke_cfg):
    args = ("method=l1_norm", "method.iterations=2", "method.iteration_epochs=1")
    a = protocol.Run(smoke_cfg(*args)).stage_values()["pruned"]
    b = protocol.Run(smoke_cfg(*args, "strategy.finetune.lr=0.5")).stage_values()["pruned"]
    assert Stage("x", *a).key != Stage("x", *b).key
    one_shot = protocol.Run(smoke_cfg("method=l1_norm")).stage_values()["pruned"]
    assert "iteration_lr" not in one_shot[1]


def test_history_acc1_best_and_history_csv(smoke_cfg):
    rows = by_row(pipeline.run(smoke_cfg("method=l1_norm", "schedule.epochs=3", "schedule.eval_every=1",
                                         "strategy.finetune.epochs=2")))
    for name in ["unpruned", "finetune", "scratch_e", "scratch_b", "uniform"]:
        r = rows[name]
        metrics = json.loads((Path(r["stage"]) / "metrics.json").read_text())
        history = metrics["history"]
        assert [h["epoch"] for h in history] == list(range(1, r["epochs"] + 1))
        assert all(h["acc1"] is not None and math.isfinite(h["loss"]) and h["lr"] > 0 for h in history)
        assert history[-1]["acc1"] == pytest.approx(r["acc1"])  # the last epoch is the reported model
        assert r["acc1_best"] == max(h["acc1"] for h in history) >= r["acc1"]
        assert history[metrics["best_epoch"] - 1]["acc1"] == r["acc1_best"]
        with open(Path(r["stage"]) / "history.csv") as f:
            assert [int(row["epoch"]) for row in csv.DictReader(f)] == [h["epoch"] for h in history]


def test_eval_every_zero_evaluates_the_last_epoch_only(smoke_cfg):
    rows = by_row(pipeline.run(smoke_cfg("method=l1_norm", "schedule.epochs=2", "prune_only=true")))
    history = json.loads((Path(rows["unpruned"]["stage"]) / "metrics.json").read_text())["history"]
    assert [h["acc1"] is None for h in history] == [True, False]
    assert rows["unpruned"]["acc1_best"] == rows["unpruned"]["acc1"]


def test_lr_history_follows_the_schedule(smoke_cfg):
    rows = by_row(pipeline.run(smoke_cfg("method=l1_norm", "schedule.epochs=4", "schedule.milestones=[0.5]",
                                         "prune_only=true")))
    history = json.loads((Path(rows["unpruned"]["stage"]) / "metrics.json").read_text())["history"]
    assert [h["lr"] for h in history] == pytest.approx([0.05, 0.05, 0.005, 0.005])


@pytest.mark.parametrize("match", ["flops", "params"])
def test_uniform_matches_flops_or_params(smoke_cfg, match):
    rows = by_row(pipeline.run(smoke_cfg("method=l1_norm", f"strategy.uniform.match={match}",
                                         "strategies=[scratch_b,uniform]")))
    uniform, pruned = rows["uniform"], rows["pruned"]
    assert abs(uniform[match] - pruned[match]) <= 0.01 * pruned[match]
    assert f"matched by {match}" in uniform["note"]
    metrics = json.loads((Path(uniform["stage"]) / "metrics.json").read_text())
    assert metrics["match"] == match
    if match == "flops":
        assert uniform["epochs"] == rows["scratch_b"]["epochs"]
    else:  # its own FLOPs set its budget
        full = rows["unpruned"]
        assert uniform["epochs"] == -(-full["epochs"] * full["flops"] // uniform["flops"])


def test_weight_level_uniform_matches_params(smoke_cfg):
    rows = by_row(pipeline.run(smoke_cfg("method=magnitude", "strategy.uniform.match=params",
                                         "strategies=[uniform]")))
    assert abs(rows["uniform"]["params"] - rows["pruned"]["params"]) <= 0.01 * rows["pruned"]["params"]


def test_sparse_init_draws_kept_weights_at_the_density_corrected_scale():
    torch.manual_seed(0)
    conv = nn.Conv2d(64, 128, 3)
    model = nn.Sequential(conv)
    density = 0.1
    mask = torch.rand_like(conv.weight) < density
    sparse_init(model, {"0.weight": mask})
    w = conv.weight.detach()
    assert torch.count_nonzero(w[~mask]) == 0
    expected = math.sqrt(2 / (mask.float().mean().item() * 9 * 128))  # sqrt(2 / (density k^2 C_out))
    assert w[mask].std().item() == pytest.approx(expected, rel=0.05)
    assert expected > 3 * math.sqrt(2 / (9 * 128))  # far from the dense He scale


def test_weight_level_scratch_starts_from_the_density_corrected_init(smoke_cfg, starts):
    seen = starts
    rows = by_row(pipeline.run(smoke_cfg("method=magnitude", "method.pruning_ratio=0.9",
                                         "strategies=[scratch_e,lottery]")))
    mask = torch.load(Path(rows["pruned"]["stage"]) / "mask.pt", weights_only=True)
    name = "features.4.weight"  # a 3x3 convolution
    start, m = seen["scratch_e"][name], mask[name]
    assert torch.count_nonzero(start[~m]) == 0
    c_out = start.shape[0]
    expected = math.sqrt(2 / (m.float().mean().item() * 9 * c_out))
    assert start[m].std().item() == pytest.approx(expected, rel=0.25)
    init = torch.load(Path(rows["unpruned"]["stage"]) / "init.pt", weights_only=True)
    assert torch.equal(seen["lottery"][name], init[name] * m)  # the lottery keeps the original init


def test_group_stages_follow_the_feature_map_size():
    from prunebench import models
    from prunebench.models import resnet, vgg
    from prunebench.strategies.guided import group_stages

    v = models.build(vgg.spec_for(16, 0.125, 3, 10))
    assert list(group_stages(v, (3, 32, 32)).values()) == [0, 0, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]
    r = models.build(resnet.spec_for(20, 0.5, 3, 10))
    assert list(group_stages(r, (3, 32, 32)).values()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_guided_widths_on_a_hand_built_case():
    from prunebench.strategies.guided import stage_ratios

    full = {"a": 10, "b": 30, "c": 40}
    kept = {"a": 5, "b": 15, "c": 10}
    assert stage_ratios(full, kept, {"a": 0, "b": 0, "c": 1}) == [0.5, 0.25]
    assert stage_ratios(full, {"a": 5, "b": 15}, {"a": 0, "b": 0, "c": 1}) == [0.5, 0.0]  # c removed whole


def test_guided_row_follows_this_runs_stage_ratios(smoke_cfg, tmp_path):
    rows = by_row(pipeline.run(smoke_cfg("method=l1_norm", "model=vgg16", "method.pruning_ratio=0",
                                         "++method.layer_ratios={conv1:0.5,conv2:0.5,conv13:0.75}",
                                         "strategies=[scratch_b,guided]")))
    guided = rows["guided"]
    assert guided["status"] == "ok", guided
    widths = json.loads((Path(guided["stage"]) / "widths.json").read_text())
    full = json.loads((Path(rows["unpruned"]["stage"]) / "widths.json").read_text())
    # stage 0 (conv1, conv2) kept half; the last stage (conv11..13) kept (w + w + w/4) / 3w
    assert widths["conv1"] == round(0.5 * full["conv1"]) and widths["conv2"] == round(0.5 * full["conv2"])
    last = (full["conv11"] + full["conv12"] + round(full["conv13"] * 0.25)) / (3 * full["conv11"])
    assert widths["conv11"] == widths["conv13"] == round(last * full["conv11"])
    assert "stage ratios 0.50, 1.00, 1.00, 1.00" in guided["note"]
    b = -(-rows["unpruned"]["epochs"] * rows["unpruned"]["flops"] // guided["flops"])
    assert guided["epochs"] == b


def test_guided_transfers_a_sweeps_pattern_to_another_model(smoke_cfg, tmp_path):
    from prunebench.report import write

    first = pipeline.run(smoke_cfg("method=l1_norm", "model=vgg16", "method.pruning_ratio=0",
                                   "++method.layer_ratios={conv1:0.5,conv2:0.5}", "prune_only=true"))
    write(first, tmp_path / "sweep" / "0", "source run")
    rows = by_row(pipeline.run(smoke_cfg("method=l1_norm", "model=vgg19", "strategies=[guided]",
                                         f"strategy.guided.source={tmp_path / 'sweep'}")))
    guided = rows["guided"]
    assert guided["status"] == "ok" and str(tmp_path / "sweep") in guided["note"]
    widths = json.loads((Path(guided["stage"]) / "widths.json").read_text())
    assert widths["conv1"] == widths["conv2"] == 4 and widths["conv16"] == 64  # VGG-19 at width 0.125
    with pytest.raises(Exception, match="stages"):
        pipeline.run(smoke_cfg("method=l1_norm", "model=resnet20", "strategies=[guided]",
                               f"strategy.guided.source={tmp_path / 'sweep'}"))
