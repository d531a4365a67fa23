import json
import os

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from prunebench import pipeline
from prunebench.methods.sss import SSSConfig
from prunebench.errors import PrunebenchError
from prunebench.methods import create
from prunebench.methods.sss import ATTR, soft_threshold
from prunebench.models import build, resnet, vgg
from prunebench.pruning import prune

SHAPE = (3, 16, 16)


def method(**kw):
    return create(OmegaConf.structured(SSSConfig(name="sss", selection="threshold", **kw)))


def tiny_vgg():
    torch.manual_seed(0)
    return build(vgg.spec_for(11, 0.125, 3, 10))


def tiny_resnet():
    torch.manual_seed(0)
    return build(resnet.spec_for(20, 0.5, 3, 10))


def randomise_bn(model):
    """Non-trivial BatchNorm statistics and affine parameters, so folding has something to get wrong."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.momentum = 0.0  # training-mode forwards leave the running statistics alone


def test_soft_threshold_is_the_l1_proximal_operator():
    z = torch.tensor([0.3, -0.3, 0.05, -0.05, 0.049, 0.0, 1.0])
    assert soft_threshold(z, 0.05).tolist() == pytest.approx([0.25, -0.25, 0.0, 0.0, 0.0, 0.0, 0.95])


def test_proximal_step_zeroes_small_factors_and_shrinks_the_others():
    model, m = tiny_vgg(), method(sparsity=0.5, momentum=0.0)  # lr x sparsity = 0.05
    m.attach(model, SHAPE)
    lam = getattr(model, ATTR).factors["conv1"]
    with torch.no_grad():
        lam.copy_(torch.tensor([0.03, -0.05, 0.2, -0.3, 0.05, 0.5, 0.06, -1.0]))
    lam.grad = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 1.0, -0.5, 0.0])  # z = lam - 0.1 * grad
    m.regularize(model)
    assert lam.grad is None  # out of the SGD step
    m.after_step(model, lr=0.1)
    expected = [0.0, 0.0, 0.15, -0.25, 0.0, 0.35, 0.06, -0.95]  # z = 0.4 -> 0.35; z = 0.11 -> 0.06
    assert lam.detach().tolist() == pytest.approx(expected, abs=1e-7)
    assert (lam.detach()[[0, 1, 4]] == 0).all()  # exactly zero, not just small
    # factors without a stashed gradient (e.g. another group) are left alone
    other = getattr(model, ATTR).factors["conv2"]
    assert torch.equal(other.detach(), torch.ones_like(other))


def test_apg_momentum_follows_the_papers_update_and_settles_at_exact_zero():
    model, m = tiny_vgg(), method(sparsity=0.5, momentum=0.9)
    m.attach(model, SHAPE)
    f = getattr(model, ATTR)
    lam, vel = f.factors["conv1"], f.velocity.conv1
    with torch.no_grad():
        lam.copy_(torch.tensor([1.0, 0.12, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]))
    lr, t = 0.1, 0.05
    held, v = lam.detach().clone(), torch.zeros(8)
    for step in range(6):
        lam.grad = torch.zeros(8)
        m.regularize(model)
        m.after_step(model, lr)
        prox = soft_threshold(held, t)  # zero gradient: z = held
        v = prox - held + 0.9 * v
        held = prox + 0.9 * v
        assert torch.allclose(lam.detach(), held, atol=1e-6) and torch.allclose(vel, v, atol=1e-6)
    # the small factor hits the threshold and, after two zero proximal points, is held at exactly 0
    assert lam[1].item() == 0.0 and vel[1].item() == 0.0
    assert lam[0].item() != 0.0  # a large factor is still alive


def test_factors_skip_sgd_and_weight_decay_in_a_real_step():
    model, m = tiny_vgg(), method(sparsity=0.0, momentum=0.0)
    m.attach(model, SHAPE)
    lam = getattr(model, ATTR).factors["conv3"]
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.5)
    x, y = torch.randn(8, *SHAPE), torch.randint(0, 10, (8,))
    F.cross_entropy(model(x), y).backward()
    grad = lam.grad.clone()
    m.regularize(model)
    opt.step()
    m.after_step(model, 0.1)
    assert torch.allclose(lam.detach(), 1 - 0.1 * grad)  # plain gradient step, no decay, no SGD momentum


def test_attach_detach_round_trip_computes_the_same_function_and_leaves_a_plain_model():
    for model in (tiny_vgg(), tiny_resnet()):
        randomise_bn(model)
        plain_keys = set(model.state_dict())
        for level in (("channel", "block") if isinstance(model, resnet.ResNet) else ("channel",)):
            m = method(level=level)
            m.attach(model, SHAPE)
            with torch.no_grad():
                for p in getattr(model, ATTR).factors.values():
                    p.uniform_(-1.5, 1.5)
            x = torch.randn(6, *SHAPE)
            model.eval()
            attached_eval = model(x)
            model.train()
            attached_train = model(x)
            m.detach(model)
            assert set(model.state_dict()) == plain_keys and not hasattr(model, ATTR)
            assert torch.allclose(model(x), attached_train, atol=1e-5)
            model.eval()
            assert torch.allclose(model(x), attached_eval, atol=1e-5)
            model.train()


def test_zero_factor_channels_are_removed_and_the_pruned_model_is_unchanged():
    model, m = tiny_vgg(), method(min_channels=1)
    randomise_bn(model)
    m.attach(model, SHAPE)
    with torch.no_grad():
        getattr(model, ATTR).factors["conv1"][[2, 5]] = 0.0
        getattr(model, ATTR).factors["conv4"][:] = 0.0  # a whole layer: min_channels keeps one
        getattr(model, ATTR).factors["conv6"][7] = -0.3  # negative, not zero: kept
    model.eval()
    x = torch.randn(4, *SHAPE)
    before = model(x)
    scores = m.scores(model, None)
    m.detach(model)
    keep = m.select(model, scores, m.cfg)
    assert 2 not in keep["conv1"].tolist() and 5 not in keep["conv1"].tolist() and len(keep["conv1"]) == 6
    assert len(keep["conv4"]) == 1 and 7 in keep["conv6"].tolist()
    assert all(len(keep[g]) == len(scores[g]) for g in keep if g not in ("conv1", "conv4"))
    pruned = prune(model, keep).eval()
    assert torch.allclose(pruned(x), before, atol=1e-5)


def test_zero_factor_blocks_are_removed_whole_and_the_pruned_model_is_unchanged():
    model, m = tiny_resnet(), method(level="block", skip=["block9"])
    randomise_bn(model)
    m.attach(model, SHAPE)
    f = getattr(model, ATTR).factors
    assert all(p.numel() == 1 for p in f.values())
    with torch.no_grad():
        f["block2"].zero_()
        f["block4"].zero_()  # the first block of a stage: its shortcut still downsamples and pads
        f["block5"].fill_(0.4)
        f["block9"].zero_()  # skipped: stays
    model.eval()
    x = torch.randn(4, *SHAPE)
    before = model(x)
    scores = m.scores(model, None)
    m.detach(model)
    keep = m.select(model, scores, m.cfg)
    assert len(keep["block2"]) == 0 and len(keep["block4"]) == 0
    assert keep["block5"].tolist() == list(range(16)) and len(keep["block9"]) == 32
    pruned = prune(model, keep).eval()
    assert pruned.spec["block_widths"] == [8, 0, 8, 0, 16, 16, 32, 32, 32]
    assert torch.allclose(pruned(x), before, atol=1e-5)


def test_block_level_on_vgg_is_a_clear_error():
    with pytest.raises(PrunebenchError, match="level=block needs a ResNet"):
        method(level="block").attach(tiny_vgg(), SHAPE)
    with pytest.raises(ValidationError, match="expected one of \\[channel, block\\]"):  # the schema's Enum
        method(level="layer")


@pytest.mark.parametrize("model,extra", [
    ("vgg11", ["method.sparsity=10"]),
    ("resnet20", ["model.width=0.5", "method.sparsity=0.01"]),
    ("resnet20", ["model.width=0.5", "method.level=block", "method.sparsity=10", "method.skip=[block1,block4,block7]"]),
])
def test_smoke_runs_every_row(smoke_cfg, model, extra):
    rows = {r["row"]: r for r in pipeline.run(smoke_cfg("method=sss", f"model={model}", *extra))}
    assert list(rows) == ["unpruned", "sparse", "pruned", "finetune", "scratch_e", "scratch_b", "uniform"]
    assert all(r["status"] == "ok" for r in rows.values()), rows
    assert rows["sparse"]["params"] > rows["unpruned"]["params"]  # the factors ride along in the sparse stage
    widths = json.load(open(os.path.join(rows["pruned"]["stage"], "widths.json")))
    if "method.sparsity=10" in extra:  # strong enough to zero every factor in the smoke's few steps
        assert rows["pruned"]["flops"] < rows["unpruned"]["flops"]
        if "method.level=block" in extra:
            assert sorted(widths) == ["block1", "block4", "block7"]  # the skipped blocks only
        else:
            assert set(widths.values()) == {4}  # min_channels
    else:  # weak: nothing reaches zero, nothing is removed
        assert rows["pruned"]["flops"] == rows["unpruned"]["flops"]
