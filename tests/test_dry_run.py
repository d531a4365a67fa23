"""``dry_run=true``: every stage of a run with its model's params/FLOPs, its epochs and
its cache state, without training or reading the data. The L1-norm presets'
architectures are checked against the figures of Li et al. (ICLR 2017), Table 1."""
import json
from pathlib import Path

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


@pytest.mark.slow
def test_cli_dry_run_prints_the_stages_and_trains_nothing(tmp_path):
    out = run_cli("experiment=rethinking/l1_norm_resnet56a_cifar10", "dry_run=true", f"cache_dir={tmp_path}/c",
                  f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    for word in ["dry run", "unpruned", "scratch_b", "pruned widths"]:
        assert word in out.stdout, word
    assert not (tmp_path / "c").exists() and not (tmp_path / "run" / "results.csv").exists()


# -- Scratch-B of weight-level presets: the released code's dense count, or the non-zero FLOPs -------------

@pytest.mark.parametrize("preset", ["rethinking/magnitude_vgg19_cifar10_80",
                                    "rethinking/magnitude_densenet_bc100_cifar100_50", "figures/magnitude_vgg19"])
def test_weight_level_presets_plan_scratch_b_on_the_dense_count(tmp_path, preset):
    rows = plan(f"experiment={preset}", f"cache_dir={tmp_path}")
    assert rows["scratch_b"]["epochs"] == rows["unpruned"]["epochs"] == 160  # cifar_B.py:184-186: ratio 1
    assert "dense" in rows["scratch_b"]["note"]
    nonzero = plan(f"experiment={preset}", f"cache_dir={tmp_path}", "strategy.scratch_b.flops=nonzero")
    assert nonzero["scratch_b"]["epochs"] is None  # follows from the pruned model's non-zero FLOPs


def test_weight_level_scratch_b_epochs_both_ways_once_pruned(smoke_cfg):
    cfg = smoke_cfg("method=magnitude", "strategies=[scratch_b]", "schedule.epochs=2")
    rows = {r["row"]: r for r in pipeline.run(cfg)}
    full, pruned = rows["unpruned"]["flops"], rows["pruned"]["flops"]
    assert rows["scratch_b"]["epochs"] == -(-2 * full // pruned) > 2  # nonzero, the default: more epochs
    dense = smoke_cfg("method=magnitude", "strategies=[scratch_b]", "schedule.epochs=2",
                      "strategy.scratch_b.flops=dense")
    planned = {r["row"]: r for r in pipeline.plan(dense)}
    assert planned["pruned"]["cached"] and not planned["scratch_b"]["cached"]  # another key: another stage
    assert planned["scratch_b"]["epochs"] == 2
    trained = {r["row"]: r for r in pipeline.run(dense)}
    metrics = json.loads((Path(trained["scratch_b"]["stage"]) / "metrics.json").read_text())
    assert trained["scratch_b"]["epochs"] == 2 and "dense" in metrics["epochs_formula"]
    planned = {r["row"]: r for r in pipeline.plan(cfg)}
    assert planned["scratch_b"]["cached"] and planned["scratch_b"]["epochs"] == rows["scratch_b"]["epochs"]


def test_structured_scratch_b_is_the_same_either_way(tmp_path):
    nonzero = plan("experiment=rethinking/l1_norm_resnet56a_cifar10", f"cache_dir={tmp_path}")
    dense = plan("experiment=rethinking/l1_norm_resnet56a_cifar10", f"cache_dir={tmp_path}",
                 "strategy.scratch_b.flops=dense")
    assert dense["scratch_b"]["epochs"] == nonzero["scratch_b"]["epochs"] > 160


# -- soft filter pruning: every conv masked, Scratch-B int(400 r) with the milestones scaled by r -----------

@pytest.mark.parametrize("depth", [20, 56, 110])
def test_sfp_presets_plan_the_authors_scratch_rows(tmp_path, depth):
    from prunebench import measure, models, protocol
    from prunebench.planner import Planner
    from prunebench.strategies.scratch_b import budget

    preset = f"experiment=rethinking/sfp_resnet{depth}_cifar10_30"
    rows = plan(preset, f"cache_dir={tmp_path}")
    full, masked = rows["unpruned"]["flops"], rows["pruned"]["flops"]
    # the masked FLOPs by hand: every conv (stem, both convs of each block) keeps N - int(0.3 N) of its N filters
    spec = protocol.Run(compose_config(preset, f"cache_dir={tmp_path}"), fingerprint="none").bench.base_spec
    with __import__("torch").device("meta"):
        convs = {n: c.out_channels for n, c in models.build(spec).named_modules()
                 if c.__class__.__name__ == "Conv2d"}
    total, per_layer = measure.spec_layer_flops(spec, (3, 32, 32), list(convs))
    assert total == full
    assert masked == round(full - sum(f * int(0.3 * convs[n]) / convs[n] for n, f in per_layer.items()))
    assert rows["scratch_e"]["epochs"] == 200 and rows["sparse"]["epochs"] == 200
    assert rows["scratch_b"]["epochs"] == 400 * full // masked  # int(400 r), pruning_resnet_longer_scratch.py:163
    assert rows["pruned"]["params"] < rows["unpruned"]["params"] and rows["scratch_b"]["flops"] == masked
    planner = Planner(protocol.Run(compose_config(preset, f"cache_dir={tmp_path}"), fingerprint="none"))
    recipe = budget(planner, masked)["recipe"]
    at = sorted({int(round(m * recipe.epochs)) for m in recipe.milestones})
    assert at == [m * full // masked for m in (60, 120, 160)]  # [int(60 r), int(120 r), int(160 r)] (:166)
    assert recipe.warmup_epochs == 1 and recipe.lr == 0.1 and recipe.warmup_factor == 0.1  # epoch 0 at 0.01


def test_sfp_scratch_b_on_resnet56_is_552_epochs_by_prunebenchs_count(tmp_path):
    rows = plan("experiment=rethinking/sfp_resnet56_cifar10_30", f"cache_dir={tmp_path}")
    assert rows["scratch_b"]["epochs"] == 552 and "[82, 165, 220]" in rows["scratch_b"]["note"]


@pytest.mark.parametrize("preset", ["magnitude_vgg16_30_imagenet", "magnitude_vgg16_60_imagenet",
                                    "magnitude_resnet50_30_imagenet", "magnitude_resnet50_60_imagenet"])
def test_imagenet_weight_level_presets_prune_convolutions_only_and_plan_the_authors_epochs(tmp_path, preset):
    import torch
    from prunebench import models, protocol

    args = (f"experiment=rethinking/{preset}", f"cache_dir={tmp_path}", "model.pretrained=false",
            "dataset.image_size=64")
    rows = plan(*args)
    assert rows["scratch_b"]["epochs"] == rows["scratch_e"]["epochs"] == 90  # main_B.py:112-116: ratio 1
    assert rows["finetune"]["epochs"] == 10
    cfg = compose_config(*args)
    with torch.device("meta"):
        model = models.build(protocol.Run(cfg, fingerprint="none").bench.base_spec)
    # torchvision's linear layers (prunebench's VGG head holds them as 1x1-equivalent convolutions, classifier.*)
    head = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) or
            n.startswith("classifier.") and isinstance(m, torch.nn.Conv2d)}
    assert set(cfg.method.skip) == head and cfg.method.global_threshold == "inclusive"
    # Table 6: every row; VGG-16's printed unpruned 71.59 is torchvision's vgg16 without BN, not this base model
    assert set(cfg.paper) == {"finetune", "scratch_e", "scratch_b"} | ({"unpruned"} if "resnet50" in preset else set())


# a deeper model of a family builds the same blocks as its shallowest one: one model per family and block,
# the deep-only ones (PreResNet-164's bottlenecks, the DenseNet-100s) at a shallow depth of the same blocks
DEEPER_TWINS = {"vgg13": "vgg11", "vgg16": "vgg11", "vgg19": "vgg11", "vgg16_bn": "vgg11_bn", "resnet32": "resnet20",
                "resnet56": "resnet20", "resnet110": "resnet20", "preresnet110": "preresnet56",
                "vit_small_cifar": "vit_cifar"}
SHALLOW = {"preresnet164": ["model.depth=20"], "densenet_c100": ["model.depth=22"], "densenet_bc100": ["model.depth=22"]}


def pair_options(model):
    return [*MODEL_OPTIONS[model], *SHALLOW.get(model, [])]


@pytest.mark.parametrize("method,model", [(m, n) for m in sorted(methods.METHODS) for n in MODEL_NAMES
                                          if (m, n) not in REFUSED and n not in DEEPER_TWINS])
def test_every_method_and_model_that_validation_accepts_plans(tmp_path, method, model):
    """Every pair of the registries but the refused ones (tests/cases.py REFUSED, checked in
    test_validate.py) plans its stages; where the configuration fixes the pruned widths, they
    are the widths of the groups the method prunes (uniform's search is left out: it is slow on
    the deep models and planned by the presets' test)."""
    rows = plan(f"method={method}", f"model={model}", *pair_options(model), *PAIR_OPTIONS, f"cache_dir={tmp_path}",
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
                compose_config(f"model={model}", *pair_options(model)).model, 3, 10, 32))
        assert set(pruned["widths"]) == {g.name for g in models.family_groups(model_obj, method_obj.family)}
