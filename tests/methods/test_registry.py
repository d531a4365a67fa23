"""The registry, the YAML files, the schemas and the table labels agree."""
import importlib

import pytest
from omegaconf import OmegaConf

from prunebench import methods
from prunebench.cli import CONF_DIR
from prunebench.config import METHOD_SCHEMAS
from tests.conftest import compose_config

ALL = sorted(methods.METHODS)
EXPECTED = {"slimming", "l1_norm", "random", "sss", "thinet", "channel_pruning", "apoz", "autopruner", "taylor",
            "fpgm", "sfp", "magnitude", "snip", "sss_sigmoid", "sss_sensitivity", "dcp"}


def test_every_method_of_the_literature_is_registered():
    assert set(ALL) == EXPECTED


@pytest.mark.parametrize("name", ALL)
def test_method_yaml_schema_and_module_agree(name):
    assert (CONF_DIR / "method" / f"{name}.yaml").exists()
    cfg = compose_config(f"method={name}")
    assert cfg.method.name == name
    assert OmegaConf.get_type(cfg.method) is METHOD_SCHEMAS[name]
    cls = methods.METHODS[name]
    assert cls.paper, f"{name} names its paper"
    module = importlib.import_module(cls.__module__)
    assert module.__doc__ and len(module.__doc__) > 80, f"{cls.__module__} cites its paper in a docstring"
    assert cls.kind in ("structured", "weight")
