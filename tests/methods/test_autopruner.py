import json
import os

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from prunebench import pipeline
from prunebench.methods.autopruner import AutoPrunerConfig
from prunebench.errors import PrunebenchError
from prunebench.methods import create
from prunebench.methods.autopruner import ATTR, Gate
from prunebench.models import build, resnet, vgg
from prunebench.pruning import prune

SHAPE = (3, 16, 16)


def method(seed=0, **kw):
    kw = {"selection": "threshold", "threshold": 0.5, "sparse_epochs": 5, **kw}
    return create(OmegaConf.structured(AutoPrunerConfig(name="autopruner", **kw)), seed)


def tiny_vgg():
    torch.manual_seed(0)
    return build(vgg.spec_for(11, 0.125, 3, 10))


def test_code_turns_binary_as_alpha_rises():
    gate = Gate(5, 20, 1.0, torch.Generator().manual_seed(0))
    fc_out = torch.tensor([-0.5, -0.1, 0.05, 0.3, 2.0])
    with torch.no_grad():  # fixed FC outputs, whatever the activation: weights 0, bias = the outputs
        gate.fc.weight.zero_()
        gate.fc.bias.copy_(fc_out)
    x = torch.randn(3, 5, 4, 4)  # pooled 2x2 -> 5 x 2 x 2 inputs
    gaps = []
    for alpha in (1.0, 10.0, 50.0, 100.0):
        v = gate.code(x, torch.tensor(alpha))
        assert torch.allclose(v, torch.sigmoid(alpha * fc_out))
        assert torch.equal(v > 0.5, fc_out > 0)  # the side of 0.5 never changes
        gaps.append(torch.minimum(v, 1 - v).max().item())  # distance of the least binary code from {0, 1}
    assert gaps == sorted(gaps, reverse=True) and gaps[0] > 0.4 and gaps[-1] < 0.01


def test_alpha_rises_linearly_over_the_sparse_stage_and_is_kept_in_the_model():
    m = method(alpha_start=1.0, alpha_stop=100.0, sparse_epochs=5)
    assert [m.alpha_after(e) for e in range(5)] == pytest.approx([25.75, 50.5, 75.25, 100.0, 100.0])
    model = tiny_vgg()
    m.attach(model, SHAPE)
    gates = getattr(model, ATTR)
    assert gates.alpha.item() == 1.0
    m.on_epoch_end(model, 1)
    assert gates.alpha.item() == pytest.approx(50.5)
    assert "autopruner_gates.alpha" in model.state_dict()  # a resumed stage goes on from here
    assert method(sparse_epochs=1).alpha_after(0) == 100.0
    with pytest.raises(PrunebenchError, match="sparse_epochs"):
        method(sparse_epochs=None).sparse_settings()


def test_gates_take_each_layers_pooled_activation_and_attach_is_deterministic():
    model, other = tiny_vgg(), tiny_vgg()
    method(seed=3).attach(model, SHAPE)
    method(seed=3).attach(other, SHAPE)
    gates = getattr(model, ATTR).gates
    assert sorted(gates) == [f"conv{k}" for k in range(1, 9)]
    assert gates["conv1"].fc.in_features == 8 * 8 * 8  # 8 channels of 16x16, max-pooled 2x2
    assert gates["conv3"].fc.in_features == 32 * 2 * 2  # 4x4 after two max-pools, then 2x2
    assert gates["conv8"].fc.in_features == 64  # 1x1: nothing left to pool
    assert all(gates[g].fc.out_features == model.get_submodule(g2.bn).num_features
               for g, g2 in zip(sorted(gates), model.channel_groups()))
    a, b = model.state_dict(), other.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    std = gates["conv1"].fc.weight.std().item()
    assert std == pytest.approx(10 * (2 / 512) ** 0.5, rel=0.05)  # 10 x MSRA
    skipped = tiny_vgg()
    method(skip=["conv2"]).attach(skipped, SHAPE)
    assert "conv2" not in getattr(skipped, ATTR).gates


def test_penalty_is_lambda_times_the_squared_gap_with_lambda_held_constant():
    model, m = tiny_vgg(), method(pruning_ratio=0.75, layer_ratios={"conv2": 0.5})
    m.attach(model, SHAPE)
    model.train()
    model(torch.randn(8, *SHAPE))
    codes = {k: v for k, v in getattr(model, ATTR).codes.items()}
    for v in codes.values():
        v.retain_grad()
    p = m.penalty(model)
    expected = sum(100 * abs(v.mean().item() - (0.5 if k == "conv2" else 0.25)) ** 3 for k, v in codes.items())
    assert p.item() == pytest.approx(expected, rel=1e-5)
    p.backward()
    # d/dv of lam (mean(v) - r)^2 with lam constant: 2 lam (mean(v) - r) / C, on the last gate (the
    # others' codes also reach the later gates through the activations)
    v = codes["conv8"]
    gap = v.mean().item() - 0.25
    assert torch.allclose(v.grad, torch.full_like(v, 2 * 100 * abs(gap) * gap / v.numel()), rtol=1e-4)
    assert getattr(model, ATTR).codes == {}  # used once


