"""schedule=sfp: soft filter pruning's own CIFAR recipe (200 epochs, Nesterov SGD, lr x0.2 at
epochs 60/120/160, weight decay 5e-4, batch 128), as its authors ran it."""
import torch
from omegaconf import OmegaConf

from prunebench import data, models, protocol
from prunebench.config import SyntheticDatasetConfig
from prunebench.models import vgg
from prunebench.train import Recipe, train
from tests.conftest import compose_config


def test_sfp_schedule_values():
    s = compose_config("schedule=sfp").schedule
    assert (s.epochs, s.batch_size, s.lr, s.momentum, s.weight_decay, s.gamma) == (200, 128, 0.1, 0.9, 5e-4, 0.2)
    assert s.nesterov is True
    assert [round(m * s.epochs) for m in s.milestones] == [60, 120, 160]
    assert compose_config().schedule.nesterov is False  # the paper's CIFAR recipe keeps plain momentum


def test_sfp_schedule_trains_with_nesterov_sgd_and_its_milestones(tmp_path):
    s = compose_config("schedule=sfp").schedule
    recipe = Recipe(epochs=10, lr=s.lr, batch_size=32, momentum=s.momentum, weight_decay=s.weight_decay,
                    milestones=list(s.milestones), gamma=s.gamma, nesterov=s.nesterov, steps_per_epoch=1)
    images = data.load(OmegaConf.structured(SyntheticDatasetConfig(name="synthetic", pad=2, flip=False)))
    torch.manual_seed(0)
    model = models.build(vgg.spec_for(11, 0.125, 3, 10))
    train(model, images, recipe, seed=0, checkpoint=tmp_path / "c.pt", progress=False)
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    group = state["optimizer"]["param_groups"][0]
    assert group["nesterov"] is True and group["momentum"] == 0.9 and group["weight_decay"] == 5e-4
    assert sorted(state["scheduler"]["milestones"]) == [3, 6, 8]  # 0.3 / 0.6 / 0.8 of 10 epochs
    assert abs(group["lr"] - 0.1 * 0.2 ** 3) < 1e-12


def test_run_recipe_carries_nesterov(smoke_cfg):
    """The run's recipe carries schedule.nesterov."""
    cfg = smoke_cfg("schedule=sfp", "schedule.epochs=2", "schedule.steps_per_epoch=1")
    assert protocol.Run(cfg).bench.recipe.nesterov is True
