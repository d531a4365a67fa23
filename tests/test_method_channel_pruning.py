import pytest
import torch
from omegaconf import OmegaConf

from prunebench import pipeline
from prunebench.config import ChannelPruningConfig, DatasetConfig
from prunebench.data import synthetic
from prunebench.methods import create
from prunebench.methods.activations import sample
from prunebench.methods.channel_pruning import lasso, lasso_scores
from prunebench.models import build, resnet, vgg
from prunebench.pruning import prune
from prunebench.pruning.reconstruct import layer_weight, set_layer_weight

DATA = synthetic.load(OmegaConf.structured(DatasetConfig(name="synthetic")))  # 256 training images, 16x16
SAMPLING = {"num_images": 256, "batch_size": 128, "positions_per_image": 16}


def cfg(**kw):
    return OmegaConf.structured(ChannelPruningConfig(name="channel_pruning",
                                                     **{"min_channels": 1, **SAMPLING, **kw}))


def randomized(spec, seed=0):
    torch.manual_seed(seed)
    model = build(spec)
    for m in model.modules():  # non-trivial BN statistics, as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def relative_error(a, b):
    return float((a - b).norm() / b.norm())


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
    x = DATA.normalize(DATA.train_x)
    with torch.no_grad():
        assert relative_error(pruned(x), model(x)) > 0.05
        method.reconstruct(model, pruned, keep, DATA)
        assert relative_error(pruned(x), model(x)) < 1e-4  # float32 through every layer


def planted_model():
    """VGG-11 whose conv2 (the consumer of conv1's 8 channels) reads channels 1, 4, 6;
    the other five reach it with 1% of their weight, though their own filters are the
    largest (a criterion on conv1's weights would keep them)."""
    model = randomized(vgg.spec_for(11, 0.125, 3, 10))
    planted, others = [1, 4, 6], [0, 2, 3, 5, 7]
    with torch.no_grad():
        model.features[0].weight[others] *= 3
        model.features[4].weight[:, others] *= 0.01
    return model, planted


def consumer_error(model, pruned, layer):
    """Relative error of ``layer``'s output in ``pruned`` against the original, on the training images."""
    batch = next(sample(DATA, [layer], pruned, model, **{**SAMPLING, "batch_size": 256}, seed=0))[layer]
    got = torch.einsum("nck,ock->no", batch.x, layer_weight(pruned.get_submodule(layer)))
    return relative_error(got, batch.y)


def test_selection_finds_the_planted_channels_and_beats_random_ones():
    model, planted = planted_model()
    c = cfg(pruning_ratio=0.0, layer_ratios={"conv1": 0.625})
    method = create(c)
    keep = method.select(model, method.scores(model, DATA), c)
    assert keep["conv1"].tolist() == planted
    pruned = prune(model, keep).eval()
    method.reconstruct(model, pruned, keep, DATA)
    error = consumer_error(model, pruned, "features.4")
    g = torch.Generator().manual_seed(0)
    random_errors = []
    while len(random_errors) < 5:
        choice = torch.sort(torch.randperm(8, generator=g)[:3]).values
        if choice.tolist() == planted:
            continue
        other = prune(model, {**keep, "conv1": choice}).eval()
        method.reconstruct(model, other, {**keep, "conv1": choice}, DATA)
        random_errors.append(consumer_error(model, other, "features.4"))
    assert error < 0.1 and error < min(random_errors) / 4, (error, random_errors)


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
