"""The preset comparing SSS with its variants at matched FLOPs composes for every method of its sweep."""
import pytest
import torch

from prunebench import measure
from prunebench.models import build, vgg
from prunebench.pruning import prune
from prunebench.pruning.selection import select
from tests.conftest import compose_config

PRESET = "experiment=sss_variants_vgg19_cifar10"
SWEEP = ["sss", "sss_sigmoid", "sss_sensitivity", "dcp"]


@pytest.mark.parametrize("name", SWEEP)
def test_the_preset_composes_for_each_method(name):
    cfg = compose_config(PRESET, f"method={name}")
    assert (cfg.model.name, cfg.dataset.name, cfg.schedule.epochs) == ("vgg19", "cifar10", 160)
    assert cfg.method.name == name and cfg.method.pruning_ratio == 0.3
    if name in ("sss_sensitivity", "dcp"):
        assert cfg.method.selection == "layer"
    else:
        assert cfg.method.selection == "threshold" and cfg.method.sparsity == 0.01


def test_other_experiments_and_methods_are_untouched():
    assert compose_config(PRESET, "method=l1_norm").method.pruning_ratio == 0.5
    assert compose_config("method=dcp").method.pruning_ratio == 0.5


def test_the_ratio_driven_variants_remove_about_half_the_flops():
    torch.manual_seed(0)
    model = build(vgg.spec_for(19, 1.0, 3, 10))
    cfg = compose_config(PRESET, "method=dcp").method
    scores = {g.name: torch.rand(model.get_submodule(g.conv).out_channels) for g in model.channel_groups()}
    pruned = prune(model, select(scores, cfg))
    kept = measure.count_flops(pruned, (3, 32, 32)) / measure.count_flops(model, (3, 32, 32))
    assert 0.48 < kept < 0.52, kept
