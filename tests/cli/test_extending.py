"""docs/extending.md's examples, copied out of the page into a folder outside the package: the
method through the whole smoke comparison on the command line, the model, data set and strategy
composed, typed and run on the smoke preset in-process."""
import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from prunebench import cli, pipeline, protocol
from prunebench.errors import PrunebenchError
from prunebench.stages import Stage

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "extending.md"
BLOCK = re.compile(r'```(?:python|yaml) title="([^"]+)"\n(.*?)\n```', re.S)


def examples():
    """{relative path: text} of every titled code block of the page."""
    return {path: text + "\n" for path, text in BLOCK.findall(PAGE.read_text())}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """The page's package and config folder, written into a fresh folder; the package importable."""
    folder = tmp_path_factory.mktemp("work")
    for path, text in examples().items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(text)
    (folder / "mypkg" / "__init__.py").write_text("")
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))
    for name in [m for m in sys.modules if m == "mypkg" or m.startswith("mypkg.")]:
        del sys.modules[name]


def compose(work, *overrides):
    return cli.compose(["experiment=smoke", f"cache_dir={work / 'stages'}", *overrides], config_dir=work / "myconf")


def by_row(rows):
    return {r["row"]: r for r in rows}


def test_the_page_holds_each_kind_of_example():
    assert set(examples()) == {"mypkg/pruning.py", "mypkg/models.py", "mypkg/data.py", "mypkg/strategies.py",
                               "myconf/method/mean_abs.yaml", "myconf/model/small_net.yaml",
                               "myconf/dataset/stripes.yaml", "myconf/strategy/warm.yaml"}
    method = examples()["mypkg/pruning.py"]
    assert len([line for line in method.splitlines() if line.strip()]) <= 16  # a criterion in about 15 lines


def test_the_method_example_runs_the_whole_smoke_comparison_from_the_command_line(work, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(work)]), "COLUMNS": "200"}
    p = subprocess.run([sys.executable, "-m", "prunebench", "--config-dir", str(work / "myconf"), "method=mean_abs",
                        "experiment=smoke", f"cache_dir={tmp_path / 'stages'}"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    [run_dir] = (tmp_path / "outputs" / "runs").iterdir()
    with open(run_dir / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["row"] for r in rows] == ["unpruned", "pruned", "finetune", "scratch_e", "scratch_b", "uniform"]
    assert all(r["status"] == "ok" for r in rows), rows
    assert {r["method"] for r in rows} == {"mean_abs"}
    assert float(rows[1]["params"]) < float(rows[0]["params"])


def test_the_method_is_typed_by_its_own_schema_and_keyed_by_its_class(work):
    cfg = compose(work, "method=mean_abs")
    assert OmegaConf.get_type(cfg.method).__name__ == "MeanAbsConfig" and cfg.method.power == 2.0
    values = protocol.Run(cfg, fingerprint="f").stage_values()
    assert values["pruned"][1]["method"]["_target_"] == "mypkg.pruning.MeanAbs"
    other = protocol.Run(compose(work, "method=mean_abs", "method.power=3"), fingerprint="f").stage_values()
    assert Stage(work, *values["pruned"]).key != Stage(work, *other["pruned"]).key
    assert Stage(work, *values["unpruned"]).key == Stage(work, *other["unpruned"]).key
    with pytest.raises(PrunebenchError, match=r"method.powr is not a setting .*did you mean method.power\?"):
        compose(work, "method=mean_abs", "method.powr=3")
    with pytest.raises(PrunebenchError, match="method.power") as e:
        compose(work, "method=mean_abs", "method.power=strong")
    assert "\n" not in str(e.value)


def test_the_model_example_is_pruned_through_its_dependency_graph(work):
    cfg = compose(work, "model=small_net", "model.width=1.0", "method=l1_norm", "strategies=[finetune]")
    assert OmegaConf.get_type(cfg.model).__name__ == "SmallNetConfig" and cfg.model.arch == "factory"
    rows = by_row(pipeline.run(cfg))
    assert all(r["status"] == "ok" for r in rows.values()), rows
    assert rows["pruned"]["params"] < rows["unpruned"]["params"]
    assert protocol.base_settings(cfg, "f")["model"] == {"name": "small_net", "_target_": "mypkg.models.small_net",
                                                         "channels": 8}
    with pytest.raises(PrunebenchError, match="model.chanels is not a setting"):
        compose(work, "model=small_net", "model.chanels=4")


def test_the_data_set_example_trains_every_stage(work):
    cfg = compose(work, "dataset=stripes", "method=l1_norm", "strategies=[finetune]")
    assert OmegaConf.get_type(cfg.dataset).__name__ == "StripesConfig" and cfg.dataset.train_size == 512
    rows = by_row(pipeline.run(cfg))
    assert all(r["status"] == "ok" for r in rows.values()), rows
    assert protocol.base_settings(cfg, "f")["dataset"]["_target_"] == "mypkg.data.stripes"


def test_the_strategy_example_is_a_row_of_its_own(work):
    cfg = compose(work, "strategy=warm", "strategies=[finetune,warm]", "method=l1_norm")
    assert OmegaConf.get_type(cfg.strategy.warm).__name__ == "WarmConfig" and cfg.strategy.warm.epochs == 3
    assert cfg.strategy.finetune.epochs == 1  # the smoke preset over prunebench's rethinking settings
    rows = by_row(pipeline.run(cfg))
    assert rows["warm"]["status"] == "ok" and rows["finetune"]["status"] == "ok", rows
    assert rows["warm"]["epochs"] == 3
    values = protocol.Run(cfg, fingerprint="f").stage_values()
    assert values["warm"][1]["class"] == "mypkg.strategies.WarmFinetune"
    shorter = protocol.Run(compose(work, "strategy=warm", "strategies=[finetune,warm]", "method=l1_norm",
                                   "strategy.warm.epochs=2"), fingerprint="f").stage_values()
    assert Stage(work, *values["warm"]).key != Stage(work, *shorter["warm"]).key
    assert Stage(work, *values["finetune"]).key == Stage(work, *shorter["finetune"]).key


def test_an_installed_package_names_its_method_by_an_entry_point(work, monkeypatch):
    """``name: mean_abs`` without ``_target_`` finds the class an installed package registers in the group
    ``prunebench.methods``; the composed config records its import path, so the cache keys are those of
    ``_target_`` written out."""
    from types import SimpleNamespace

    from prunebench import plugins
    from mypkg.pruning import MeanAbs

    def entry_points(group):
        return [SimpleNamespace(name="mean_abs", load=lambda: MeanAbs)] if group == "prunebench.methods" else []
    monkeypatch.setattr(plugins, "entry_points", entry_points)
    by_name = compose(work, "method=l1_norm", "method.name=mean_abs", "+method.power=2.0", "method.pruning_ratio=0.5")
    assert by_name.method._target_ == "mypkg.pruning.MeanAbs"
    by_path = compose(work, "method=mean_abs")
    assert (protocol.Run(by_name, fingerprint="f").stage_values()["pruned"]
            == protocol.Run(by_path, fingerprint="f").stage_values()["pruned"])
    with pytest.raises(PrunebenchError, match="unknown method 'nothing'"):
        compose(work, "method.name=nothing")
