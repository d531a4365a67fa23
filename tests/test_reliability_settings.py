"""Bad settings that used to be accepted, or refused only after stages trained: each one a one-line
PrunebenchError naming the setting and what to do, before any stage folder is written; through
the CLI, one unwrapped line on stderr (exit 2) even when the output is a pipe and the terminal
narrow, and under torchrun one line from rank 0 alone."""
import csv
import os
import subprocess
import sys

import pytest

from prunebench import pipeline
from prunebench.errors import PrunebenchError
from prunebench.train import job
from tests.conftest import ROOT

RUN = ("method=l1_norm", "strategies=[scratch_e]")


@pytest.fixture
def no_training(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("trained before the input was checked")
    monkeypatch.setattr(job, "training_of", fail)


def guided_sources(tmp_path):
    """Folders ``strategy.guided.source`` may wrongly name: missing, empty, foreign, gone stages."""
    empty = tmp_path / "empty"
    empty.mkdir()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "results.csv").write_text("name,score\na,1\n")
    gone = tmp_path / "gone"
    gone.mkdir()
    with open(gone / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["row", "status", "stage"])
        w.writeheader()
        w.writerows([{"row": "unpruned", "status": "ok", "stage": str(tmp_path / "no" / "unpruned-1")},
                     {"row": "pruned", "status": "ok", "stage": str(tmp_path / "no" / "pruned-1")}])
    return {"missing": tmp_path / "nowhere", "empty": empty, "foreign": foreign, "gone": gone}


CASES = [  # (overrides, what the message must say)
    (("schedule.gamma=-1",), "schedule.gamma must be > 0"),
    (("schedule.gamma=0",), "schedule.gamma must be > 0"),
    (("strategies=[scratch_b]", "strategy.scratch_b.max_factor=0"), "strategy.scratch_b.max_factor"),
    (("+method.pruning_rato=0.5",), "method.pruning_rato is not a setting prunebench knows (did you mean "
                                    "method.pruning_ratio?)"),
    (("+schedule.epoch=3",), "did you mean schedule.epochs?"),
    (("+foo=1",), "foo is not a setting prunebench knows"),
    (("seeds=[]",), "seeds=[] names no seed"),
    (("strategies=[]",), "strategies=[] names no strategy"),
    (("strategies=[scratch_e,scratch_e]",), "strategies names scratch_e more than once"),
    (("cache_dir=''",), "cache_dir is empty"),
    (("schedule.momentum=-0.9",), "schedule.momentum must be >= 0"),
    (("schedule.weight_decay=-1e-4",), "schedule.weight_decay must be >= 0"),
    (("schedule.nesterov=true", "schedule.momentum=0"), "schedule.nesterov=true needs schedule.momentum > 0"),
    (("measure.latency_batch=-1",), "measure.latency_batch must be >= 1"),
    (("measure.latency_repeats=0",), "measure.latency_repeats must be >= 1"),
    (("distributed.backend=foo",), "distributed.backend must be one of auto, nccl, gloo"),
    (("lock_timeout=-1",), "lock_timeout must be >= 0"),
    (("strategies=[uniform]", "strategy.uniform.tolerance=0"), "strategy.uniform.tolerance must be > 0"),
    (("strategies=[guided]", "strategy.guided.source=''"), "strategy.guided.source is empty"),
    (("strategies=[guided]", "strategy.guided.source={missing}"), "is not a folder"),
    (("strategies=[guided]", "strategy.guided.source={empty}"), "no results.csv with an ok 'pruned' row"),
    (("strategies=[guided]", "strategy.guided.source={foreign}"), "no results.csv with an ok 'pruned' row"),
    (("strategies=[guided]", "strategy.guided.source={gone}"), "stage folders of its finished runs are gone"),
]


@pytest.mark.parametrize("overrides,message", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_a_bad_setting_is_one_line_before_any_stage_folder(smoke_cfg, tmp_path, no_training, overrides, message):
    sources = guided_sources(tmp_path)
    overrides = [o.format(**sources) for o in overrides]
    with pytest.raises(PrunebenchError) as e:  # while composing (a value outside an enumeration) or validating
        pipeline.run(smoke_cfg(*RUN, *overrides))
    assert message in str(e.value) and "\n" not in str(e.value)
    stages = tmp_path / "stages"
    assert not stages.exists() or not any(stages.iterdir()), "a stage folder was written before the refusal"


def test_prune_only_stops_after_pruning_on_purpose(smoke_cfg):
    rows = pipeline.run(smoke_cfg("method=l1_norm", "strategies=[]", "prune_only=true"))
    assert [r["row"] for r in rows] == ["unpruned", "pruned"] and all(r["status"] == "ok" for r in rows)


def cli(*args, cwd, columns="40"):
    """``python -m prunebench`` with stdout and stderr as pipes (not a terminal), a narrow COLUMNS."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": columns}
    return subprocess.run([sys.executable, "-m", "prunebench", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("override,message", [
    ("+method.pruning_rato=0.5", "did you mean method.pruning_ratio?"),
    ("strategies=[]", "or set prune_only=true to stop after pruning on purpose"),
    ("schedule.gamma=-1", "schedule.gamma must be > 0, got -1.0"),
    ("seeds=[0,0]", "seeds must differ from each other, got [0, 0]"),  # brackets are text, not markup
])
def test_the_cli_prints_one_unwrapped_line_into_a_pipe(tmp_path, override, message):
    p = cli("experiment=smoke", f"cache_dir={tmp_path / 'a_long_folder_name_that_would_wrap' / 'stages'}", override,
            cwd=tmp_path)
    assert p.returncode == 2
    lines = [ln for ln in p.stderr.splitlines() if ln.strip() and "cpp_extension" not in ln]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert len(lines[0]) > 40  # longer than the terminal, still one line
    assert "Traceback" not in p.stdout + p.stderr and not (tmp_path / "a_long_folder_name_that_would_wrap").exists()


@pytest.mark.slow
def test_a_bad_backend_under_torchrun_is_one_line_from_rank_0(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "60"}
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "-m", "prunebench", "experiment=smoke", "device=cpu", "distributed.backend=foo",
                        f"cache_dir={tmp_path / 'stages'}"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode != 0
    ours = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert ours == ["error: distributed.backend must be one of auto, nccl, gloo, got 'foo'"]
    frames = [ln for ln in p.stderr.splitlines() if ln.strip().startswith('File "')]
    assert not [f for f in frames if "/prunebench/" in f], frames  # torchrun reports its child; no traceback of ours
    assert not (tmp_path / "stages").exists()


def test_a_guided_source_of_another_number_of_stages_is_refused_before_training(smoke_cfg, tmp_path, monkeypatch):
    from prunebench import report

    rows = pipeline.run(smoke_cfg("model=resnet20", "model.width=0.25", "method=l1_norm", "prune_only=true",
                                  f"cache_dir={tmp_path / 'source_stages'}"))
    report.write(rows, tmp_path / "source", "the source")
    monkeypatch.setattr(job, "training_of", lambda *a, **k: pytest.fail("trained before the input was checked"))
    with pytest.raises(PrunebenchError, match="gives a pattern of 3 stages, vgg11 has 5"):
        pipeline.run(smoke_cfg("method=l1_norm", "strategies=[guided]", f"strategy.guided.source={tmp_path / 'source'}"))
    assert not (tmp_path / "stages").exists() or not any((tmp_path / "stages").iterdir())
