import pytest
import torch
from omegaconf import OmegaConf

from prunebench import pipeline
from prunebench.methods.thinet import ThiNetConfig
from prunebench.methods import create
from prunebench.methods.thinet import removal_order
from prunebench.models import resnet, vgg
from prunebench.pruning import prune
from prunebench.pruning.reconstruct import layer_weight, set_layer_weight
from tests.cases import (
    DATA,
    SAMPLING,
    check_planted_channels_beat_random_ones,
    check_reconstruction_restores,
    planted_model,
    randomized,
)


def cfg(**kw):
    return OmegaConf.structured(ThiNetConfig(name="thinet", **{"min_channels": 1, **SAMPLING, **kw}))


def test_greedy_adds_the_channel_that_keeps_the_summed_contribution_smallest():
    """Channel 1 alone is bigger than channel 2, but it cancels channel 0, removed
    first: ThiNet's greedy takes 1 next, where a ranking by norms would take 2."""
    g = torch.Generator().manual_seed(0)
    u, others = torch.randn(1000, generator=g), torch.randn(1000, 4, generator=g)
    z = torch.stack([0.5 * u, -0.6 * u, 0.55 * others[:, 0] / others[:, 0].norm() * u.norm(),
                     *(2 * others[:, 1:]).T], dim=1)  # (samples, channels) contributions
    order = removal_order(z.T @ z).tolist()
    assert z.norm(dim=0).argsort().tolist()[:2] == [0, 2]
    assert order[:3] == [0, 1, 2]


@pytest.mark.parametrize("spec", [vgg.spec_for(11, 0.125, 3, 10), resnet.spec_for(20, 0.5, 3, 10)],
                         ids=["vgg11", "resnet20"])
def test_nothing_pruned_reconstructs_exactly(spec):
    """With every channel kept, the rescaling restores consumers whose input channels
    were scaled by arbitrary factors: the original output, to float precision."""
    model = randomized(spec)
    method = create(cfg(pruning_ratio=0.0))
    keep = method.select(model, method.scores(model, DATA), method.cfg)
    assert all(len(k) == model.get_submodule(g.conv).out_channels
               for g, k in zip(model.channel_groups(), keep.values()))
    pruned = prune(model, keep).eval()
    g = torch.Generator().manual_seed(1)
    for group in pruned.channel_groups():
        for c in group.consumers:
            w = layer_weight(pruned.get_submodule(c))
            set_layer_weight(pruned.get_submodule(c), w * (0.5 + 1.5 * torch.rand(w.shape[1], generator=g))[:, None])
    check_reconstruction_restores(method, model, pruned, keep)


def test_selection_finds_the_planted_channels_and_beats_random_ones():
    check_planted_channels_beat_random_ones(cfg(pruning_ratio=0.0, layer_ratios={"conv1": 0.625}))


def test_reconstruct_false_leaves_the_surgery_weights():
    model, _ = planted_model()
    c = cfg(pruning_ratio=0.5, reconstruct=False)
    method = create(c)
    keep = method.select(model, method.scores(model, DATA), c)
    pruned = prune(model, keep)
    before = {k: v.clone() for k, v in pruned.state_dict().items()}
    method.reconstruct(model, pruned, keep, DATA)
    assert all(torch.equal(before[k], v) for k, v in pruned.state_dict().items())


@pytest.mark.parametrize("model", ["vgg11", "resnet20"])
def test_smoke_runs_every_row(smoke_cfg, model):
    extra = ["model.width=0.5"] if model.startswith("resnet") else []
    rows = {r["row"]: r for r in pipeline.run(smoke_cfg("method=thinet", f"model={model}", *extra,
                                                        "method.num_images=64"))}
    assert list(rows) == ["unpruned", "pruned", "finetune", "scratch_e", "scratch_b", "uniform"]
    assert all(r["status"] == "ok" for r in rows.values()), rows
    assert rows["pruned"]["flops"] < rows["unpruned"]["flops"]
