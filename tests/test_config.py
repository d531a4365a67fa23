import pytest
from hydra.errors import ConfigCompositionException

from prunebench import data
from prunebench.errors import PrunebenchError
from prunebench.cli import CONF_DIR
from prunebench.protocol import base_settings
from prunebench.stages import Stage, settings
from tests.conftest import compose_config


def test_defaults_are_the_paper_setting():
    cfg = compose_config()
    assert (cfg.method.name, cfg.model.name, cfg.dataset.name) == ("slimming", "vgg19", "cifar10")
    assert cfg.schedule.epochs == 160 and cfg.schedule.batch_size == 64 and cfg.schedule.lr == 0.1
    assert cfg.strategy.finetune.epochs == 40 and cfg.strategy.finetune.lr == 0.001
    assert list(cfg.strategies) == ["finetune", "scratch_e", "scratch_b", "uniform", "lottery"]


@pytest.mark.parametrize("group", ["model", "dataset", "method", "schedule", "strategy", "experiment"])
def test_every_option_composes_and_names_itself(group):
    for path in sorted((CONF_DIR / group).rglob("*.yaml")):
        option = str(path.relative_to(CONF_DIR / group).with_suffix(""))
        cfg = compose_config(f"{group}={option}")
        if group not in ("experiment",):
            assert cfg[group].name == option, path  # file name == name: field == CLI choice == table label


def test_misspelt_key_is_an_error():
    with pytest.raises(PrunebenchError, match="method.pruning_ration is not a setting prunebench knows"):
        compose_config("method.pruning_ration=0.5")


def test_wrong_type_is_an_error():
    with pytest.raises(PrunebenchError, match="schedule.epochs") as e:
        compose_config("schedule.epochs=many")
    assert "\n" not in str(e.value)


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(ConfigCompositionException) as e:
        compose_config("method=magic")
    assert "slimming" in str(e.value.__cause__ or e.value) or "slimming" in str(e.value)


def test_method_specific_keys_are_checked():
    cfg = compose_config("method=slimming", "method.sparsity=1e-5")
    assert cfg.method.sparsity == 1e-5
    with pytest.raises(PrunebenchError, match="method.sparsity is not a setting prunebench knows"):
        compose_config("method=l1_norm", "method.sparsity=1e-5")


def test_settings_drop_schema_defaults():
    cfg = compose_config("experiment=smoke")
    s = settings(cfg.schedule)
    assert "momentum" not in s  # 0.9 is the schema default
    assert s["epochs"] == 1 and s["steps_per_epoch"] == 4


def test_stage_hashes_are_pinned(tmp_path):
    # Renaming a stage silently orphans every cached result: these must change only on purpose.
    assert Stage(tmp_path, "unpruned", {"model": {"name": "vgg19"}, "seed": 0}).key == "24314df1ba"
    assert Stage(tmp_path, "pruned", {"source": "abc", "method": {"name": "l1_norm"}}).key == "01322d91cf"
    quickstart = compose_config("experiment=quickstart", "dataset.root=/elsewhere")
    # the data's fingerprint keys the unpruned stage (issue 21): scikit-learn's digits, and the synthetic set
    assert data.fingerprint(quickstart.dataset) == "713b0003630b4d37"
    assert data.fingerprint(compose_config("experiment=smoke").dataset) == "15df07b2e4572337"
    assert Stage(tmp_path, "unpruned", base_settings(quickstart, "713b0003630b4d37")).key == "d2d3bf62c4"
