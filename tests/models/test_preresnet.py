"""PreResNet (He et al., ECCV 2016) with network slimming's channel selection: its
size, its groups (every BatchNorm prunable), every method on it, the smoke run."""
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from prunebench import measure, models, pipeline
from prunebench.methods.channel_pruning import ChannelPruningConfig
from prunebench.methods import create
from prunebench.models import preresnet
from prunebench.pruning import prune, widths
from prunebench.pruning.reconstruct import layer_weight, set_layer_weight
from tests.cases import DATA, SAMPLING, check_reconstruction_restores, randomized
from tests.conftest import compose_config

BASIC = preresnet.spec_for(20, 0.5, 3, 10)  # 9 basic blocks, stages 8/16/32
BOTTLENECK = preresnet.spec_for(29, 0.5, 3, 10, block="bottleneck")  # 9 bottlenecks, residual 32/64/128


def params(name, **kw):
    cfg = compose_config(f"model={name}", *[f"model.{k}={v}" for k, v in kw.items()]).model
    return measure.count_params(models.build(models.spec_from_config(cfg, 3, 10)))


def test_paper_sizes():
    # network slimming (Liu et al. 2017, Table 1): PreResNet-164 on CIFAR-10 1.70M parameters;
    # PreResNet-56 has ResNet-56's convolutions (0.85M, Li et al. 2017) plus two 1x1 shortcut convolutions
    assert params("preresnet164") == pytest.approx(1.70e6, rel=0.02)
    assert params("preresnet56") == pytest.approx(0.85e6, rel=0.02)
    assert params("preresnet110") == pytest.approx(1.73e6, rel=0.02)  # ResNet-110's 1.7M (He et al. 2016)


@pytest.mark.parametrize("spec", [BASIC, BOTTLENECK], ids=["basic", "bottleneck"])
def test_every_batchnorm_is_a_group_and_filter_groups_are_the_inner_convolutions(spec):
    model = models.build(spec)
    groups = model.channel_groups()
    bns = {n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert {g.bn for g in groups} == bns and len(groups) == len(bns)  # slimming prunes every BatchNorm
    convs = {g.conv for g in models.conv_groups(model)}
    inner = 1 if spec["block"] == "basic" else 2
    assert convs == {f"blocks.{k}.conv{j}" for k in range(9) for j in range(1, inner + 1)}
    selects = [g for g in groups if g.kind == "select"]
    assert [g.name for g in selects] == [f"block{k}_bn1" for k in range(1, 10)] + ["bn"]


def test_bn_init_is_the_option():
    model = models.build(preresnet.spec_for(20, 0.5, 3, 10, bn_init=0.5))
    assert all(torch.all(m.weight == 0.5) for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_the_selection_is_architecture_scratch_reads_the_same_channels(tmp_path):
    model = randomized(BOTTLENECK)
    keep = {"block4_bn1": torch.tensor([1, 5, 30]), "bn": torch.arange(0, 128, 2), "block2_conv1": torch.arange(3)}
    pruned = prune(model, keep).eval()
    assert pruned.spec["selections"]["block4_bn1"] == [1, 5, 30]
    assert pruned.blocks[3].conv1.in_channels == 3 and pruned.classifier.in_features == 64
    fresh = models.build(pruned.spec)  # what scratch_e / scratch_b train
    assert fresh.blocks[3].select.index.tolist() == [1, 5, 30]
    twice = prune(pruned, {"block4_bn1": torch.tensor([0, 2])})  # positions within the current selection
    assert twice.spec["selections"]["block4_bn1"] == [1, 30]
    models.save(pruned, tmp_path)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(models.load(tmp_path).eval()(x), pruned(x))


STRUCTURED = ["l1_norm", "random", "fpgm", "thinet", "channel_pruning", "apoz", "taylor", "sss", "autopruner", "sfp"]


@pytest.mark.parametrize("spec", [BASIC, BOTTLENECK], ids=["basic", "bottleneck"])
@pytest.mark.parametrize("name", STRUCTURED)
def test_every_structured_method_prunes_the_inner_convolutions(name, spec):
    cfg = compose_config(f"method={name}", "method.pruning_ratio=0.5", "method.min_channels=1",
                         "method.selection=layer").method
    if "num_images" in cfg:
        cfg.num_images, cfg.batch_size = 64, 64
    if name == "autopruner":
        cfg.sparse_epochs = 1
    if name == "apoz":
        cfg.criterion = "ratio"
    if name == "sfp":  # the rule that removes filters (scope: all keeps the full network, masked)
        cfg.scope = "groups"
    method = create(cfg)
    model = randomized(spec)
    method.attach(model, DATA.input_shape)
    if name == "sfp":
        method.soft_prune(model)
    scores = method.scores(model, DATA)
    method.detach(model)
    assert set(scores) == {g.name for g in models.conv_groups(model)}
    keep = method.select(model, scores, cfg)
    pruned = prune(model, keep).eval()
    method.reconstruct(model, pruned, keep, DATA)
    before, after = widths(model), widths(pruned)
    for g in models.conv_groups(model):
        assert after[g.name] == len(keep[g.name]) <= before[g.name]
        if name not in ("sss", "autopruner"):  # threshold methods keep all after no training
            assert after[g.name] == before[g.name] // 2
    assert all(after[g.name] == before[g.name] for g in model.channel_groups() if g.kind == "select")
    assert pruned(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_channel_pruning_reconstructs_the_residual_sum_exactly():
    """Nothing pruned, every consumer overwritten with noise: the refit (the last convolution of a
    block reconstructing the block's output, with no BatchNorm after it) restores the function."""
    model = randomized(BOTTLENECK)
    cfg = OmegaConf.structured(ChannelPruningConfig(name="channel_pruning", min_channels=1, pruning_ratio=0.0,
                                                    **SAMPLING))
    method = create(cfg)
    keep = method.select(model, method.scores(model, DATA), cfg)
    pruned = prune(model, keep).eval()
    g = torch.Generator().manual_seed(1)
    for group in models.conv_groups(pruned):
        for c in group.consumers:
            w = layer_weight(pruned.get_submodule(c))
            set_layer_weight(pruned.get_submodule(c), w + 0.5 * w.std() * torch.randn(w.shape, generator=g))
    check_reconstruction_restores(method, model, pruned, keep)


def test_slimming_prunes_selections_by_their_batchnorm_scales():
    model = models.build(BASIC)
    with torch.no_grad():
        model.blocks[2].bn1.weight.copy_(torch.arange(8.0))
    method = create(compose_config("method=slimming").method)
    scores = method.scores(model, DATA)
    assert torch.equal(scores["block3_bn1"], torch.arange(8.0))
    pruned = prune(model, {"block3_bn1": torch.tensor([4, 6])})
    assert models.bn_weight(pruned, pruned.channel_groups()[4]).tolist() == [4.0, 6.0]


@pytest.mark.parametrize("model", ["preresnet56", "preresnet164"])
@pytest.mark.parametrize("method", ["slimming", "l1_norm", "magnitude"])
def test_smoke_runs_every_row(smoke_cfg, method, model):
    width = 0.5 if model == "preresnet56" else 0.25
    # scratch_b and uniform train one epoch too (the FLOPs ratio would make it up to 20 on the smoke data)
    rows = pipeline.run(smoke_cfg(f"method={method}", f"model={model}", f"model.width={width}",
                                  "strategy.scratch_b.max_factor=1"))
    assert rows and all(r["status"] == "ok" for r in rows), rows
    by = {r["row"]: r for r in rows}
    assert by["pruned"]["params"] < by["unpruned"]["params"]
