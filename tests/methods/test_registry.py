"""The registry, the YAML files, the schemas and the table labels agree."""
import pytest
from omegaconf import OmegaConf

from prunebench import methods
from prunebench.cli import CONF_DIR
from tests.conftest import compose_config

ALL = sorted(methods.METHODS)


def test_the_schemas_are_the_methods_own():
    """One registry line adds a built-in method: its schema is the class's ``Config``, defined in its module."""
    assert methods.SCHEMAS == {name: cls.Config for name, cls in methods.METHODS.items()}
    for name, cls in methods.METHODS.items():
        assert cls.Config.__module__ == cls.__module__, name


@pytest.mark.parametrize("name", ALL)
def test_method_yaml_schema_and_module_agree(name):
    assert (CONF_DIR / "method" / f"{name}.yaml").exists()
    cfg = compose_config(f"method={name}")
    assert cfg.method.name == name
    assert OmegaConf.get_type(cfg.method) is methods.METHODS[name].Config
    cls = methods.METHODS[name]
    assert cls.paper, f"{name} names its paper"
    assert cls.kind in ("structured", "weight")
