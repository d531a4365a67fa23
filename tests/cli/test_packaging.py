"""A built wheel, installed into a fresh environment, runs a preset from any folder;
the command line's help, completion and the Python API."""
import pytest
import os
import site
import subprocess
import sys
import sysconfig
import tarfile
import venv
from pathlib import Path

import prunebench
from tests.conftest import ROOT, run_cli


def copy_sources(dest):
    """The tracked and untracked (not ignored) files of the tree, so the build leaves no trace in it."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    archive = dest.parent / "src.tar"
    with tarfile.open(archive, "w") as tar:
        for f in files:
            if (ROOT / f).is_file():
                tar.add(ROOT / f, arcname=f)
    with tarfile.open(archive) as tar:
        # the "data" filter where this Python has it (the argument exists from 3.11.4 on)
        tar.extractall(dest, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))


@pytest.mark.slow
def test_a_built_wheel_runs_the_smoke_preset_from_another_folder(tmp_path):
    src, wheels, env_dir, work = (tmp_path / d for d in ("src", "wheels", "venv", "work"))
    copy_sources(src)
    subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels)], cwd=src, check=True, capture_output=True)
    [wheel] = wheels.glob("prunebench-*.whl")
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    # torch and the other dependencies come from the environment running the tests (a virtualenv
    # or the system): its site folders are appended to the new one's path. A .pth line adds a
    # folder without running the .pth files inside it, so an editable prunebench there stays out.
    inner = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                           capture_output=True, text=True, check=True).stdout.strip()
    outer = [*site.getsitepackages(), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    (Path(inner) / "test_dependencies.pth").write_text("\n".join(dict.fromkeys(outer)) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
                    str(wheel)], check=True, capture_output=True)
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run([str(python), "-c", "import prunebench.config as c; print(c.CONF_DIR)"], cwd=work,
                           env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(env_dir)) and where.endswith("prunebench/conf"), where
    p = subprocess.run([str(env_dir / "bin" / "prunebench"), "experiment=smoke", "strategies=[scratch_e]"],
                       cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert list((work / "outputs" / "runs").glob("*/results.csv"))


@pytest.mark.slow
def test_help_lists_the_groups_a_user_chooses_and_only_the_data_sets_own_settings(tmp_path):
    p = run_cli("--help", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "schema" not in p.stdout
    experiments = next(line for line in p.stdout.splitlines() if line.startswith("experiment: "))
    assert "quickstart" in experiments and "rethinking/l1_norm_resnet110a_cifar10" in experiments
    assert "method: apoz" in p.stdout and "resnet110" in next(line for line in p.stdout.splitlines()
                                                             if line.startswith("model: "))
    assert "train_size" not in p.stdout  # cifar10, the default, has no synthetic-only settings


@pytest.mark.slow
def test_tab_completion_offers_the_nested_presets(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COMP_LINE": "prunebench experiment=rethinking/slimming_vgg19"}
    p = subprocess.run([sys.executable, "-m", "prunebench", "-sc", "query=bash"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.stdout.split() == ["experiment=rethinking/slimming_vgg19_cifar10",
                                "experiment=rethinking/slimming_vgg19_cifar100"], p.stdout + p.stderr


def test_python_api_returns_the_rows(tmp_path):
    rows = prunebench.run(["experiment=smoke", "method=l1_norm", "strategies=[scratch_e]",
                           f"cache_dir={tmp_path}"])
    assert [r["row"] for r in rows] == ["unpruned", "pruned", "scratch_e"]
    assert all(r["status"] == "ok" for r in rows)
    plan = prunebench.run(["experiment=smoke", "method=l1_norm", "strategies=[scratch_e]", f"cache_dir={tmp_path}",
                           "dry_run=true"])
    assert all(r["cached"] for r in plan)


def test_license_and_metadata():
    assert "MIT License" in (ROOT / "LICENSE").read_text() and "prunebench contributors" in (ROOT / "LICENSE").read_text()
    text = (ROOT / "pyproject.toml").read_text()
    assert 'license = "MIT"' in text and "classifiers" in text and "keywords" in text
