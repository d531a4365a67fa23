"""experiment=figures/modern_uniform: the sweep of models x methods x recipes x seeds, planned dry
(no data, nothing trained), and its models the ones conf/model holds."""
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from prunebench import pipeline
from prunebench.cli import CONF_DIR
from tests.conftest import compose_config
from tests.report.test_presets import jobs

PRESET = Path(CONF_DIR) / "experiment" / "figures" / "modern_uniform.yaml"
AFTER_MERGE = {"vit_cifar"}  # the CIFAR ViT of issue 19's transformer part, on its own branch until merged


def grid(*cli):
    return jobs(OmegaConf.load(PRESET).hydra.sweeper.params, *cli)


def test_the_sweep_is_models_x_two_methods_x_two_recipes_x_three_seeds():
    params = OmegaConf.load(PRESET).hydra.sweeper.params
    models = params.model.split(",")
    assert {"resnet18_cifar", "resnet50_cifar", "mobilenet_v2_cifar", "vit_cifar"} <= set(models)
    missing = {m for m in models if not (Path(CONF_DIR) / "model" / f"{m}.yaml").exists()}
    assert missing <= AFTER_MERGE, missing
    g = grid()
    assert len(g) == len(models) * 2 * 2 * 3
    assert {j["schedule"] for j in g} == {"cifar", "modern"} and {j["seed"] for j in g} == {"0", "1", "2"}
    assert len({j["method"] for j in g}) == 2


@pytest.mark.slow  # plans two of the preset's jobs, tracing their dependency graphs
def test_every_present_job_composes_and_a_dry_run_plans_both_recipes(tmp_path):
    present = ",".join(m for m in OmegaConf.load(PRESET).hydra.sweeper.params.model.split(",")
                       if (Path(CONF_DIR) / "model" / f"{m}.yaml").exists())
    cfgs = {}
    for job in grid(f"model={present}", "seed=0"):
        cfg = compose_config("experiment=figures/modern_uniform", *(f"{k}={v}" for k, v in job.items()),
                             f"cache_dir={tmp_path}", f"dataset.root={tmp_path / 'nowhere'}")
        assert (cfg.model.name, cfg.method.name, cfg.schedule.name) == (job["model"], job["method"], job["schedule"])
        assert cfg.method.round_to == 8 and cfg.measure.onnx and cfg.measure.saturating_batch > 0
        cfgs[(job["model"], job["method"], job["schedule"])] = cfg
    # planning traces every pruned architecture's dependency graph (seconds each): two jobs, both recipes
    for key in (("mobilenet_v2_cifar", "fpgm", "modern"), ("resnet18_cifar", "l1_norm", "cifar")):
        rows = {r["row"]: r for r in pipeline.plan(cfgs[key])}
        assert list(rows) == ["unpruned", "pruned", "finetune", "scratch_b", "uniform", "random_arch"], key
        assert rows["unpruned"]["epochs"] == 160 and rows["unpruned"]["flops"] > 0
        # l1_norm and fpgm select per layer: the widths, and so the FLOPs and epochs, follow from the config
        assert rows["unpruned"]["flops"] > rows["pruned"]["flops"] > 0
        assert rows["scratch_b"]["epochs"] == rows["uniform"]["epochs"] > 160
        assert not any(r["cached"] for r in rows.values())
    assert not any(tmp_path.iterdir()), "a dry run wrote to the cache"
