"""The figure presets: one `prunebench -m experiment=figures/...` sweeps ratios x seeds through
Hydra's basic sweeper (`hydra.sweeper.params` in the preset), and the command line replaces a swept key."""
from pathlib import Path

import pytest
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from prunebench.cli import CONF_DIR

PRESETS = {"slimming_vgg19": ("slimming", 5), "magnitude_vgg19": ("magnitude", 6)}


def jobs(params, *cli):
    """The jobs the basic sweeper launches, as it builds them: the preset's params, then the command line."""
    overrides = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()] + list(cli))
    (batch,) = BasicSweeper.split_arguments(overrides, None)
    return [dict(o.split("=", 1) for o in job) for job in batch]


@pytest.mark.parametrize("name", PRESETS)
def test_figure_preset_sweeps_ratios_and_seeds(name):
    path = Path(CONF_DIR) / "experiment" / "figures" / f"{name}.yaml"
    assert path.read_text().startswith("# @package _global_")
    cfg = OmegaConf.load(path)
    method, ratios = PRESETS[name]
    assert {"override /method": method} in OmegaConf.to_container(cfg.defaults)
    assert cfg.strategy.uniform.match == "params" and "scratch_b" in cfg.strategies
    grid = jobs(cfg.hydra.sweeper.params)
    assert len(grid) == ratios * 5
    assert {j["seed"] for j in grid} == {"0", "1", "2", "3", "4"}
    assert len({j["method.pruning_ratio"] for j in grid}) == ratios
    fewer = jobs(cfg.hydra.sweeper.params, "seed=0,1")
    assert len(fewer) == ratios * 2


def test_the_slimming_figure_trains_the_table_4_network():
    from tests.conftest import compose_config

    figure = compose_config("experiment=figures/slimming_vgg19")
    table = compose_config("experiment=rethinking/slimming_vgg19_cifar10")
    assert figure.model == table.model and figure.model.bn_init == 0.5
    for key in ("selection", "sparsity", "min_channels", "sparse_init"):
        assert figure.method[key] == table.method[key], key
