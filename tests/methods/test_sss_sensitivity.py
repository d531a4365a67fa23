import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from prunebench import pipeline
from prunebench.methods.sss_sensitivity import SSSSensitivityConfig
from prunebench.methods import create
from prunebench.methods.sss import ATTR
from prunebench.models import build, resnet, vgg
from tests.cases import DATA

SHAPE = (3, 16, 16)


def method(**kw):
    kw = {"num_images": 64, "batch_size": 32, **kw}
    return create(OmegaConf.structured(SSSSensitivityConfig(name="sss_sensitivity", **kw)))


def planted_vgg():
    """conv1's channel 3 has the largest factor (SSS would keep it first) but conv2 does not read it."""
    torch.manual_seed(0)
    model = build(vgg.spec_for(11, 0.125, 3, 10))
    m = method(selection="layer", pruning_ratio=0.125, min_channels=1)
    m.attach(model, SHAPE)
    with torch.no_grad():
        getattr(model, ATTR).factors["conv1"][3] = 3.0
        model.features[4].weight[:, 3] = 0.0  # conv2 reads nothing from it
    return model, m


def test_sensitivity_ranks_a_planted_useless_channel_last():
    model, m = planted_vgg()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scores = m.scores(model, DATA)
    s = scores["conv1"]
    assert s[3] == 0 and (s[torch.arange(8) != 3] > 0).all()
    keep = m.select(model, scores, m.cfg)
    assert keep["conv1"].tolist() == [0, 1, 2, 4, 5, 6, 7]  # the one channel removed is the useless one
    assert getattr(model, ATTR).factors["conv1"].detach().abs().argmax() == 3  # |lambda| would keep it first
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # model left as it was
    assert all(p.grad is None for p in model.parameters())


def test_sensitivity_is_the_mean_of_abs_gradient_times_factor_over_batches():
    model, m = planted_vgg()
    with torch.no_grad():
        for p in getattr(model, ATTR).factors.values():
            p.uniform_(0.5, 1.5)
    lam = getattr(model, ATTR).factors["conv2"]
    got = m.sensitivities(model, DATA)["conv2"]
    gen = torch.Generator().manual_seed(0)
    model.eval()
    per_batch = []
    for x, y in DATA.sample_batches(64, 32, gen):
        (g,) = torch.autograd.grad(F.cross_entropy(model(x), y), [lam])
        per_batch.append((g * lam.detach()).abs())
    assert len(per_batch) == 2
    assert torch.allclose(got, torch.stack(per_batch).mean(0), rtol=1e-4, atol=1e-12)


def test_block_level_removes_the_least_sensitive_blocks_whole():
    torch.manual_seed(0)
    model = build(resnet.spec_for(20, 0.5, 3, 10))
    m = method(level="block", pruning_ratio=0.34, skip=["block9"])
    m.attach(model, SHAPE)
    scores = {f"block{k}": torch.full((8,), float(k)) for k in range(1, 10)}
    scores["block9"] = torch.zeros(8)  # least sensitive, but skipped
    keep = m.select(model, scores, m.cfg)
    assert [g for g, idx in keep.items() if len(idx) == 0] == ["block1", "block2"]  # floor(0.34 x 8) = 2
    assert all(len(keep[g]) == 8 for g in keep if g not in ("block1", "block2"))


@pytest.mark.parametrize("model,extra", [
    ("vgg11", []),
    ("resnet20", ["model.width=0.5"]),
])
def test_smoke_runs_every_row(smoke_cfg, model, extra):
    rows = {r["row"]: r for r in pipeline.run(smoke_cfg("method=sss_sensitivity", f"model={model}", *extra))}
    assert list(rows) == ["unpruned", "sparse", "pruned", "finetune", "scratch_e", "scratch_b", "uniform"]
    assert all(r["status"] == "ok" for r in rows.values()), rows
    assert rows["pruned"]["flops"] < rows["unpruned"]["flops"]  # pruning_ratio, whatever the sparse stage did
