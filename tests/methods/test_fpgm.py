import pytest
import torch
from omegaconf import OmegaConf

from prunebench import pipeline
from prunebench.methods.fpgm import FPGMConfig
from prunebench.methods import create
from prunebench.methods.fpgm import distance_sums
from prunebench.models import build, resnet, vgg


def method_cfg(**kw):
    return OmegaConf.structured(FPGMConfig(name="fpgm", **kw))


def by_row(rows):
    return {r["row"]: r for r in rows}


def test_fpgm_drops_the_filter_at_the_geometric_median():
    """conv1's filters: a centre c, three symmetric pairs c +- d_i around it and one far filter.
    c is the geometric median of the layer (and the mean of each pair): FPGM removes it,
    although it is not the smallest-norm filter (L1-norm pruning would remove another)."""
    torch.manual_seed(0)
    model = build(vgg.spec_for(11, 0.125, 3, 10))  # conv1: 8 filters of 3x3x3
    gen = torch.Generator().manual_seed(0)
    c = torch.full((3, 3, 3), 0.5)
    d = [0.3 * torch.randn(3, 3, 3, generator=gen) for _ in range(4)]
    filters = [c, c + d[0], c - d[0], c + d[1], c - d[1], c + d[2], c - d[2], c + 4 * d[3]]
    with torch.no_grad():
        model.features[0].weight.copy_(torch.stack(filters))
    method = create(method_cfg(pruning_ratio=0.125, min_channels=1))
    scores = method.scores(model, None)
    assert int(scores["conv1"].argmin()) == 0
    assert scores["conv1"][0] < scores["conv1"][1:].min()
    assert method.select(model, scores, method.cfg)["conv1"].tolist() == [1, 2, 3, 4, 5, 6, 7]
    l1 = model.features[0].weight.abs().sum(dim=(1, 2, 3))
    assert int(l1.argmin()) != 0


def test_distance_sums_are_sums_of_euclidean_distances():
    w = torch.randn(6, 4, 3, 3)
    flat = w.flatten(1)
    expected = torch.stack([sum((flat[i] - flat[j]).norm() for j in range(6)) for i in range(6)])
    assert torch.allclose(distance_sums(w).float(), expected, rtol=1e-5)


def test_fpgm_scores_every_group_and_removes_the_same_share_of_each():
    torch.manual_seed(0)
    model = build(resnet.spec_for(20, 1.0, 3, 10))
    method = create(method_cfg(pruning_ratio=0.4, min_channels=1))
    scores = method.scores(model, None)
    assert list(scores) == [g.name for g in model.channel_groups()]
    keep = method.select(model, scores, method.cfg)
    for g in model.channel_groups():
        width = model.get_submodule(g.conv).out_channels
        assert keep[g.name].numel() == int(width * 0.6 + 1e-9)


@pytest.mark.parametrize("model", ["vgg11", "resnet20"])
def test_smoke_run_through_the_pipeline(smoke_cfg, model):
    extra = ["model.width=0.5"] if model.startswith("resnet") else []
    rows = by_row(pipeline.run(smoke_cfg("method=fpgm", f"model={model}", *extra)))
    assert list(rows) == ["unpruned", "pruned", "finetune", "scratch_e", "scratch_b", "uniform"]
    assert all(r["status"] == "ok" for r in rows.values()), rows
    assert rows["pruned"]["flops"] < rows["unpruned"]["flops"]
