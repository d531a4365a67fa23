"""The lottery strategy (Frankle & Carbin, ICLR 2019): the kept weights of a weight-level
pruned model reset to the unpruned model's init (or its weights after epoch k), then
trained under the mask for the Scratch-E epochs."""
import json
from pathlib import Path

import pytest
import torch

from prunebench import pipeline
from prunebench.train import job
from prunebench.errors import PrunebenchError
from tests.conftest import ROOT

ROWS = ["unpruned", "pruned", "finetune", "scratch_e", "scratch_b", "uniform", "lottery"]


def load(folder, name):
    return torch.load(Path(folder) / name, weights_only=True)


def assert_masked_copy(state, source, mask):
    """``state`` is ``source`` with the pruned weights zeroed, every other tensor equal."""
    for k, v in source.items():
        assert torch.equal(state[k], v * mask[k] if k in mask else v), k


@pytest.mark.parametrize("method, model", [("magnitude", "vgg11"), ("magnitude", "resnet20"), ("snip", "vgg11")])
def test_lottery_starts_from_the_masked_unpruned_init(smoke_cfg, starts, method, model):
    extra = ["model.width=0.5"] if model.startswith("resnet") else []
    rows = {r["row"]: r for r in pipeline.run(smoke_cfg(f"method={method}", f"model={model}", *extra))}
    assert list(rows) == ROWS and all(r["status"] == "ok" for r in rows.values()), rows
    lottery = rows["lottery"]
    assert lottery["epochs"] == rows["scratch_e"]["epochs"] and "init" in lottery["note"]
    mask = load(rows["pruned"]["stage"], "mask.pt")
    init = load(rows["unpruned"]["stage"], "init.pt")
    assert_masked_copy(starts["lottery"], init, mask)
    assert all(torch.equal(m, mask[k]) for k, m in load(lottery["stage"], "mask.pt").items())
    # Scratch-E draws a new init under the same mask, so it is not the ticket by accident
    scratch = starts["scratch_e"]
    assert all(torch.count_nonzero(scratch[k][~m]) == 0 for k, m in mask.items())
    assert not all(torch.equal(scratch[k], init[k] * m) for k, m in mask.items())
    # trained: the kept weights moved, the pruned ones are still exactly zero
    final = load(lottery["stage"], "model.pt")
    assert all(torch.count_nonzero(final[k][~m]) == 0 for k, m in mask.items())
    assert not all(torch.equal(final[k], starts["lottery"][k]) for k in mask)


def test_rewinding_to_epoch_1_uses_the_unpruned_weights_after_one_epoch(smoke_cfg, starts):
    rows = {r["row"]: r for r in pipeline.run(smoke_cfg("method=magnitude", "schedule.epochs=2",
                                                        "strategies=[lottery]", "strategy.lottery.rewind_epoch=1"))}
    assert all(r["status"] == "ok" for r in rows.values()), rows
    unpruned = rows["unpruned"]["stage"]
    epoch1, init = load(unpruned, "epoch1.pt"), load(unpruned, "init.pt")
    mask = load(rows["pruned"]["stage"], "mask.pt")
    assert not torch.equal(epoch1["features.0.weight"], init["features.0.weight"])
    assert not torch.equal(epoch1["features.0.weight"], load(unpruned, "model.pt")["features.0.weight"])
    assert_masked_copy(starts["lottery"], epoch1, mask)
    assert rows["lottery"]["epochs"] == 2 and "epoch 1" in rows["lottery"]["note"]


def test_rewinding_to_an_epoch_the_unpruned_stage_did_not_save_is_a_clear_error(smoke_cfg):
    first = pipeline.run(smoke_cfg("method=magnitude", "schedule.epochs=2", "strategies=[lottery]"))
    assert first[-1]["row"] == "lottery" and first[-1]["status"] == "ok"  # rewind 0: init.pt is always saved
    with pytest.raises(PrunebenchError, match=r"rewinds to epoch 1 .*epoch1\.pt.*rewind_epoch=1"):
        pipeline.run(smoke_cfg("method=magnitude", "schedule.epochs=2", "strategies=[lottery]",
                               "strategy.lottery.rewind_epoch=1"))
    folders = {p for p in Path(smoke_cfg().cache_dir).iterdir() if p.name.startswith("lottery-")}
    failed = folders - {Path(first[-1]["stage"])}
    assert len(failed) == 1  # released, with no result recorded: deleting the unpruned stage lets it run
    assert not any((p / name).exists() for p in failed for name in ("lock", "metrics.json"))


@pytest.mark.parametrize("k", [-1, 3])
def test_a_rewind_epoch_outside_the_schedule_is_rejected_before_training(smoke_cfg, k, monkeypatch):
    monkeypatch.setattr(job, "training_of", lambda *a, **kw: pytest.fail("trained despite a bad rewind_epoch"))
    with pytest.raises(PrunebenchError, match="rewind_epoch must lie in"):
        pipeline.run(smoke_cfg("method=magnitude", "schedule.epochs=2", f"strategy.lottery.rewind_epoch={k}"))


