"""A setting out of its range is one line naming the setting, the rule, the fallback and the value
(prunebench/bounds.py), alike in validate and the strategies' own checks."""
import pytest

from prunebench import bounds
from prunebench.errors import PrunebenchError
from tests.conftest import compose_config


@pytest.mark.parametrize("check, message", [
    (lambda: bounds.positive("a.lr", 0), "a.lr must be > 0, got 0"),
    (lambda: bounds.positive("a.lr", None), "a.lr must be > 0, got None"),
    (lambda: bounds.positive("a.lr", -1.0, optional=True, null="the schedule's"),
     "a.lr must be > 0 (null: the schedule's), got -1.0"),
    (lambda: bounds.at_least("a.epochs", 0, 1, optional=True, null="the default"),
     "a.epochs must be >= 1 (null: the default), got 0"),
    (lambda: bounds.within("a.ratio", 1.0, 0, 1, open_high=True, what="the fraction removed"),
     "a.ratio must lie in [0, 1) (the fraction removed), got 1.0"),
    (lambda: bounds.within("a.low", 0.0, 0, 1, open_low=True), "a.low must lie in (0, 1], got 0.0"),
    (lambda: bounds.fractions("a.milestones", [0.5, 1.5]),
     "a.milestones must lie in [0, 1] (fractions of its epochs), got [0.5, 1.5]"),
])
def test_out_of_range_is_one_line_naming_setting_rule_and_value(check, message):
    with pytest.raises(PrunebenchError) as e:
        check()
    assert str(e.value) == message


@pytest.mark.parametrize("check", [
    lambda: bounds.positive("x", 1e-9), lambda: bounds.positive("x", None, optional=True),
    lambda: bounds.at_least("x", 0, 0), lambda: bounds.within("x", 0, 0, 1), lambda: bounds.within("x", 1, 0, 1),
    lambda: bounds.within("x", None, 0, 1, optional=True), lambda: bounds.fractions("x", None),
    lambda: bounds.fractions("x", [0, 1]),
])
def test_in_range_passes(check):
    check()


@pytest.mark.parametrize("override, message", [
    ("strategy.one_cycle.final_factor=2", "strategy.one_cycle.final_factor must lie in [0, 1], got 2.0"),
    ("strategy.one_cycle.warmup=1", "strategy.one_cycle.warmup must lie in [0, 1) (the fraction of epochs rising)"),
    ("strategy.distill.weight=1.5", "strategy.distill.weight must lie in [0, 1] (alpha on the KL term), got 1.5"),
    ("strategy.finetune_large.milestones=[2]", "strategy.finetune_large.milestones must lie in [0, 1] (fractions"),
])
def test_a_strategy_checks_its_own_settings_in_the_same_words(override, message):
    from prunebench import validate

    strategy = override.split(".")[1]
    cfg = compose_config("experiment=smoke", f"strategies=[{strategy}]", override)
    with pytest.raises(PrunebenchError) as e:
        validate.check(cfg)
    assert message in str(e.value)


@pytest.mark.parametrize("setting, value, message", [
    ("image_size", 0, "dataset.image_size must be >= 1, got 0"),
    ("min_scale", 0.0, "dataset.min_scale must lie in (0, 1], got 0.0"),
    ("workers", -1, "dataset.workers must be >= 0, got -1"),
])
def test_an_image_tree_setting_out_of_range_is_named_alone(tmp_path, setting, value, message):
    from omegaconf import OmegaConf
    from prunebench.data import folder

    cfg = OmegaConf.create({"root": str(tmp_path), "image_size": 32, "min_scale": 0.08, "workers": 0, setting: value})
    with pytest.raises(PrunebenchError) as e:
        folder.load(cfg)
    assert str(e.value) == message
