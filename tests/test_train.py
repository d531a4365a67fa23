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
