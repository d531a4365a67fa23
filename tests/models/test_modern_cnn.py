"""The CIFAR ResNet-18/50 and MobileNetV2 (prunebench/models/cifar_modern.py) and torchvision's modern
CNNs, pruned through the dependency graph: depthwise groups, squeeze-excitation, reloads."""
import pytest
import torch
from torch import nn

from prunebench import measure, models, pipeline
from prunebench.models import cifar_modern


def spec(net, width=0.25, in_channels=3, classes=10):
    return {"arch": "cifar_modern", "net": net, "width": width, "in_channels": in_channels, "num_classes": classes,
            "keep": {}}


def randomized(model):
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    return model.eval()


def half_of_every_group(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {grp.name: torch.randperm(model.get_submodule(grp.conv).out_channels, generator=g)[
        :model.get_submodule(grp.conv).out_channels // 2].sort().values for grp in model.channel_groups()}


def test_mobilenet_v2_depthwise_groups_prune_and_reload_with_equal_outputs(tmp_path):
    model = randomized(models.build(spec("mobilenet_v2", in_channels=1)))
    groups = model.channel_groups()
    depthwise = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert depthwise  # every depthwise convolution rides in the group of the expansion feeding it
    in_groups = {p for g in groups for p in g.outputs}
    assert all(d in in_groups for d in depthwise)
    keep = half_of_every_group(model)
    pruned = model.pruned(keep)
    for n, m in pruned.named_modules():  # still depthwise: groups == in == out channels
        if isinstance(m, nn.Conv2d) and m.groups > 1:
            assert m.groups == m.in_channels == m.out_channels
    assert sum(p.numel() for p in pruned.parameters()) < 0.5 * sum(p.numel() for p in model.parameters())
    models.save(pruned, tmp_path)
    assert "keep" in models.load_spec(tmp_path)
    reloaded = models.load(tmp_path).eval()
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(reloaded(x), pruned(x))


def test_pruning_a_residual_stream_keeps_the_masked_models_function():
    """Cutting channels from a ResNet-18's residual stream: the pruned model computes what the
    unpruned one does with those channels zeroed in every layer that writes the stream."""
    model = randomized(models.build(spec("resnet18", width=0.125)))
    stem = model.channel_groups()[0]
    assert stem.name == "stem_0" and "net.layers.0.0.conv2.0" in stem.outputs  # the stream's writers, one group
    keep = {stem.name: torch.tensor([0, 2, 4, 6])}
    masked = randomized(models.build(spec("resnet18", width=0.125)))
    drop = [1, 3, 5, 7]
    with torch.no_grad():
        for path in (stem.conv, stem.bn) + stem.outputs:
            m = masked.get_submodule(path)
            if isinstance(m, nn.BatchNorm2d):
                m.weight[drop] = 0
                m.bias[drop] = 0
    pruned = masked.pruned(keep)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(pruned(x), masked(x), atol=1e-5)


@pytest.mark.parametrize("net, blocks", [("resnet18", 8), ("resnet50", 16), ("mobilenet_v2", 17)])
def test_cifar_nets_have_the_papers_shape(net, blocks):
    model = models.build(spec(net, width=1.0))
    kinds = (cifar_modern.BasicBlock, cifar_modern.Bottleneck, cifar_modern.InvertedResidual)
    assert sum(isinstance(m, kinds) for m in model.modules()) == blocks
    stem = model.net.stem[0] if net.startswith("resnet") else model.net.features[0][0]
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1)  # CIFAR stem: no downsampling, no max-pool
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    if net == "mobilenet_v2":
        assert model.net.classifier.in_features == 1280
        params = sum(p.numel() for p in model.parameters())
        assert 2.2e6 < params < 2.4e6  # MobileNetV2 at 10 classes: 2.24M (ImageNet's 3.5M less its 1000-way head)


def test_uniform_narrowing_of_mobilenet_v2_matches_flops():
    model = models.build(spec("mobilenet_v2", width=0.5))
    count = model.width_counter((3, 32, 32), "flops")
    full = {g.name: model.get_submodule(g.conv).out_channels for g in model.channel_groups()}
    assert abs(count(full) - measure.count_flops(model, (3, 32, 32))) <= 0.02 * count(full)
    half = {g: max(1, c // 2) for g, c in full.items()}
    narrow = models.build(model.spec_with_widths(half))
    assert abs(count(half) - measure.count_flops(narrow, (3, 32, 32))) <= 0.02 * count(half)


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "efficientnet_b0", "regnet_x_400mf", "convnext_tiny"])
def test_torchvision_modern_cnns_prune_through_the_graph(name):
    """Depthwise convolutions, squeeze-excitation (MobileNetV3, EfficientNet), grouped convolutions
    (RegNet: left whole) and ConvNeXt's LayerNorm blocks: every group cut in half, outputs finite,
    the pruned model rebuilt from its spec holds the same shapes."""
    model = models.build({"arch": "torchvision", "name": name, "num_classes": 10, "keep": {}})
    groups = model.channel_groups()
    assert groups
    keep = {g.name: torch.arange(0, model.get_submodule(g.conv).out_channels, 2) for g in groups[:6]}
    pruned = model.pruned(keep)
    rebuilt = models.build(pruned.spec)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in pruned.state_dict().items()}
    with torch.no_grad():
        assert torch.isfinite(pruned.eval()(torch.randn(1, 3, 64, 64))).all()
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())


def test_smoke_mobilenet_v2_cifar_with_taylor_every_row_ok(smoke_cfg):
    rows = {r["row"]: r for r in pipeline.run(smoke_cfg("model=mobilenet_v2_cifar", "model.width=0.25",
                                                         "method=taylor", "dataset=digits"))}
    assert list(rows) == ["unpruned", "pruned", "finetune", "scratch_e", "scratch_b", "uniform"]
    assert all(r["status"] == "ok" for r in rows.values()), rows
    assert rows["pruned"]["flops"] < rows["unpruned"]["flops"]
    assert abs(rows["uniform"]["flops"] - rows["pruned"]["flops"]) <= 0.01 * rows["pruned"]["flops"]


def test_round_to_keeps_multiples_of_8_in_every_group_of_mobilenet_v2(smoke_cfg):
    from prunebench import methods
    from prunebench.pruning import prune
    from tests.cases import DATA

    cfg = smoke_cfg("method=l1_norm", "method.pruning_ratio=0.3", "method.round_to=8").method
    method = methods.create(cfg)
    model = models.build(spec("mobilenet_v2", width=1.0))
    keep = method.select(model, method.scores(model, DATA), cfg)
    full = {g.name: model.get_submodule(g.conv).out_channels for g in model.channel_groups()}
    assert any(len(k) < full[g] for g, k in keep.items())
    assert all(len(k) % 8 == 0 or len(k) == full[g] for g, k in keep.items())
    pruned = prune(model, keep)
    assert all(m.out_channels % 8 == 0 for m in pruned.modules() if isinstance(m, nn.Conv2d))