def test_structured_methods_have_no_lottery_row(smoke_cfg):
    rows = [r["row"] for r in pipeline.run(smoke_cfg("method=l1_norm", "strategies=[lottery]"))]
    assert rows == ["unpruned", "pruned"]


# -- iterative magnitude pruning (the lottery ticket's) and the structured lottery ------------------------

def test_each_iteration_prunes_its_ratio_of_the_weights_still_kept():
    """cifar_prune_iterative.py:205: thre_index = total - total_nonzero + int(total_nonzero p): the zeros are
    skipped and int(nz p) + 1 of the non-zero weights go (inclusive); exact: int(nz p)."""
    from omegaconf import OmegaConf
    from prunebench.methods.magnitude import MagnitudeConfig
    from prunebench.pruning.masks import select_weights

    torch.manual_seed(0)
    scores = {"a.weight": torch.rand(40), "b.weight": torch.rand(60)}
    for rule, extra in (("inclusive", 1), ("exact", 0)):
        cfg = OmegaConf.structured(MagnitudeConfig(name="magnitude", selection="global", pruning_ratio=0.2,
                                                   global_threshold=rule))
        first = select_weights(scores, cfg)
        n1 = sum(int((~m).sum()) for m in first.values())
        assert n1 == 20 + extra
        second = select_weights(scores, cfg, kept=first)
        assert all(torch.equal(second[n] & first[n], second[n]) for n in scores)  # pruned stays pruned
        n2 = sum(int((~m).sum()) for m in second.values()) - n1
        assert n2 == int((100 - n1) * 0.2) + extra
        live = torch.cat([scores[n][first[n]] for n in scores])
        gone = torch.cat([scores[n][first[n] & ~second[n]] for n in scores])
        assert torch.equal(gone.sort().values, live.sort().values[:n2])  # the lowest of those still kept


def rows_of(cfg):
    return {r["row"]: r for r in pipeline.run(cfg)}


def test_iterative_magnitude_pruning_rewinds_to_the_init_and_trains_the_recipe_between_iterations(smoke_cfg,
                                                                                                      starts):
    from prunebench.pruning.surgery import prunable_weights

    cfg = smoke_cfg("method=magnitude", "method.iterations=2", "method.iteration_training=rewind",
                    "method.pruning_ratio=0.36", "schedule.epochs=2", "strategies=[scratch_e,lottery]")
    planned = {r["row"]: r for r in pipeline.plan(cfg)}
    assert planned["pruned"]["epochs"] == 2  # one training of the recipe between the two iterations
    rows = rows_of(cfg)
    assert list(rows) == ["unpruned", "pruned", "scratch_e", "lottery"]
    assert all(r["status"] == "ok" for r in rows.values()), rows
    assert rows["pruned"]["epochs"] == 2
    init, mask = load(rows["unpruned"]["stage"], "init.pt"), load(rows["pruned"]["stage"], "mask.pt")
    between = starts["prune 1/2"]  # the training between the iterations starts from the masked init
    first = {k: (between[k] != 0) | (init[k] == 0) for k in mask}
    assert_masked_copy(between, init, {k: first[k] for k in mask})
    convs = [k for k in mask if k != "classifier.weight"]
    n = sum(mask[k].numel() for k in convs)
    removed1 = sum(int((~first[k]).sum()) for k in convs)
    removed = sum(int((~mask[k]).sum()) for k in convs)
    step = 1 - (1 - 0.36) ** 0.5  # 0.2 of what is left, twice
    assert removed1 == int(n * step + 1e-6) + 1  # the authors' threshold: int(N p) + 1
    assert removed - removed1 == int((n - removed1) * step + 1e-6) + 1  # of the weights still kept
    assert all(torch.equal(mask[k] & first[k], mask[k]) for k in mask)  # what the first iteration pruned stays
    assert mask["classifier.weight"].all()
    assert_masked_copy(starts["lottery"], init, mask)  # the ticket: the final mask on the same init
    assert not list(Path(rows["pruned"]["stage"]).glob("round*.pt"))
    assert not (Path(rows["pruned"]["stage"]) / "history.csv").exists()


def test_weight_level_iterations_can_fine_tune_between_them(smoke_cfg, starts):
    cfg = smoke_cfg("method=magnitude", "method.iterations=2", "method.iteration_epochs=1", "strategies=[]",
                    "prune_only=true")
    rows = rows_of(cfg)
    assert rows["pruned"]["status"] == "ok" and rows["pruned"]["epochs"] == 1
    trained = load(rows["unpruned"]["stage"], "model.pt")
    between = starts["prune 1/2"]  # the trained unpruned model, masked by the first iteration
    assert all(torch.equal(between[k], trained[k]) or torch.equal(between[k], trained[k] * (between[k] != 0))
               for k in trained)
    assert any(not torch.equal(between[k], trained[k]) for k in trained)


