"""schedule=modern (prunebench/train/modern.py, prunebench/data/policy.py): the lr of every step,
the weight average, label smoothing and mixup/cutmix against hand computations, the device
augmentation against torchvision's operations, and a smoke comparison under the recipe."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import nn

from prunebench import pipeline
from prunebench.data import policy as policies
from prunebench.errors import PrunebenchError
from prunebench.train import Recipe, TrainHooks, modern
from prunebench.train import loop as loop_module
from prunebench.train.step import EAGER, Step, optimizer
from tests.cases import DATA

MODERN = dict(lr=0.1, warmup_epochs=1, warmup="linear", warmup_factor=0.01, lr_schedule="cosine")


def test_lr_per_step_rises_linearly_then_follows_the_cosine():
    r = Recipe(epochs=4, **MODERN)
    lr = lambda e, s: modern.step_lr(r, [], e, s, 10)  # noqa: E731
    assert lr(0, 0) == pytest.approx(0.001)  # lr x warmup_factor at the first step
    assert lr(0, 5) == pytest.approx(0.1 * (0.01 + 0.99 * 0.5))  # half-way up
    assert lr(1, 0) == pytest.approx(0.1)  # the peak where the warm-up ends
    assert lr(2, 5) == pytest.approx(0.05)  # half of the 30 cosine steps: half the peak
    assert lr(3, 9) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 29 / 30)))
    steps = [lr(e, s) for e in range(1, 4) for s in range(10)]
    assert all(a > b for a, b in zip(steps, steps[1:]))  # decreasing after the warm-up


def test_step_schedule_and_constant_warm_up_are_the_epoch_lrs_of_before():
    r = Recipe(epochs=10, lr=0.1, milestones=[0.5, 0.75], warmup_epochs=1, warmup_factor=0.1)
    milestones = r.milestone_epochs()
    for epoch in range(10):
        for step in (0, 3):
            assert modern.step_lr(r, milestones, epoch, step, 5) == pytest.approx(
                loop_module.epoch_lr(r, milestones, epoch))
    assert not modern.per_step(r)


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 10))


def test_the_training_loop_sets_the_lr_of_every_step(tmp_path, monkeypatch):
    seen = []
    real = Step.__call__

    def spy(self, x, y):
        seen.append(float(self.lr()))
        return real(self, x, y)
    monkeypatch.setattr(Step, "__call__", spy)
    r = Recipe(epochs=3, batch_size=32, steps_per_epoch=4, **MODERN)
    loop_module.train(tiny_model(), DATA, r, seed=0, checkpoint=tmp_path / "c.pt", progress=False)
    assert seen == pytest.approx([modern.step_lr(r, [], e, s, 4) for e in range(3) for s in range(4)])


def test_weight_average_is_the_hand_computed_one(tmp_path, monkeypatch):
    """decay 0.5 every step, no warm-up: the model ends as avg_k = (avg_{k-1} + w_k) / 2 over its steps."""
    after = []
    real = Step.__call__

    def spy(self, x, y):
        real(self, x, y)
        after.append({k: v.clone() for k, v in self.model.state_dict().items()})
    monkeypatch.setattr(Step, "__call__", spy)
    model = tiny_model()
    avg = {k: v.clone() for k, v in model.state_dict().items()}
    r = Recipe(epochs=1, lr=0.05, batch_size=32, steps_per_epoch=4, ema_decay=0.5, ema_steps=1)
    loop_module.train(model, DATA, r, seed=0, checkpoint=tmp_path / "c.pt", progress=False)
    for w in after:
        avg = {k: 0.5 * avg[k] + 0.5 * w[k] for k in avg}
    assert not torch.allclose(after[-1]["1.weight"], avg["1.weight"])  # the average is not the last weights
    for k, v in model.state_dict().items():
        assert torch.allclose(v, avg[k], atol=1e-6), k


def test_weight_average_updates_every_ema_steps_and_copies_integer_buffers():
    model = nn.BatchNorm1d(2)
    ema = modern.WeightAverage(model, decay=0.9, every=2)
    with torch.no_grad():
        model.weight.fill_(3.0)
    model.num_batches_tracked.fill_(7)
    ema.update(model)
    assert torch.allclose(ema.state["weight"], torch.full((2,), 0.9 * 1.0 + 0.1 * 3.0))
    assert int(ema.state["num_batches_tracked"]) == 7
    ema.reset(model)
    assert torch.equal(ema.state["weight"], model.weight.detach())


def test_label_smoothing_on_soft_targets_is_the_hand_computed_loss():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    step = Step(model, opt, TrainHooks(), EAGER, torch.device("cpu"), label_smoothing=0.1)
    x = torch.randn(2, 4)
    target = torch.tensor([[0.7, 0.3, 0.0], [0.0, 0.0, 1.0]])
    with torch.no_grad():
        logp = torch.log_softmax(model(x), 1)
    smooth = 0.9 * target + 0.1 / 3
    expected = float(-(smooth * logp).sum(1).mean())
    step(x, target)
    assert float(step.loss_sum) == pytest.approx(expected, rel=1e-5)


def test_mixup_mixes_images_and_targets_with_the_drawn_weight():
    x = torch.arange(4 * 1 * 2 * 2, dtype=torch.float).view(4, 1, 2, 2)
    y = torch.tensor([0, 1, 2, 1])
    mixed, target = modern.mix(x, y, 3, 0.2, 0.0, np.random.default_rng(5))
    lam = np.random.default_rng(5).beta(0.2, 0.2)
    assert torch.allclose(mixed, lam * x + (1 - lam) * x.roll(1, 0))
    onehot = F.one_hot(y, 3).float()
    assert torch.allclose(target, lam * onehot + (1 - lam) * onehot.roll(1, 0))
    assert torch.allclose(target.sum(1), torch.ones(4))


def test_cutmix_pastes_a_box_and_weights_targets_by_its_area():
    x = torch.zeros(2, 1, 8, 8)
    x[1] = 1.0
    y = torch.tensor([0, 1])
    mixed, target = modern.mix(x, y, 2, 0.0, 1.0, np.random.default_rng(3))
    pasted = float(mixed[0].mean())  # image 0 holds image 1's ones where the box is
    assert 0 < pasted < 1
    assert target[0].tolist() == pytest.approx([1 - pasted, pasted])


@pytest.mark.parametrize("op, reference", [
    ("posterize", lambda x, m: TF.posterize(x, int(m))),
    ("solarize", lambda x, m: TF.solarize(x, float(m))),
    ("autocontrast", lambda x, m: TF.autocontrast(x)),
    ("equalize", lambda x, m: TF.equalize(x)),
])
def test_colour_operations_match_torchvision(op, reference):
    torch.manual_seed(0)
    x = (torch.rand(3, 3, 8, 8) * 200 + 20).to(torch.uint8)
    m = {"posterize": 3.0, "solarize": 128.0}.get(op, 0.0)
    ours = policies.apply_op(op, x.float(), torch.full((3,), m)).round().to(torch.uint8)
    assert torch.equal(ours, torch.stack([reference(img, m) for img in x]))


def test_translation_moves_pixels_and_fills_with_zero():
    x = torch.arange(1 * 1 * 4 * 4, dtype=torch.float).view(1, 1, 4, 4) + 1
    out = policies.apply_op("translate_x", x, torch.tensor([1.0]))
    assert torch.equal(out[0, 0, :, 1:], x[0, 0, :, :-1]) or torch.equal(out[0, 0, :, :-1], x[0, 0, :, 1:])
    assert (out == 0).sum() == 4  # one column of fill


@pytest.mark.parametrize("name", ["trivialaugment", "randaugment"])
def test_policies_are_drawn_per_image_from_the_generator(name):
    p = policies.Policy(name)
    x = DATA.train_x[:32]
    a = p(x, torch.Generator().manual_seed(1))
    b = p(x, torch.Generator().manual_seed(1))
    assert a.dtype == torch.uint8 and a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, x) and not torch.equal(a, p(x, torch.Generator().manual_seed(2)))


def test_adamw_is_offered_and_bad_settings_are_refused(smoke_cfg):
    r = Recipe(epochs=1, lr=1e-3, optimizer="adamw", weight_decay=0.05)
    assert isinstance(optimizer(tiny_model(), r, torch.device("cpu"), EAGER), torch.optim.AdamW)
    from prunebench import validate
    for bad, words in (("schedule.augment=autoaugment", "schedule.augment"), ("schedule.optimizer=adam", "adamw"),
                       ("schedule.ema_decay=1.0", "schedule.ema_decay"), ("schedule.lr_schedule=linear", "cosine")):
        with pytest.raises(PrunebenchError, match=words):
            validate.check(smoke_cfg(bad))


def test_smoke_comparison_under_the_modern_recipe_every_row_ok(smoke_cfg):
    rows = pipeline.run(smoke_cfg("schedule=modern", "schedule.epochs=2", "schedule.warmup_epochs=1",
                                  "schedule.steps_per_epoch=3", "schedule.batch_size=32", "schedule.ema_steps=2",
                                  "schedule.eval_every=0", "method=l1_norm"))
    assert [r["row"] for r in rows] == ["unpruned", "pruned", "finetune", "scratch_e", "scratch_b", "uniform"]
    assert all(r["status"] == "ok" for r in rows), rows
