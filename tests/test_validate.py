"""Every bad input is a one-line PrunebenchError before anything trains."""
import logging
import os

import pytest

from prunebench import pipeline
from prunebench.train import job
from prunebench.errors import PrunebenchError
from tests.cases import MODEL_OPTIONS, PAIR_OPTIONS, REFUSED
from tests.conftest import compose_config, run_cli
from tests.data.test_data import dataset_cfg, write_fake_cifar10


@pytest.fixture
def no_training(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("trained before the input was checked")
    monkeypatch.setattr(job, "training_of", fail)
    monkeypatch.setattr(job, "train", fail)


@pytest.mark.parametrize("override,message", [
    ("schedule.batch_size=0", "schedule.batch_size must be > 0"),
    ("schedule.eval_batch_size=-1", "schedule.eval_batch_size must be > 0"),
    ("schedule.epochs=0", "schedule.epochs must be > 0"),
    ("schedule.steps_per_epoch=0", "schedule.steps_per_epoch must be > 0"),
    ("schedule.lr=0", "schedule.lr must be > 0"),
    ("strategy.finetune.epochs=0", "strategy.finetune.epochs must be > 0"),
    ("strategy.finetune.lr=-1", "strategy.finetune.lr must be > 0"),
    ("method.min_channels=0", "method.min_channels must be >= 1"),
    ("method.selection=best", "method.selection must be one of global, layer, threshold"),
    ("model.depth=12", "VGG depth 12 is not one of"),
    ("model.arch=alexnet", "unknown model.arch 'alexnet'"),
    ("model.width=0", "model.width must be > 0"),
    ("method.layer_ratios={conv99:0.5}", r"method.layer_ratios names unknown layers \['conv99'\]"),
    ("method.skip=[fc9]", r"method.skip names unknown layers \['fc9'\]"),
    ("method.layer_ratios={conv1:1.5}", r"method.layer_ratios.conv1 must lie in \[0, 1\)"),
    ("dataset.train_size=0", "dataset.train_size must be > 0"),
])
def test_bad_input_is_one_line_before_training(smoke_cfg, no_training, override, message):
    with pytest.raises(PrunebenchError, match=message) as e:
        pipeline.run(smoke_cfg("method=l1_norm", override))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("method,model", sorted(REFUSED))
def test_a_method_and_model_that_cannot_run_are_refused_in_one_line_before_training(smoke_cfg, no_training, method,
                                                                                    model):
    with pytest.raises(PrunebenchError, match=REFUSED[(method, model)]) as e:
        pipeline.run(smoke_cfg(f"method={method}", f"model={model}", *MODEL_OPTIONS[model], *PAIR_OPTIONS))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("overrides,message", [
    (["method=sss", "method.level=block", "model=vgg11"], "method=sss cannot prune model=vgg11: .*residual blocks"),
    (["method=sss_sigmoid", "method.level=block", "model=preresnet56"], "PreResNet has none"),
    (["method=dcp", "method.selection=global"], "use method.selection=layer"),
    (["method=l1_norm", "model=preresnet56", "method.skip=[block1_bn1]"],  # a selection: slimming's, not a filter
     r"method.skip names unknown layers \['block1_bn1'\]"),
    (["method=l1_norm", "model=densenet40", "method.layer_ratios={layer3_bn1:0.5}"],
     r"this model's prunable layers: conv1, layer1_conv1"),
])
def test_a_method_that_cannot_prune_a_model_as_set_is_refused_before_training(smoke_cfg, no_training, overrides,
                                                                              message):
    with pytest.raises(PrunebenchError, match=message) as e:
        pipeline.run(smoke_cfg(*overrides))
    assert "\n" not in str(e.value)


def test_weight_level_layer_names_are_module_names(smoke_cfg, no_training):
    with pytest.raises(PrunebenchError, match="features.0"):  # the known names are listed
        pipeline.run(smoke_cfg("method=magnitude", "method.skip=[conv1]"))


def test_layer_ratios_on_the_command_line_without_plus():
    cfg = compose_config("method=slimming", "method.layer_ratios={conv1:0.5,conv2:0.25}")
    assert dict(cfg.method.layer_ratios) == {"conv1": 0.5, "conv2": 0.25}
    cfg = compose_config("method=l1_norm", "method.layer_ratios={conv1:0.5}", "method.layer_ratios.conv3=0.1")
    assert dict(cfg.method.layer_ratios) == {"conv1": 0.5, "conv3": 0.1}


def test_a_cache_folder_that_cannot_be_written(smoke_cfg, tmp_path, no_training):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(PrunebenchError, match=f"cache_dir={blocker}/stages cannot be written"):
        pipeline.run(smoke_cfg(f"cache_dir={blocker}/stages"))


def test_unreadable_cifar_files_name_the_file(tmp_path):
    from prunebench import data

    write_fake_cifar10(tmp_path)
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    bad.write_bytes(b"\x80\x04garbage")
    with pytest.raises(PrunebenchError, match="data_batch_3 is not a readable CIFAR batch"):
        data.load(dataset_cfg(name="cifar10", root=str(tmp_path), download=False))


def test_a_cifar_file_that_would_run_code_is_refused(tmp_path):
    import pickle

    from prunebench import data

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path}/pwned",))
    write_fake_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(PrunebenchError, match="test_batch"):
        data.load(dataset_cfg(name="cifar10", root=str(tmp_path), download=False))
    assert not (tmp_path / "pwned").exists()


def test_an_empty_data_set_is_not_a_divergence():
    from prunebench.data import ImageData
    from prunebench.train import Recipe, train
    import torch
    from torch import nn

    empty = torch.zeros(0, 3, 8, 8, dtype=torch.uint8)
    d = ImageData(empty, torch.zeros(0, dtype=torch.long), empty, torch.zeros(0, dtype=torch.long),
                  (0.5,) * 3, (0.25,) * 3, 10)
    with pytest.raises(PrunebenchError, match="training set is empty"):
        train(nn.Linear(1, 1), d, Recipe(epochs=1, lr=0.1), seed=0, checkpoint="/nonexistent/c.pt", progress=False)


def test_a_pruning_that_removes_nothing_warns(smoke_cfg, caplog):
    with caplog.at_level(logging.WARNING):
        pipeline.run(smoke_cfg("method=l1_norm", "method.pruning_ratio=0", "strategies=[scratch_e]"))
    assert "pruning removed nothing" in caplog.text


@pytest.mark.slow
def test_strict_makes_a_failed_row_a_non_zero_exit(tmp_path):
    args = ("experiment=smoke", "method=l1_norm", "strategies=[finetune]", "strategy.finetune.lr=1e12")
    assert run_cli(*args, cwd=tmp_path).returncode == 0
    p = run_cli(*args, "strict=true", cwd=tmp_path)
    assert p.returncode == 1, p.stdout[-1000:] + p.stderr[-1000:]
