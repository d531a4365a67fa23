import pytest
import torch
from omegaconf import OmegaConf

from prunebench import pipeline
from prunebench.methods.sss_sigmoid import SSSSigmoidConfig
from prunebench.errors import PrunebenchError
from prunebench.methods import create
from prunebench.methods.sss import ATTR
from prunebench.models import build, vgg
from prunebench.pruning import prune

SHAPE = (3, 16, 16)


def method(**kw):
    kw = {"selection": "threshold", "threshold": 0.5, "sparse_epochs": 5, **kw}
    return create(OmegaConf.structured(SSSSigmoidConfig(name="sss_sigmoid", **kw)))


def tiny_vgg():
    torch.manual_seed(0)
    return build(vgg.spec_for(11, 0.125, 3, 10))


def test_the_gate_binarises_as_alpha_grows():
    model, m = tiny_vgg(), method(alpha_start=1.0, alpha_stop=100.0)
    m.attach(model, SHAPE)
    f = getattr(model, ATTR)
    s = torch.tensor([-0.5, -0.1, -0.02, 0.03, 0.1, 0.4, 1.0, 2.0])
    with torch.no_grad():
        f.factors["conv1"].copy_(s)
    assert f.alpha.item() == 1.0
    gaps = []
    for epoch in range(5):  # alpha: 1 during the first epoch, then 25.75, 50.5, 75.25, 100
        g = m.multiplier(f, "conv1").detach()
        assert torch.allclose(g, torch.sigmoid(f.alpha * s))
        assert torch.equal(g > 0.5, s > 0)  # the side of 0.5 never changes
        gaps.append(torch.minimum(g, 1 - g).max().item())  # distance of the least binary gate from {0, 1}
        m.on_epoch_end(model, epoch)
    assert f.alpha.item() == 100.0 and "sss_factors.alpha" in model.state_dict()
    assert gaps == sorted(gaps, reverse=True) and gaps[0] > 0.4
    final = m.multiplier(f, "conv1").detach()
    assert final[[0, 1, 5, 6, 7]].sub(torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0])).abs().max() < 1e-4


def test_penalty_is_sparsity_times_the_gates_and_the_update_has_no_soft_threshold():
    model, m = tiny_vgg(), method(sparsity=0.5, momentum=0.0)
    m.attach(model, SHAPE)
    f = getattr(model, ATTR)
    total = sum(torch.sigmoid(p).sum() for p in f.factors.values()).item()  # alpha = 1, s = 1
    p = m.penalty(model)
    assert p.item() == pytest.approx(0.5 * total, rel=1e-6)
    p.backward()
    lam = f.factors["conv2"]
    sig = torch.sigmoid(torch.ones(16))
    assert torch.allclose(lam.grad, 0.5 * sig * (1 - sig))  # d/ds of gamma sigmoid(alpha s), alpha = 1
    grad = lam.grad.clone()
    m.regularize(model)
    m.after_step(model, lr=0.1)
    assert torch.allclose(lam.detach(), 1 - 0.1 * grad)  # a plain gradient step: no shrinkage towards 0


def test_closed_gates_are_removed_and_the_pruned_model_computes_the_gated_function():
    model, m = tiny_vgg(), method(min_channels=1)
    m.attach(model, SHAPE)
    f = getattr(model, ATTR)
    with torch.no_grad():
        model.train()
        for _ in range(3):  # BatchNorm statistics
            model(torch.randn(16, *SHAPE))
        f.alpha.fill_(100.0)
        f.factors["conv1"].copy_(torch.tensor([1.0, -1.0, 0.5, -0.3, 1.0, 2.0, -2.0, 1.0]))
        f.factors["conv5"].fill_(-1.0)  # a whole layer closes: min_channels keeps one
    model.eval()
    x = torch.randn(4, *SHAPE)
    before = model(x)
    scores = m.scores(model, None)
    m.detach(model)
    assert torch.allclose(model(x), before, atol=1e-5)  # the gates are folded into BatchNorm
    keep = m.select(model, scores, m.cfg)
    assert keep["conv1"].tolist() == [0, 2, 4, 5, 7] and len(keep["conv5"]) == 1
    pruned = prune(model, keep).eval()
    # conv5's survivor is closed too (gate ~ 4e-44): removing the closed channels changes nothing
    assert torch.allclose(pruned(x), before, atol=1e-5)


def test_alpha_needs_the_stage_length():
    with pytest.raises(PrunebenchError, match="sparse_epochs"):
        method(sparse_epochs=None).sparse_settings()
    with pytest.raises(PrunebenchError, match="alpha"):
        method(alpha_start=2.0, alpha_stop=1.0)


def test_the_config_ramps_alpha_over_the_schedules_epochs(smoke_cfg):
    cfg = smoke_cfg("method=sss_sigmoid", "schedule.epochs=7")
    assert cfg.method.sparse_epochs == 7


@pytest.mark.parametrize("model,extra", [
    ("vgg11", []),
    ("resnet20", ["model.width=0.5"]),
    ("resnet20", ["model.width=0.5", "method.level=block", "method.skip=[block1,block4,block7]"]),
])
def test_smoke_runs_every_row(smoke_cfg, model, extra):
    # sparsity 10 closes every gate within the smoke's few steps
    cfg = smoke_cfg("method=sss_sigmoid", f"model={model}", "method.sparsity=10", "schedule.epochs=2", *extra)
    rows = {r["row"]: r for r in pipeline.run(cfg)}
    assert list(rows) == ["unpruned", "sparse", "pruned", "finetune", "scratch_e", "scratch_b", "uniform"]
    assert all(r["status"] == "ok" for r in rows.values()), rows
    assert rows["pruned"]["flops"] < rows["unpruned"]["flops"]
