"""Planted cases for the constant carry (prunebench/pruning/constants.py): removing a
zero filter leaves the network's function as it was, exactly where the docstring says."""
import torch

from prunebench import models
from prunebench.models import densenet, resnet, vgg
from prunebench.pruning import prune, widths
from prunebench.pruning import surgery
from prunebench.pruning.constants import carried
from tests.cases import randomized

X = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def plant_zero_filters(model, group_name, channels):
    """Zero the filters of ``channels`` and give their BN a clearly positive constant output."""
    group = next(g for g in model.channel_groups() if g.name == group_name)
    with torch.no_grad():
        model.get_submodule(group.conv).weight[channels] = 0
        bn = model.get_submodule(group.bn)
        bn.bias[channels] = 1.0
        bn.running_mean[channels] = -0.3
    return group


def keep_all_but(model, group_name, channels):
    keep = {g: torch.arange(w) for g, w in widths(model).items()}
    mask = torch.ones(len(keep[group_name]), dtype=torch.bool)
    mask[channels] = False
    keep[group_name] = mask.nonzero().flatten()
    return keep


def output_of(model, path, x):
    seen = {}
    handle = model.get_submodule(path).register_forward_hook(lambda m, i, o: seen.setdefault("y", o.detach()))
    with torch.no_grad():
        model(x)
    handle.remove()
    return seen["y"]


def test_linear_consumer_after_global_pooling_is_exact():
    model = randomized(vgg.spec_for(11, 0.125, 3, 10))
    last = model.channel_groups()[-1]
    assert last.consumers == ("classifier",)
    plant_zero_filters(model, last.name, [0, 3])
    pruned = prune(model, keep_all_but(model, last.name, [0, 3])).eval()
    assert not torch.equal(pruned.classifier.bias, model.classifier.bias)  # something was carried
    with torch.no_grad():
        assert torch.allclose(pruned(X), model(X), atol=1e-5)


def test_conv_consumer_is_exact_away_from_the_border():
    """A padded 3x3 consumer: equal at interior positions after its BatchNorm, not at the border."""
    model = randomized(vgg.spec_for(11, 0.125, 3, 10))
    group = model.channel_groups()[2]  # conv3 -> conv4, both at 8x8 for a 32x32 image
    plant_zero_filters(model, group.name, [1, 2])
    pruned = prune(model, keep_all_but(model, group.name, [1, 2])).eval()
    consumer = group.consumers[0]
    bn_after = f"features.{int(consumer.split('.')[1]) + 1}"
    full, cut = output_of(model, bn_after, X), output_of(pruned, bn_after, X)
    assert torch.allclose(cut[..., 1:-1, 1:-1], full[..., 1:-1, 1:-1], atol=1e-5)
    assert not torch.allclose(cut[..., 0, :], full[..., 0, :], atol=1e-3)  # the border is where it is inexact
    assert not torch.equal(pruned.get_submodule(bn_after).running_mean,
                           model.get_submodule(bn_after).running_mean)


def test_resnet_block_consumer_folds_into_the_block_batchnorm():
    model = randomized(resnet.spec_for(20, 1.0, 3, 10))
    plant_zero_filters(model, "block2", [4, 5, 6])
    pruned = prune(model, keep_all_but(model, "block2", [4, 5, 6])).eval()
    full, cut = output_of(model, "blocks.1.bn2", X), output_of(pruned, "blocks.1.bn2", X)
    assert torch.allclose(cut[..., 1:-1, 1:-1], full[..., 1:-1, 1:-1], atol=1e-5)


def test_gamma_exactly_zero_is_constant_too():
    model = randomized(vgg.spec_for(11, 0.125, 3, 10))
    last = model.channel_groups()[-1]
    with torch.no_grad():
        model.get_submodule(last.bn).weight[2] = 0.0
        model.get_submodule(last.bn).bias[2] = 0.7
    pruned = prune(model, keep_all_but(model, last.name, [2])).eval()
    with torch.no_grad():
        assert torch.allclose(pruned(X), model(X), atol=1e-5)


def test_removing_live_channels_carries_nothing():
    """Filters that are not zero are not constant: surgery slices as before (L1-norm, slimming, ...)."""
    model = randomized(vgg.spec_for(11, 0.125, 3, 10))
    keep = {g: torch.arange(0, w, 2) for g, w in widths(model).items()}
    assert carried(model, keep) == {}
    pruned = prune(model, keep)
    assert torch.equal(pruned.classifier.bias, model.classifier.bias)
    for g in model.channel_groups():
        bn = g.bn
        assert torch.equal(pruned.get_submodule(bn).running_mean, model.get_submodule(bn).running_mean[keep[g.name]])


def test_model_left_in_its_training_mode():
    model = randomized(vgg.spec_for(11, 0.125, 3, 10)).train()
    group = model.channel_groups()[1]
    plant_zero_filters(model, group.name, [0])
    prune(model, keep_all_but(model, group.name, [0]))
    assert model.training


def test_densenet_concatenated_zero_filters_carry_into_each_consumer_through_its_own_norm(monkeypatch):
    """Inside a concatenation a zero filter reaches each later layer through that layer's own
    BatchNorm, a different constant for each. DenseNet-BC's growth channels are read by 1x1
    convolutions (a bottleneck, whose bn2 reads its output; a transition, whose output goes into
    the next block's concatenation: the norms of its own group) and the classifier: exact."""
    model = randomized(densenet.spec_for(16, 0.5, 3, 10, block="bottleneck", compression=0.5)).double()
    planted = {"conv1": [0, 5], "layer1_conv2": [2], "layer3_conv2": [0, 4], "trans1_conv1": [1], "layer6_conv2": [3]}
    groups = {g.name: g for g in models.conv_groups(model)}
    with torch.no_grad():
        for name, channels in planted.items():
            model.get_submodule(groups[name].conv).weight[channels] = 0
    keep = {g: torch.arange(w) for g, w in widths(model, "filters").items()}
    for name, channels in planted.items():
        keep[name] = torch.tensor([i for i in range(len(keep[name])) if i not in channels])
    delta = carried(model, keep)
    assert "trans1.conv1.weight" not in delta and "dense2.0.bn1.running_mean" in delta  # through trans1's group
    x = X.double()
    with torch.no_grad():
        assert (prune(model, keep).eval().double()(x) - model(x)).abs().max() < 1e-6  # float32 weights
        monkeypatch.setattr(surgery, "carried", lambda model, keep: {})
        assert (prune(model, keep).eval().double()(x) - model(x)).abs().max() > 1e-2  # what was carried mattered
