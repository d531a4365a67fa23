import pytest
import torch
from omegaconf import OmegaConf

from prunebench import pipeline
from prunebench.methods.channel_pruning import ChannelPruningConfig
from prunebench.methods import create
from prunebench.methods.channel_pruning import lasso, lasso_scores
from prunebench.models import resnet, vgg
from prunebench.pruning import prune
from prunebench.pruning.reconstruct import layer_weight, set_layer_weight
from tests.cases import (
    DATA,
    SAMPLING,
    check_planted_channels_beat_random_ones,
    check_reconstruction_restores,
    randomized,
    relative_error,
)


def cfg(**kw):
    return OmegaConf.structured(ChannelPruningConfig(name="channel_pruning",
                                                     **{"min_channels": 1, **SAMPLING, **kw}))


def test_lasso_keeps_the_planted_channels_not_the_most_correlated_ones():
    """y = z0 + z1 + 0.3 z2 + noise; channel 5 mixes z0 and z1, so it correlates with y more
    than z2 does, but the LASSO at three non-zero betas keeps 0, 1, 2, with betas near the
    truth; lambda is the smallest that leaves three: a little below it, more are non-zero."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2000, 8, generator=g, dtype=torch.float64)
    z[:, 5] = 0.4 * (z[:, 0] + z[:, 1]) + 0.3 * z[:, 5]
    y = z[:, 0] + z[:, 1] + 0.3 * z[:, 2] + 0.5 * torch.randn(2000, generator=g, dtype=torch.float64)
    gram, cross = z.T @ z, z.T @ y
    assert 5 in cross.abs().argsort(descending=True)[:3].tolist()
    scores, lam = lasso_scores(gram, cross, 3)
    assert sorted(scores.argsort(descending=True)[:3].tolist()) == [0, 1, 2]
    assert int((scores > 0.1).sum()) == 3
    assert torch.allclose(scores[:3].double(), torch.tensor([1.0, 1.0, 0.3], dtype=torch.float64), atol=0.05)
    assert int((lasso(gram, cross, torch.tensor([0.98 * lam])) != 0).sum()) > 3


@pytest.mark.parametrize("spec", [vgg.spec_for(11, 0.125, 3, 10), resnet.spec_for(20, 0.5, 3, 10)],
                         ids=["vgg11", "resnet20"])
def test_nothing_pruned_reconstructs_exactly(spec):
    """With every channel kept, the least-squares refit restores consumers whose weights
    were overwritten with noise: the original output, to float precision."""
    model = randomized(spec)
    method = create(cfg(pruning_ratio=0.0))
    keep = method.select(model, method.scores(model, DATA), method.cfg)
    pruned = prune(model, keep).eval()
    g = torch.Generator().manual_seed(1)
    for group in pruned.channel_groups():
        for c in group.consumers:
            w = layer_weight(pruned.get_submodule(c))
            set_layer_weight(pruned.get_submodule(c), w + 0.5 * w.std() * torch.randn(w.shape, generator=g))
    check_reconstruction_restores(method, model, pruned, keep)


def test_selection_finds_the_planted_channels_and_beats_random_ones():
    check_planted_channels_beat_random_ones(cfg(pruning_ratio=0.0, layer_ratios={"conv1": 0.625}))


def test_the_lasso_target_is_each_layers_kept_count():
    model = randomized(vgg.spec_for(11, 0.125, 3, 10))
    c = cfg(pruning_ratio=0.5, layer_ratios={"conv3": 0.25}, skip=["conv8"])
    counts = create(c).target_counts(model)
    assert counts["conv1"] == 4 and counts["conv3"] == 24 and counts["conv8"] == 64
    two_steps = create(cfg(pruning_ratio=0.75, iterations=2)).target_counts(model)
    assert two_steps["conv2"] == 8  # each of two steps removes 1 - sqrt(0.25) = half


def test_residual_branch_makes_up_for_shortcut_drift():
    """ResNet: the stem (no group's consumer, so never refitted) is perturbed; refitting
    conv2 to the block's full output brings every block's output closer to the original
    than refitting it to conv2's own output."""
    model = randomized(resnet.spec_for(20, 0.5, 3, 10))
    method = create(cfg(pruning_ratio=0.0))
    keep = method.select(model, method.scores(model, DATA), method.cfg)
    x = DATA.normalize(DATA.train_x)

    def block_outputs(net):
        h, out = torch.relu(net.bn1(net.conv1(x))), []
        for block in net.blocks:
            h = block(h)
            out.append(h)
        return out

    errors = {}
    for residual in (False, True):
        pruned = prune(model, keep).eval()
        with torch.no_grad():
            noise = torch.randn(pruned.conv1.weight.shape, generator=torch.Generator().manual_seed(0))
            pruned.conv1.weight.mul_(1 + 0.3 * noise)
        method.residual_target = residual
        method.reconstruct(model, pruned, keep, DATA)
        with torch.no_grad():
            errors[residual] = [relative_error(a, b) for a, b in zip(block_outputs(pruned), block_outputs(model))]
    assert all(t < f for t, f in zip(errors[True], errors[False])), errors


@pytest.mark.parametrize("model", ["vgg11", "resnet20"])
def test_smoke_runs_every_row(smoke_cfg, model):
    extra = ["model.width=0.5"] if model.startswith("resnet") else []
    rows = {r["row"]: r for r in pipeline.run(smoke_cfg("method=channel_pruning", f"model={model}", *extra,
                                                        "method.num_images=64"))}
    assert list(rows) == ["unpruned", "pruned", "finetune", "scratch_e", "scratch_b", "uniform"]
    assert all(r["status"] == "ok" for r in rows.values()), rows
    assert rows["pruned"]["flops"] < rows["unpruned"]["flops"]
