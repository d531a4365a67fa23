"""Every paper preset composes, carries the paper's figures (or says which it lacks and why),
and one preset per method and model family runs the real pipeline for a few steps (synthetic data)."""
import re

import pytest
from omegaconf import OmegaConf

from prunebench import pipeline
from prunebench.cli import CONF_DIR
from tests.conftest import compose_config

FOLDER = CONF_DIR / "experiment" / "rethinking"
PRESETS = sorted(p.stem for p in FOLDER.glob("*.yaml"))
SHRINK = ["dataset=synthetic", "schedule=smoke", "device=cpu", "progress=false", "strategy.finetune.epochs=1",
          "measure.latency_repeats=2", "strategy.scratch_b.base_epochs=null"]  # SFP's int(400 r): the schedule's E
ROWS = ("unpruned", "finetune", "scratch_e", "scratch_b")  # the rows the paper's tables report


def overrides(preset):
    """{group: option} of the preset's defaults list, read from the file alone."""
    out = {}
    for entry in OmegaConf.load(FOLDER / f"{preset}.yaml").defaults:
        for key, value in entry.items():
            out[key.replace("override /", "")] = value
    return out


def family(preset):
    o = overrides(preset)
    return o["method"], re.sub(r"\d.*", "", o["model"])  # vgg19 -> vgg, densenet_bc100 -> densenet_bc


IMAGENET = [p for p in PRESETS if p.endswith("_imagenet")]
PLANNED = ["l1_norm_resnet34a_imagenet", "thinet_vgg16_tiny_imagenet", "channel_pruning_resnet50_2x_imagenet",
           "slimming_vgg11_imagenet", "sss_resnet50_41_imagenet"]
REPRESENTATIVES = sorted({family(p): p for p in reversed(PRESETS) if p not in IMAGENET}.values())


def test_presets_exist():
    for name in ("slimming_vgg19_cifar10", "slimming_vgg19_cifar100", "l1_norm_resnet56b_cifar10",
                 "slimming_preresnet164_cifar10_40", "slimming_densenet40_cifar100_60",
                 "magnitude_vgg19_cifar10_80", "magnitude_densenet_bc100_cifar100_50", "sfp_resnet56_cifar10_30"):
        assert name in PRESETS


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes(preset):
    cfg = compose_config(f"experiment=rethinking/{preset}")
    o = overrides(preset)
    assert (cfg.method.name, cfg.model.name, cfg.dataset.name) == (o["method"], o["model"], o["dataset"])
    assert set(cfg.paper) <= set(ROWS) | {"pruned"}  # SSS's lines: the accuracy SSS reports for its pruned model


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_carries_the_papers_figures_or_says_why(preset):
    text = (FOLDER / f"{preset}.yaml").read_text()
    assert "# paper_source:" in text, "say where the figures come from (or that none were at hand)"
    paper = OmegaConf.load(FOLDER / f"{preset}.yaml").get("paper", {})
    missing = " ".join(re.findall(r"^# paper_missing: (.*)$", text, flags=re.M))
    for row in ROWS:
        assert row in paper or row in missing, f"{row}: give the paper's figure or name it in '# paper_missing:'"
    assert all(isinstance(v, float) and 0 < v < 100 for v in paper.values())


@pytest.mark.slow
@pytest.mark.parametrize("preset", REPRESENTATIVES)
def test_preset_runs_every_row(smoke_cfg, preset):
    cfg = smoke_cfg(f"experiment=rethinking/{preset}", *SHRINK, "model.width=0.25", "method.min_channels=1")
    rows = {r["row"]: r for r in pipeline.run(cfg)}
    assert all(r["status"] == "ok" for r in rows.values()), rows
    assert rows["pruned"]["flops"] < rows["unpruned"]["flops"]
    for row, figure in cfg.paper.items():
        assert rows[row]["paper_acc1"] == figure


@pytest.mark.parametrize("preset", IMAGENET)
def test_imagenet_preset_composes_the_authors_recipe(smoke_cfg, preset):
    cfg = smoke_cfg(f"experiment=rethinking/{preset}", "model.pretrained=false")
    assert cfg.dataset.name == "imagenet" and cfg.schedule.name == "imagenet" and cfg.strategy.scratch_b.max_factor == 2
    assert set(cfg.paper) <= {"unpruned", "pruned", "finetune", "scratch_e", "scratch_b"}


@pytest.mark.parametrize("preset", PLANNED)
def test_imagenet_preset_plans_its_architecture(smoke_cfg, preset):
    """ImageNet presets at full size are too large to train here: the dry run of one preset per
    method and model builds the architectures and checks the per-layer ratios name real layers
    (the other presets of a method and model differ in their ratios only)."""
    cfg = smoke_cfg(f"experiment=rethinking/{preset}", "model.pretrained=false", "device=cpu", "dataset.image_size=64",
                    "strategies=[finetune,scratch_e,scratch_b]")
    rows = {r["row"]: r for r in pipeline.plan(cfg)}
    if cfg.method.layer_ratios:
        assert rows["pruned"]["flops"] < rows["unpruned"]["flops"]
        assert set(cfg.method.layer_ratios) <= set(rows["pruned"]["widths"])
    assert rows["unpruned"]["params"] > 0 and {"finetune", "scratch_e", "scratch_b"} <= set(rows)
