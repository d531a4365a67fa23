"""The command line, as a user runs it."""
import csv

import pytest

from tests.conftest import run_cli

REQUIRED = {"row", "method", "model", "dataset", "acc1", "params", "flops", "epochs", "status"}


def read_results(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_smoke_preset_writes_the_result_table(tmp_path):
    p = run_cli("experiment=smoke", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    [run_dir] = (tmp_path / "outputs" / "runs").iterdir()
    rows = read_results(run_dir / "results.csv")
    assert REQUIRED <= set(rows[0])
    assert [r["row"] for r in rows] == ["unpruned", "sparse", "pruned", "finetune", "scratch_e", "scratch_b",
                                        "uniform"]
    assert all(r["status"] == "ok" for r in rows)
    assert "| row |" in (run_dir / "results.md").read_text()
    assert (run_dir / "config.yaml").exists()
    assert "scratch_b" in p.stdout  # the summary table


@pytest.mark.slow
def test_unknown_method_lists_the_valid_names(tmp_path):
    p = run_cli("experiment=smoke", "method=magic", cwd=tmp_path)
    assert p.returncode != 0
    out = p.stdout + p.stderr
    assert "l1_norm" in out and "slimming" in out and "random" in out


@pytest.mark.slow
def test_unknown_model_lists_the_valid_names(tmp_path):
    p = run_cli("experiment=smoke", "model=alexnet", cwd=tmp_path)
    assert p.returncode != 0 and "resnet56" in p.stdout + p.stderr


@pytest.mark.slow
def test_ratio_out_of_range_exits_with_a_message(tmp_path):
    p = run_cli("experiment=smoke", "method.pruning_ratio=1.5", cwd=tmp_path)
    assert p.returncode == 2
    assert "pruning_ratio must lie in [0, 1)" in p.stderr  # errors go to stderr


@pytest.mark.slow
def test_missing_data_names_the_path(tmp_path):
    p = run_cli("experiment=smoke", "dataset=cifar10", f"dataset.root={tmp_path}/nodata", "dataset.download=false",
                cwd=tmp_path)
    assert p.returncode == 2
    [line] = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]  # one line, never wrapped
    assert f"{tmp_path}/nodata/cifar-10-batches-py" in line


@pytest.mark.slow
def test_multirun_trains_one_unpruned_model_for_every_method(tmp_path):
    p = run_cli("-m", "experiment=smoke", "method=slimming,l1_norm,random", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    stages = sorted(d.name.split("-")[0] for d in (tmp_path / "outputs" / "stages").iterdir())
    assert stages.count("unpruned") == 1 and stages.count("pruned") == 3
    [sweep] = (tmp_path / "outputs" / "multirun").iterdir()
    results = sorted(sweep.glob("*/results.csv"))
    assert len(results) == 3
    unpruned = {next(r["stage"] for r in read_results(f) if r["row"] == "unpruned") for f in results}
    assert len(unpruned) == 1


@pytest.mark.slow
def test_sweep_over_seeds_aggregates_to_mean_and_std(tmp_path):
    from prunebench.report import aggregate

    p = run_cli("-m", "experiment=smoke", "method=l1_norm", "seed=0,1", "strategies=[scratch_e]", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    [sweep] = (tmp_path / "outputs" / "multirun").iterdir()
    aggregate.main([str(sweep)])
    summary = {r["row"]: r for r in read_results(sweep / "summary.csv")}
    assert set(summary) == {"unpruned", "pruned", "scratch_e"}
    assert summary["scratch_e"]["runs"] == "2" and summary["scratch_e"]["seeds"] == "0 1"
    assert float(summary["scratch_e"]["acc1_std"]) >= 0
    assert "±" in (sweep / "summary.md").read_text()


@pytest.mark.slow
def test_one_failed_sweep_job_is_its_row_and_the_sweep_goes_on(tmp_path):
    p = run_cli("-m", "experiment=smoke", "method=l1_norm", "method.pruning_ratio=0.5,1.5", "prune_only=true",
                cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    [sweep] = (tmp_path / "outputs" / "multirun").iterdir()
    tables = {f.parent.name: read_results(f) for f in sweep.glob("*/results.csv")}
    assert len(tables) == 2
    bad = next(rows for name, rows in tables.items() if "r1.5" in name)
    good = next(rows for name, rows in tables.items() if "r0.5" in name)
    assert [r["row"] for r in bad] == ["error"] and bad[0]["status"] == "failed" and "[0, 1)" in bad[0]["note"]
    assert all(r["status"] == "ok" for r in good)


@pytest.mark.slow
def test_joblib_sweep_with_two_workers_trains_the_unpruned_stage_once(tmp_path):
    p = run_cli("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "experiment=smoke",
                "method=l1_norm,random", "strategies=[scratch_e]", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    stages = sorted(d.name.split("-")[0] for d in (tmp_path / "outputs" / "stages").iterdir())
    assert stages.count("unpruned") == 1 and stages.count("pruned") == 2
    [sweep] = (tmp_path / "outputs" / "multirun").iterdir()
    tables = [read_results(f) for f in sweep.glob("*/results.csv")]
    assert len(tables) == 2 and all(r["status"] == "ok" for rows in tables for r in rows)


@pytest.mark.slow
def test_several_seeds_show_a_seed_column_and_write_every_seed(tmp_path):
    p = run_cli("experiment=smoke", "seeds=[0,1]", "strategies=[finetune]", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    [run_dir] = (tmp_path / "outputs" / "runs").iterdir()
    rows = read_results(run_dir / "results.csv")
    assert sorted({r["seed"] for r in rows}) == ["0", "1"] and all(r["status"] == "ok" for r in rows)
    assert "seeds [0, 1]" in p.stdout and "| row | seed |" in (run_dir / "results.md").read_text()


def test_a_value_outside_an_enumeration_is_one_line_and_exit_2(tmp_path):
    """OmegaConf refuses it while Hydra composes; the CLI says so in one line, as every bad input."""
    p = run_cli("experiment=smoke", "method.selection=best", "dry_run=true", cwd=tmp_path)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == ["error: method.selection must be one of global, layer, threshold, got "
                                             "'best'"]
