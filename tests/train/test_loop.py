import pytest
import torch
from omegaconf import OmegaConf

from prunebench import data, models
from prunebench.config import SyntheticDatasetConfig
from prunebench.errors import Diverged
from prunebench.models import vgg
from prunebench.train import Recipe, TrainHooks, evaluate, train


@pytest.fixture(scope="module")
def synthetic():
    return data.load(OmegaConf.structured(SyntheticDatasetConfig(name="synthetic", pad=2, flip=False)))


def fresh():
    torch.manual_seed(0)
    return models.build(vgg.spec_for(11, 0.125, 3, 10))


class Interrupt(TrainHooks):
    def on_epoch_end(self, model, epoch):
        if epoch == 1:
            raise KeyboardInterrupt


def test_training_learns(synthetic, tmp_path):
    model = fresh()
    before = evaluate(model, synthetic)["acc1"]
    train(model, synthetic, Recipe(epochs=12, lr=0.05, batch_size=32), seed=0, checkpoint=tmp_path / "c.pt",
          progress=False)
    assert evaluate(model, synthetic)["acc1"] > max(before, 60.0)


def test_interrupted_training_resumes_to_the_same_weights(synthetic, tmp_path):
    recipe = Recipe(epochs=3, lr=0.05, batch_size=32, milestones=[0.5])
    whole = fresh()
    train(whole, synthetic, recipe, seed=0, checkpoint=tmp_path / "a.pt", progress=False)
    resumed = fresh()
    with pytest.raises(KeyboardInterrupt):
        train(resumed, synthetic, recipe, seed=0, checkpoint=tmp_path / "b.pt", hooks=Interrupt(), progress=False)
    assert torch.load(tmp_path / "b.pt", weights_only=False)["epoch"] == 1
    resumed = fresh()
    train(resumed, synthetic, recipe, seed=0, checkpoint=tmp_path / "b.pt", progress=False)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name


def test_nan_loss_raises_diverged(synthetic, tmp_path):
    with pytest.raises(Diverged):
        train(fresh(), synthetic, Recipe(epochs=2, lr=1e12, batch_size=32), seed=0, checkpoint=tmp_path / "c.pt",
              progress=False)


class InterruptAt(TrainHooks):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, model, epoch):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_checkpoints_come_every_checkpoint_every_seconds_and_each_epoch_is_logged_once(synthetic, tmp_path):
    """With checkpoints far apart, an interrupt after 3 epochs leaves no checkpoint; the epochs
    reach ``on_epoch`` only once a checkpoint holds them, so the rerun logs each epoch once."""
    recipe = Recipe(epochs=4, lr=0.05, batch_size=32, steps_per_epoch=2)
    logged = []
    with pytest.raises(KeyboardInterrupt):
        train(fresh(), synthetic, recipe, seed=0, checkpoint=tmp_path / "c.pt", hooks=InterruptAt(2), progress=False,
              on_epoch=lambda e: logged.append(e["epoch"]), checkpoint_every=3600)
    assert not (tmp_path / "c.pt").exists() and logged == []
    train(fresh(), synthetic, recipe, seed=0, checkpoint=tmp_path / "c.pt", progress=False,
          on_epoch=lambda e: logged.append(e["epoch"]), checkpoint_every=3600)
    assert logged == [1, 2, 3, 4]


def test_a_snapshot_epoch_is_always_checkpointed(synthetic, tmp_path):
    """The lottery strategy's rewind snapshot (epoch k): the epoch is checkpointed, so a rerun
    after an interrupt never trains past k again and the snapshot stays that of the run's own path."""
    recipe = Recipe(epochs=4, lr=0.05, batch_size=32, steps_per_epoch=2)
    with pytest.raises(KeyboardInterrupt):
        train(fresh(), synthetic, recipe, seed=0, checkpoint=tmp_path / "c.pt", hooks=InterruptAt(2), progress=False,
              snapshots={2: tmp_path / "epoch2.pt"}, checkpoint_every=3600)
    assert torch.load(tmp_path / "c.pt", weights_only=True)["epoch"] == 2
    assert (tmp_path / "epoch2.pt").exists()
