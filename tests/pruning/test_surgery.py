import pytest
import torch

from prunebench import measure, models
from prunebench.models import densenet, preresnet, resnet, vgg
from prunebench.pruning import prune, uniform_spec, widths
from tests.cases import randomized


SPECS = [vgg.spec_for(11, 0.25, 3, 10), vgg.spec_for(19, 0.125, 3, 10), resnet.spec_for(20, 1.0, 3, 10),
         vgg.spec_for(16, 0.125, 3, 10, classifier="li"), resnet.spec_for(20, 0.5, 3, 10, shortcut="avgpool_pad"),
         preresnet.spec_for(20, 0.5, 3, 10), preresnet.spec_for(29, 0.5, 3, 10, block="bottleneck"),
         densenet.spec_for(10, 0.5, 3, 10), densenet.spec_for(16, 0.5, 3, 10, block="bottleneck", compression=0.5)]
IDS = ["vgg11", "vgg19", "resnet20", "vgg16_li", "resnet20_avgpool", "preresnet20", "preresnet29_bottleneck",
       "densenet10", "densenet_bc16"]


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_keeping_every_channel_computes_the_same_function(spec):
    model = randomized(spec)
    keep = {g: torch.arange(w) for g, w in widths(model).items()}
    x = torch.randn(4, 3, 32, 32)
    assert torch.allclose(prune(model, keep).eval()(x), model(x), atol=1e-5)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_removing_channels_equals_silencing_them(spec):
    """A pruned model computes what the full model computes when the removed
    channels output zero (BN scale and shift zeroed, so ReLU emits 0); for a selection
    group, the BatchNorm channels the selection passes on are the ones zeroed."""
    model = randomized(spec)
    g = torch.Generator().manual_seed(1)
    keep = {name: torch.sort(torch.randperm(w, generator=g)[: max(1, w // 2)]).values
            for name, w in widths(model).items()}
    pruned = prune(model, keep).eval()
    with torch.no_grad():
        for group in model.channel_groups():
            bn = model.get_submodule(group.bn)
            index = models.bn_channels(model, group)
            index = torch.arange(bn.num_features) if index is None else index
            drop = torch.ones(index.numel(), dtype=torch.bool)
            drop[keep[group.name]] = False
            bn.weight[index[drop]] = 0
            bn.bias[index[drop]] = 0
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
    # Li et al. 2017, Table 1: VGG-16 (their classifier) 1.5e7 parameters; VGG-16-A 5.4e6 and 2.06e8 FLOPs
    # (multiply-accumulates: prunebench counts 2 per MAC)
    li = models.build(vgg.spec_for(16, 1.0, 3, 10, classifier="li"))
    assert measure.count_params(li) == pytest.approx(15.0e6, rel=0.02)
    halved = {f"conv{k}" for k in (1, 8, 9, 10, 11, 12, 13)}
    a = prune(li, {g: torch.arange(w // 2 if g in halved else w) for g, w in widths(li).items()})
    assert measure.count_params(a) == pytest.approx(5.4e6, rel=0.02)
    assert measure.count_flops(a, (3, 32, 32)) / 2 == pytest.approx(2.06e8, rel=0.02)


def test_model_options_that_do_not_apply_are_errors():
    from prunebench.errors import PrunebenchError
    from tests.conftest import compose_config

    with pytest.raises(PrunebenchError, match="model.shortcut is not a setting .*VGGConfig"):
        compose_config("model=vgg16", "model.shortcut=avgpool_pad")  # the VGG schema has no shortcut
    spec = models.spec_from_config(compose_config("model=vgg16", "model.bn_init=0.5").model, 3, 10)
    assert all(torch.all(m.weight.detach() == 0.5) for m in models.build(spec).modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_avgpool_shortcut_averages_and_pads_after():
    block = models.build(resnet.spec_for(20, 1.0, 3, 10, shortcut="avgpool_pad")).blocks[3]  # 16 -> 32, stride 2
    x = torch.randn(2, 16, 8, 8)
    s = block.shortcut(x)
    assert torch.allclose(s[:, :16], torch.nn.functional.avg_pool2d(x, 2)) and not s[:, 16:].any()


@pytest.mark.parametrize("spec,target", [(vgg.spec_for(19, 1.0, 3, 10), 0.3), (resnet.spec_for(56, 1.0, 3, 10), 0.5),
                                         (vgg.spec_for(11, 0.25, 1, 10), 0.2), (preresnet.spec_for(20, 0.5, 3, 10), 0.5),
                                         (densenet.spec_for(10, 0.5, 3, 10), 0.4)])
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
