"""``dry_run=true``: every stage of a run with its model's params/FLOPs, its epochs and
its cache state, without training or reading the data. The L1-norm presets'
architectures are checked against the figures of Li et al. (ICLR 2017), Table 1."""
import pytest
import torch

from prunebench import methods, models, pipeline
from prunebench.cli import CONF_DIR
from tests.cases import MODEL_NAMES, MODEL_OPTIONS, PAIR_OPTIONS, REFUSED
from tests.conftest import compose_config, run_cli

PRESETS = sorted(str(p.relative_to(CONF_DIR / "experiment").with_suffix(""))
                 for p in (CONF_DIR / "experiment").rglob("*.yaml"))

# Li et al. 2017, Table 1 (CIFAR-10): (params, FLOPs) of the pruned model as fractions of the
# unpruned one's; VGG-16-A also in absolute parameters (5.4M of 15.0M)
PAPER = {
    "rethinking/l1_norm_vgg16a_cifar10": (1 - 0.640, 1 - 0.342),
    "rethinking/l1_norm_resnet56a_cifar10": (1 - 0.094, 1 - 0.104),
    "rethinking/l1_norm_resnet56b_cifar10": (1 - 0.137, 1 - 0.276),
    "rethinking/l1_norm_resnet110a_cifar10": (1 - 0.023, 1 - 0.159),
    "rethinking/l1_norm_resnet110b_cifar10": (1 - 0.324, 1 - 0.386),
}


def plan(*overrides):
    return {r["row"]: r for r in pipeline.plan(compose_config(*overrides))}


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_plans_without_data(tmp_path, preset):
    rows = plan(f"experiment={preset}", f"cache_dir={tmp_path}", f"dataset.root={tmp_path / 'nowhere'}")
    assert rows["unpruned"]["params"] > 0 and rows["unpruned"]["flops"] > 0 and rows["unpruned"]["epochs"] > 0
    assert not any(r["cached"] for r in rows.values())
    assert not any(tmp_path.iterdir()), "a dry run wrote to the cache"


@pytest.mark.parametrize("preset", sorted(PAPER))
def test_l1_presets_have_the_papers_params_and_flops(tmp_path, preset):
    rows = plan(f"experiment={preset}", f"cache_dir={tmp_path}")
    full, pruned = rows["unpruned"], rows["pruned"]
    params, flops = PAPER[preset]
    assert pruned["params"] / full["params"] == pytest.approx(params, abs=0.02)
    assert pruned["flops"] / full["flops"] == pytest.approx(flops, abs=0.02)
    assert pruned["widths"], "a predetermined architecture lists its widths"
    b = rows["scratch_b"]
    assert b["epochs"] == -(-full["epochs"] * full["flops"] // pruned["flops"])


def test_vgg16a_has_5_4m_parameters(tmp_path):
    rows = plan("experiment=rethinking/l1_norm_vgg16a_cifar10", f"cache_dir={tmp_path}")
    assert rows["unpruned"]["params"] == pytest.approx(15.0e6, rel=0.02)
    assert rows["pruned"]["params"] == pytest.approx(5.4e6, rel=0.02)


def test_data_dependent_widths_are_unknown_before_training(tmp_path):
    rows = plan("experiment=rethinking/slimming_vgg19_cifar10", f"cache_dir={tmp_path}")
    assert list(rows) == ["unpruned", "sparse", "pruned", "finetune", "scratch_e", "scratch_b", "uniform"]
    assert rows["pruned"]["params"] is None and rows["scratch_b"]["epochs"] is None
    assert rows["sparse"]["epochs"] == rows["unpruned"]["epochs"] == 160


def test_a_finished_run_plans_as_cached_with_its_measured_figures(smoke_cfg):
    cfg = smoke_cfg("method=slimming")
    rows = {r["row"]: r for r in pipeline.run(cfg)}
    planned = {r["row"]: r for r in pipeline.plan(cfg)}
    assert all(p["cached"] for p in planned.values())
    for row in ["pruned", "scratch_b", "uniform"]:
        assert planned[row]["params"] == rows[row]["params"] and planned[row]["epochs"] == rows[row]["epochs"]


def test_cli_dry_run_prints_the_stages_and_trains_nothing(tmp_path):
    out = run_cli("experiment=rethinking/l1_norm_resnet56a_cifar10", "dry_run=true", f"cache_dir={tmp_path}/c",
                  f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    for word in ["dry run", "unpruned", "scratch_b", "pruned widths"]:
        assert word in out.stdout, word
    assert not (tmp_path / "c").exists() and not (tmp_path / "run" / "results.csv").exists()


@pytest.mark.parametrize("method,model", [(m, n) for m in sorted(methods.METHODS) for n in MODEL_NAMES
                                          if (m, n) not in REFUSED])
def test_every_method_and_model_that_validation_accepts_plans(tmp_path, method, model):
    """Every pair of the registries but the refused ones (tests/cases.py REFUSED, checked in
    test_validate.py) plans its stages; where the configuration fixes the pruned widths, they
    are the widths of the groups the method prunes (uniform's search is left out: it is slow on
    the deep models and planned by the presets' test)."""
    rows = plan(f"method={method}", f"model={model}", *MODEL_OPTIONS[model], *PAIR_OPTIONS, f"cache_dir={tmp_path}",
                "strategies=[finetune,scratch_e,scratch_b]")
    assert rows["unpruned"]["params"] > 0 and rows["unpruned"]["flops"] > 0
    assert {"pruned", "finetune", "scratch_e", "scratch_b"} <= set(rows)
    assert not any(tmp_path.iterdir()), "a dry run wrote to the cache"
    pruned = rows["pruned"]
    if pruned["widths"] is not None:
        assert pruned["params"] < rows["unpruned"]["params"] and rows["scratch_b"]["epochs"] >= 1
        method_obj = methods.create(compose_config(f"method={method}").method)
        with torch.device("meta"):
            model_obj = models.build(models.spec_from_config(
                compose_config(f"model={model}", *MODEL_OPTIONS[model]).model, 3, 10))
        assert set(pruned["widths"]) == {g.name for g in models.family_groups(model_obj, method_obj.family)}
