"""``dry_run=true``: every stage of a run with its model's params/FLOPs, its epochs and
its cache state, without training or reading the data. The L1-norm presets'
architectures are checked against the figures of Li et al. (ICLR 2017), Table 1."""
import pytest

from prunebench import pipeline
from prunebench.cli import CONF_DIR
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


# the authors' weight-level networks (rethinking-network-pruning cifar/weight-level/models/cifar/): PreResNet-110 with
# 12 bottlenecks a stage (preresnet.py:89-91); DenseNet-BC-100 by the paper's name, its released basic-layer DenseNet
# at compression 0.5 with model=densenet_c100 (densenet.py:74,79); params counted by hand from their layers
WEIGHT_LEVEL = {("magnitude_preresnet110_cifar10_30", ()): 1_146_842,
                ("magnitude_preresnet110_cifar100_50", ()): 1_169_972,
                ("magnitude_densenet_bc100_cifar10_80", ()): 769_162,
                ("magnitude_densenet_bc100_cifar100_30", ()): 800_032,
                ("magnitude_densenet_bc100_cifar10_30", ("model=densenet_c100",)): 4_068_490,
                ("magnitude_densenet_bc100_cifar100_50", ("model=densenet_c100",)): 4_129_600}


@pytest.mark.parametrize("preset,options", sorted(WEIGHT_LEVEL))
def test_weight_level_presets_build_the_authors_networks(tmp_path, preset, options):
    rows = plan(f"experiment=rethinking/{preset}", f"cache_dir={tmp_path}", *options)
    assert rows["unpruned"]["params"] == WEIGHT_LEVEL[preset, options]
    assert rows["unpruned"]["epochs"] == 160


# Scratch-E and Scratch-B of SSS on ImageNet as the authors trained them (rethinking-network-pruning
# imagenet/sparse-structure-selection/README.md:13, 15-19): epochs and the epochs after which the lr steps
SSS = {"sss_resnet50_26_imagenet": (179, "53, 106, 159"), "sss_resnet50_32_imagenet": (145, "43, 86, 129"),
       "sss_resnet50_41_imagenet": (117, "35, 70, 105")}


@pytest.mark.parametrize("preset", sorted(SSS))
def test_sss_presets_train_the_authors_scratch_recipes(tmp_path, preset):
    rows = plan(f"experiment=rethinking/{preset}", f"cache_dir={tmp_path}")
    epochs, steps = SSS[preset]
    assert rows["unpruned"]["epochs"] == 90
    assert rows["scratch_e"]["epochs"] == 100 and "after epochs 30, 60, 90" in rows["scratch_e"]["note"]
    assert rows["scratch_b"]["epochs"] == epochs and f"after epochs {steps} " in rows["scratch_b"]["note"]


# ThiNet's VGG-GAP and VGG-Tiny as the authors build them (rethinking-network-pruning imagenet/thinet/models/
# thinetvgg.py:21-31, 44-60): params counted from those layers; Scratch-B 180 epochs (imagenet/thinet/README.md)
THINET = {"thinet_vgg16_gap_imagenet": 8_322_696, "thinet_vgg16_tiny_imagenet": 1_325_368}


@pytest.mark.parametrize("preset", sorted(THINET))
def test_thinet_vgg_presets_retrain_the_authors_gap_networks(tmp_path, preset):
    rows = plan(f"experiment=rethinking/{preset}", f"cache_dir={tmp_path}")
    assert rows["unpruned"]["params"] == 138_357_544  # torchvision's VGG-16, the unpruned model
    for row in ("pruned", "finetune", "scratch_e", "scratch_b"):
        assert rows[row]["params"] == THINET[preset], row
    assert rows["scratch_b"]["epochs"] == 180
    assert "ThiNet's released" in rows["finetune"]["note"]
    assert rows["uniform"]["flops"] == pytest.approx(rows["pruned"]["flops"], rel=0.01)


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
