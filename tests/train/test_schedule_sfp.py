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


class LrSpy:
    """Records the learning rate of every optimizer step."""
    capturable = False

    def __init__(self):
        self.lrs = []

    def __getattr__(self, name):  # every other hook: nothing
        return lambda *a, **k: None

    def after_step(self, model, lr):
        self.lrs.append(float(lr))


def test_sfp_schedule_runs_its_first_epoch_at_a_tenth_of_the_lr(tmp_path):
    """The authors' --schedule 1 60 120 160 --gammas 10 0.2 0.2 0.2 --learning_rate 0.01: epoch 0 at 0.01,
    then 0.1 until epoch 60 (pruning_cifar10_resnet.py:328-338)."""
    s = compose_config("schedule=sfp").schedule
    assert (s.warmup_epochs, s.warmup_factor) == (1, 0.1) and compose_config().schedule.warmup_epochs == 0
    recipe = Recipe(epochs=10, lr=s.lr, batch_size=32, momentum=s.momentum, weight_decay=s.weight_decay,
                    milestones=list(s.milestones), gamma=s.gamma, nesterov=s.nesterov, steps_per_epoch=2,
                    warmup_epochs=s.warmup_epochs, warmup_factor=s.warmup_factor)
    images = data.load(OmegaConf.structured(SyntheticDatasetConfig(name="synthetic", pad=2, flip=False)))
    torch.manual_seed(0)
    model = models.build(vgg.spec_for(11, 0.125, 3, 10))
    spy = LrSpy()
    out = train(model, images, recipe, seed=0, checkpoint=tmp_path / "c.pt", progress=False, hooks=spy)
    expected = [0.01, 0.1, 0.1, 0.02, 0.02, 0.02, 0.004, 0.004, 0.0008, 0.0008]
    assert [round(h["lr"], 6) for h in out["history"]] == expected
    assert [round(lr, 6) for lr in spy.lrs] == [lr for lr in expected for _ in range(2)]  # what each step used
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    assert abs(state["optimizer"]["param_groups"][0]["lr"] - 0.0008) < 1e-12
    # a training resumed after its warm-up epoch runs at the full lr
    short = recipe.replace(epochs=1, milestones=[])
    spy = LrSpy()
    train(model, images, short, seed=0, checkpoint=tmp_path / "d.pt", progress=False, hooks=spy)
    spy2 = LrSpy()
    train(model, images, recipe.replace(epochs=2, milestones=[]), seed=0, checkpoint=tmp_path / "d.pt", progress=False,
          hooks=spy2)
    assert [round(lr, 6) for lr in spy.lrs + spy2.lrs] == [0.01, 0.01, 0.1, 0.1]
    assert protocol.Run(compose_config("schedule=sfp"), fingerprint="none").bench.recipe.warmup_epochs == 1


def test_fine_tuning_keeps_its_constant_lr_under_a_warm_up_schedule(smoke_cfg):
    from prunebench.strategies.finetune import Finetune
    run = protocol.Run(smoke_cfg("schedule=sfp", "schedule.steps_per_epoch=1"))
    recipe = Finetune().recipe(run.bench)
    assert recipe.warmup_epochs == 0 and recipe.milestones == [] and recipe.lr == 0.001
