import pytest
import torch

from prunebench import measure, models
from prunebench.models import resnet, vgg
from prunebench.pruning import prune, uniform_spec, widths
from tests.cases import randomized


SPECS = [vgg.spec_for(11, 0.25, 3, 10), vgg.spec_for(19, 0.125, 3, 10), resnet.spec_for(20, 1.0, 3, 10)]


@pytest.mark.parametrize("spec", SPECS, ids=["vgg11", "vgg19", "resnet20"])
def test_keeping_every_channel_computes_the_same_function(spec):
    model = randomized(spec)
    keep = {g: torch.arange(w) for g, w in widths(model).items()}
    x = torch.randn(4, 3, 32, 32)
    assert torch.allclose(prune(model, keep).eval()(x), model(x), atol=1e-5)


@pytest.mark.parametrize("spec", SPECS, ids=["vgg11", "vgg19", "resnet20"])
def test_removing_channels_equals_silencing_them(spec):
    """A pruned model computes what the full model computes when the removed
    channels output zero (BN scale and shift zeroed, so ReLU emits 0)."""
    model = randomized(spec)
    g = torch.Generator().manual_seed(1)
    keep = {name: torch.sort(torch.randperm(w, generator=g)[: max(1, w // 2)]).values
            for name, w in widths(model).items()}
    pruned = prune(model, keep).eval()
    with torch.no_grad():
        for group in model.channel_groups():
            bn = model.get_submodule(group.bn)
            drop = torch.ones(bn.num_features, dtype=torch.bool)
            drop[keep[group.name]] = False
            bn.weight[drop] = 0
            bn.bias[drop] = 0
    x = torch.randn(4, 3, 32, 32)
    assert torch.allclose(pruned(x), model(x), atol=1e-5)
    assert widths(pruned) == {k: len(v) for k, v in keep.items()}
    assert measure.count_params(pruned) < measure.count_params(model)


def test_pruned_model_saves_as_json_and_loads_with_one_call(tmp_path):
    model = randomized(vgg.spec_for(11, 0.25, 3, 10))
    pruned = prune(model, {g: torch.arange(0, w, 3) for g, w in widths(model).items()}).eval()
    models.save(pruned, tmp_path)
    assert (tmp_path / "arch.json").exists() and (tmp_path / "model.pt").exists()
    loaded = models.load(tmp_path).eval()
    x = torch.randn(2, 3, 32, 32)
    assert loaded.spec == pruned.spec
    assert torch.equal(loaded(x), pruned(x))


def test_paper_model_sizes():
    # Liu et al. 2019 / Li et al. 2017: VGG-19 (CIFAR) 20.04M parameters, ResNet-56 0.85M
    assert round(measure.count_params(models.build(vgg.spec_for(19, 1.0, 3, 10))) / 1e6, 2) == 20.04
    assert round(measure.count_params(models.build(resnet.spec_for(56, 1.0, 3, 10))) / 1e6, 2) == 0.85
    assert measure.spec_flops(vgg.spec_for(19, 1.0, 3, 10), (3, 32, 32)) == 796_272_640


@pytest.mark.parametrize("spec,target", [(vgg.spec_for(19, 1.0, 3, 10), 0.3), (resnet.spec_for(56, 1.0, 3, 10), 0.5),
                                         (vgg.spec_for(11, 0.25, 1, 10), 0.2)])
def test_uniform_width_search_matches_flops_within_one_percent(spec, target):
    model = models.build(spec)
    shape = (spec["in_channels"], 32, 32)
    goal = int(measure.spec_flops(spec, shape) * target)
    new_spec, factor, flops, _ = uniform_spec(model, goal, shape, min_channels=1)
    assert abs(flops - goal) <= 0.01 * goal
    assert flops == measure.spec_flops(new_spec, shape)
    assert 0 < factor < 1
    narrowed = models.build(new_spec)
    ratios = [w / widths(model)[g] for g, w in widths(narrowed).items()]
    assert max(ratios) - min(ratios) < 0.1  # one factor for every layer, up to whole channels
