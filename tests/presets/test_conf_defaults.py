"""``conf/`` lists only what differs from the schemas: a value in ``conf/{method,model,dataset,
schedule,strategy,logger}/*.yaml`` or ``conf/config.yaml`` equal to its schema's default is an
error, so that the dataclasses stay the one source of every default (stage keys read them).

Allow-list: a value a paper motivates may restate its default when its line's comment ends with
``[paper]`` and gives the paper's figure (``epochs: 160  # ... (Liu et al. 2019) [paper]``). The
keys that pick a node's schema (``name``, ``arch``) are always allowed."""
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from prunebench import config, data, methods, models
from prunebench.cli import CONF_DIR

GROUPS = ("method", "model", "dataset", "schedule", "strategy", "logger")
SELECTORS = {"name", "arch"}
MARK = "[paper]"


def schema_of(group: str, node: dict) -> type:
    if group == "method":
        return methods.METHODS[node["name"]].Config
    if group == "model":
        return models.ARCHS[node["arch"]].schema
    if group == "dataset":
        return data.SCHEMAS.get(node["name"], config.DatasetConfig)
    return {"schedule": config.ScheduleConfig, "strategy": config.StrategyConfig, "logger": config.LoggerConfig,
            "config": config.Config}[group]


def same(value, default) -> bool:
    if isinstance(value, (int, float)) and isinstance(default, (int, float)) and not isinstance(value, bool):
        return float(value) == float(default)
    return value == default


def restated(node: dict, defaults: dict, prefix: str = ""):
    """Dotted keys of ``node`` whose value equals the default beside it."""
    for key, value in node.items():
        if key in ("defaults", "hydra") or key in SELECTORS and not prefix or key not in defaults:
            continue
        default = defaults[key]
        if isinstance(value, dict) and isinstance(default, dict) and value:
            yield from restated(value, default, f"{prefix}{key}.")
        elif same(value, default):
            yield f"{prefix}{key}"


def marked(text: str, key: str) -> bool:
    """Whether the line setting ``key`` (its last part, in ``text``) ends its comment with MARK."""
    leaf = key.rsplit(".", 1)[-1]
    return any(line.strip().startswith(f"{leaf}:") and line.rstrip().endswith(MARK) for line in text.splitlines())


def files():
    out = [(group, p) for group in GROUPS for p in sorted((CONF_DIR / group).glob("*.yaml"))]
    return out + [("config", CONF_DIR / "config.yaml")]


@pytest.mark.parametrize("group,path", files(), ids=lambda x: x if isinstance(x, str) else Path(x).name)
def test_no_conf_value_restates_its_schema_default(group, path):
    text = path.read_text()
    node = yaml.safe_load(text) or {}
    defaults = OmegaConf.to_container(OmegaConf.structured(schema_of(group, node)), enum_to_str=True)
    bad = [key for key in restated(node, defaults) if not marked(text, key)]
    assert not bad, (f"{path.relative_to(CONF_DIR.parent)} restates the schema defaults of {bad}: remove them, or end "
                     f"the line's comment with {MARK} citing the paper's figure")


def test_the_check_finds_a_restated_default(tmp_path):
    node = {"name": "l1_norm", "pruning_ratio": 0.5, "min_channels": 4, "selection": "global", "skip": []}
    defaults = OmegaConf.to_container(OmegaConf.structured(methods.METHODS["l1_norm"].Config), enum_to_str=True)
    assert sorted(restated(node, defaults)) == ["min_channels", "pruning_ratio", "skip"]
    assert marked("pruning_ratio: 0.5  # Li et al. 2017 [paper]\n", "pruning_ratio")
    assert not marked("pruning_ratio: 0.5  # half\n", "pruning_ratio")
