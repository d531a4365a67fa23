"""Every paper preset runs the real pipeline for a few steps (synthetic data)."""
import pytest

from prunebench import pipeline
from prunebench.cli import CONF_DIR

PRESETS = sorted(p.stem for p in (CONF_DIR / "experiment" / "rethinking").glob("*.yaml"))
SHRINK = ["dataset=synthetic", "schedule=smoke", "device=cpu", "progress=false", "strategy.finetune.epochs=1",
          "measure.latency_repeats=2"]


def test_presets_exist():
    assert "slimming_vgg19_cifar10" in PRESETS and "l1_norm_resnet56b_cifar10" in PRESETS


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_runs_every_row(smoke_cfg, preset):
    cfg = smoke_cfg(f"experiment=rethinking/{preset}", *SHRINK)
    rows = {r["row"]: r for r in pipeline.run(cfg)}
    assert all(r["status"] == "ok" for r in rows.values()), rows
    assert rows["pruned"]["flops"] < rows["unpruned"]["flops"]
    for row, figure in cfg.paper.items():
        assert rows[row]["paper_acc1"] == figure