@pytest.mark.parametrize("extra, match", [(("method=l1_norm",), "weight-level"),
                                          (("method=magnitude", "method.iteration_epochs=2"), "iteration_epochs at 0"),
                                          (("method=magnitude", "method.iteration_training=restart"),
                                           "iteration_training")])
def test_bad_iteration_training_is_refused_before_training(smoke_cfg, extra, match):
    with pytest.raises(PrunebenchError, match=match):
        pipeline.plan(smoke_cfg(*extra, "method.iterations=2", "method.iteration_training=rewind", *extra[1:]))


def test_structured_lottery_cuts_the_unpruned_init_with_the_kept_channels(smoke_cfg, starts):
    from prunebench.models import build

    cfg = smoke_cfg("method=l1_norm", "method.iterations=2", "strategies=[scratch_e,lottery]",
                    "strategy.lottery.structured=true")
    rows = rows_of(cfg)
    assert list(rows) == ["unpruned", "pruned", "scratch_e", "lottery"]
    assert all(r["status"] == "ok" for r in rows.values()), rows
    assert rows["lottery"]["params"] == rows["pruned"]["params"] == rows["scratch_e"]["params"]
    keeps = load(rows["pruned"]["stage"], "keep.pt")
    assert len(keeps) == 2
    init = load(rows["unpruned"]["stage"], "init.pt")
    spec = json.loads((Path(rows["unpruned"]["stage"]) / "arch.json").read_text())
    groups = build(spec).channel_groups()
    first, second = groups[0], groups[1]
    ticket = starts["lottery"]
    for g, nxt in ((first, second),):  # conv1's filters, and conv2's input channels, from the init
        idx = keeps[0][g.name][keeps[1][g.name]]  # the second iteration indexes the first's survivors
        nidx = keeps[0][nxt.name][keeps[1][nxt.name]]
        assert torch.equal(ticket[f"{g.conv}.weight"], init[f"{g.conv}.weight"][idx])
        assert torch.equal(ticket[f"{nxt.conv}.weight"], init[f"{nxt.conv}.weight"][nidx][:, idx])
    assert not torch.equal(starts["scratch_e"][f"{first.conv}.weight"], ticket[f"{first.conv}.weight"])
    plain = [r["row"] for r in pipeline.run(smoke_cfg("method=l1_norm", "strategies=[lottery]"))]
    assert plain == ["unpruned", "pruned"]  # without strategy.lottery.structured: weight-level only


# -- the lottery-ticket comparison presets -----------------------------------------------------------------

LOTTERY_PRESETS = sorted(p.stem for p in (ROOT / "conf" / "experiment" /
                                          "lottery").glob("*.yaml"))


def test_the_lottery_presets_are_there():
    assert LOTTERY_PRESETS == ["l1_norm_resnet110a_cifar10", "l1_norm_resnet56a_cifar10", "l1_norm_vgg16a_cifar10",
                               "magnitude_vgg16_cifar10"]


@pytest.mark.parametrize("preset", LOTTERY_PRESETS)
def test_lottery_preset_composes_plans_its_rows_and_sweeps_both_learning_rates(tmp_path, preset):
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf
    from tests.conftest import compose_config

    path = ROOT / "conf" / "experiment" / "lottery" / f"{preset}.yaml"
    text = path.read_text()
    assert text.startswith("# @package _global_") and "# paper_source:" in text and "# paper_missing:" in text
    cfg = compose_config(f"experiment=lottery/{preset}", f"cache_dir={tmp_path}")
    assert list(cfg.strategies) == ["scratch_e", "lottery"] and cfg.schedule.lr == 0.1 and cfg.schedule.epochs == 160
    rows = {r["row"]: r for r in pipeline.plan(cfg)}
    assert list(rows) == ["unpruned", "pruned", "scratch_e", "lottery"]
    assert rows["scratch_e"]["epochs"] == rows["lottery"]["epochs"] == 160
    if cfg.method.name == "magnitude":  # iterative: 4 trainings of the recipe between 5 iterations
        assert cfg.method.iterations == 5 and cfg.method.iteration_training == "rewind"
        assert rows["pruned"]["epochs"] == 4 * 160
        assert abs(1 - (1 - cfg.method.pruning_ratio) ** (1 / 5) - 0.2) < 1e-9  # 20% of what is left, each time
    else:  # one shot, the architecture fixed by the per-layer ratios: the ticket and Scratch-E share it
        assert cfg.strategy.lottery.structured and rows["pruned"]["epochs"] == 0
        assert rows["lottery"]["params"] == rows["scratch_e"]["params"] == rows["pruned"]["params"]
        assert rows["pruned"]["params"] < rows["unpruned"]["params"]
    params = OmegaConf.load(path).hydra.sweeper.params
    overrides = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    (batch,) = BasicSweeper.split_arguments(overrides, None)
    jobs = [dict(o.split("=", 1) for o in job) for job in batch]
    assert len(jobs) == 10 and {j["schedule.lr"] for j in jobs} == {"0.1", "0.01"}
    assert compose_config(f"experiment=lottery/{preset}", "schedule.lr=0.01").schedule.lr == 0.01
