"""Every paper preset runs the real pipeline for a few steps (synthetic data)."""
import pytest

from prunebench import pipeline
from prunebench.cli import CONF_DIR

PRESETS = sorted(p.stem for p in (CONF_DIR / "experiment" / "rethinking").glob("*.yaml"))
SHRINK = ["dataset=synthetic", "schedule=smoke", "device=cpu", "progress=false", "strategy.finetune.epochs=1",
          "measure.latency_repeats=2"]


def test_presets_exist():
    assert "slimming_vgg19_cifar10" in PRESETS and "l1_norm_resnet56b_cifar10" in PRESETS


IMAGENET = [p for p in PRESETS if p.endswith("_imagenet")]
PLANNED = ["l1_norm_resnet34a_imagenet", "thinet_vgg16_tiny_imagenet", "channel_pruning_resnet50_2x_imagenet",
           "slimming_vgg11_imagenet", "sss_resnet50_41_imagenet"]


@pytest.mark.parametrize("preset", [p for p in PRESETS if p not in IMAGENET])
def test_preset_runs_every_row(smoke_cfg, preset):
    cfg = smoke_cfg(f"experiment=rethinking/{preset}", *SHRINK)
    rows = {r["row"]: r for r in pipeline.run(cfg)}
    assert all(r["status"] == "ok" for r in rows.values()), rows
    assert rows["pruned"]["flops"] < rows["unpruned"]["flops"]
    for row, figure in cfg.paper.items():
        assert rows[row]["paper_acc1"] == figure


@pytest.mark.parametrize("preset", IMAGENET)
def test_imagenet_preset_plans_its_architecture(smoke_cfg, preset):
    """ImageNet presets at full size are too large to train here: their dry run composes the
    preset, builds the architectures and checks the per-layer ratios name real layers."""
    cfg = smoke_cfg(f"experiment=rethinking/{preset}", "model.pretrained=false", "device=cpu", "dataset.image_size=64",
                    "strategies=[finetune,scratch_e,scratch_b]")
    assert cfg.dataset.name == "imagenet" and cfg.schedule.name == "imagenet" and cfg.strategy.scratch_b.max_factor == 2
    if preset not in PLANNED:
        return  # the same method and model as a planned one: composing it checks its keys
    rows = {r["row"]: r for r in pipeline.plan(cfg)}
    if cfg.method.layer_ratios:
        assert rows["pruned"]["flops"] < rows["unpruned"]["flops"]
        assert set(cfg.method.layer_ratios) <= set(rows["pruned"]["widths"])
    assert set(cfg.paper) <= {"unpruned", "pruned", "finetune", "scratch_e", "scratch_b"}
