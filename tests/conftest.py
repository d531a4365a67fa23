"""Tests compose the real ``conf/config.yaml`` (shrunk by ``experiment=smoke``)
and run the real pipeline, as the CLI would."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from prunebench import cli

ROOT = Path(__file__).resolve().parent.parent

# One intra-op thread count for this process and every CLI, torchrun and joblib subprocess a test starts
# (they inherit the environment): a float sum differs with the number of threads, so a test comparing a
# table computed in a subprocess with one computed elsewhere compares like with like on any machine.
# One thread also keeps two pytest workers (-n 2) from fighting over two cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def compose_config(*overrides):
    """The config of ``prunebench OVERRIDES``, its parts typed (as the CLI runs it)."""
    return cli.compose(overrides)


@pytest.fixture
def smoke_cfg(tmp_path):
    """A function composing the smoke preset with a private stage cache."""
    def make(*overrides):
        return compose_config("experiment=smoke", f"cache_dir={tmp_path / 'stages'}", *overrides)
    return make


def run_cli(*args, cwd):
    """Run ``python -m prunebench ARGS`` in ``cwd``; return the CompletedProcess."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "prunebench", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture
def starts(monkeypatch):
    """The weights each stage's training starts from, by stage kind."""
    from prunebench.train import job

    seen = {}
    real = job.training_of

    def recording(train_job, **options):
        seen[train_job.kind] = {k: v.detach().clone() for k, v in train_job.model.state_dict().items()}
        return real(train_job, **options)
    monkeypatch.setattr(job, "training_of", recording)
    return seen