def test_penalty_drives_the_mean_code_towards_the_target():
    model, m = tiny_vgg(), method(pruning_ratio=0.8, fc_init_scale=1.0)
    m.attach(model, SHAPE)
    gates = getattr(model, ATTR)
    opt = torch.optim.SGD(gates.parameters(), lr=0.5)  # the gates only: the penalty alone moves them
    x = torch.randn(16, *SHAPE)
    model.train()

    def mean_gap():
        model(x)
        gap = sum(abs(v.mean().item() - 0.2) for v in gates.codes.values()) / len(gates.codes)
        gates.codes = {}
        return gap

    before = mean_gap()
    for _ in range(30):
        model(x)
        opt.zero_grad()
        m.penalty(model).backward()
        opt.step()
    after = mean_gap()
    assert before > 0.2 and after < 0.5 * before


def test_low_code_channels_go_and_the_pruned_model_computes_the_gated_function():
    model, m = tiny_vgg(), method(min_channels=1)
    m.attach(model, SHAPE)
    gates = getattr(model, ATTR).gates
    with torch.no_grad():
        model.train()
        for _ in range(3):  # BatchNorm statistics under the gates
            model(torch.randn(16, *SHAPE))
        gates["conv1"].running_code.copy_(torch.tensor([1.0, 0.0, 0.97, 0.5, 0.0, 1.0, 0.51, 0.99]))
        gates["conv5"].running_code.zero_()
    model.eval()
    x = torch.randn(4, *SHAPE)
    before = model(x)
    scores = m.scores(model, None)
    assert torch.equal(scores["conv1"], gates["conv1"].running_code)
    m.detach(model)
    assert not hasattr(model, ATTR) and set(model.state_dict()) == set(tiny_vgg().state_dict())
    assert torch.allclose(model(x), before, atol=1e-5)  # the running code is folded into BatchNorm
    keep = m.select(model, scores, m.cfg)
    assert keep["conv1"].tolist() == [0, 2, 5, 6, 7]  # 0.5 is at the threshold: removed
    assert len(keep["conv5"]) == 1  # min_channels
    pruned = prune(model, keep).eval()
    # conv5's survivor has code 0 and so no output either: removing the zero-code channels changes nothing
    assert torch.allclose(pruned(x), before, atol=1e-5)


def test_training_updates_the_running_code_and_evaluation_uses_it():
    model, m = tiny_vgg(), method()
    m.attach(model, SHAPE)
    gate = getattr(model, ATTR).gates["conv2"]
    model.train()
    model(torch.randn(8, *SHAPE))
    v = getattr(model, ATTR).codes["conv2"].detach()
    assert torch.allclose(gate.running_code, 0.9 * torch.ones(16) + 0.1 * v)
    model.eval()
    code = gate.running_code.clone()
    with torch.no_grad():
        model(torch.randn(8, *SHAPE))
    assert torch.equal(gate.running_code, code)


def test_training_step_through_the_loop_hooks_moves_the_gates():
    model, m = build(resnet.spec_for(20, 0.5, 3, 10)), method()
    m.attach(model, SHAPE)
    assert sorted(getattr(model, ATTR).gates) == [f"block{k}" for k in range(1, 10)]
    fc = getattr(model, ATTR).gates["block1"].fc.weight
    w0 = fc.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, *SHAPE), torch.randint(0, 10, (8,))
    loss = F.cross_entropy(model(x), y) + m.penalty(model)
    loss.backward()
    opt.step()
    assert not torch.equal(fc.detach(), w0)


@pytest.mark.parametrize("model", ["vgg11", "resnet20"])
def test_smoke_runs_every_row(smoke_cfg, model):
    extra = ["model.width=0.5"] if model == "resnet20" else []
    rows = {r["row"]: r for r in pipeline.run(smoke_cfg("method=autopruner", f"model={model}",
                                                        "method.sparse_epochs=3", *extra))}
    assert list(rows) == ["unpruned", "sparse", "pruned", "finetune", "scratch_e", "scratch_b", "uniform"]
    assert all(r["status"] == "ok" for r in rows.values()), rows
    assert rows["sparse"]["epochs"] == 3
    assert rows["pruned"]["flops"] < rows["unpruned"]["flops"]
    settings = json.load(open(os.path.join(rows["sparse"]["stage"], "settings.json")))
    assert settings["sparse"]["sparse_init"] == "unpruned"  # fine-tunes the trained model
