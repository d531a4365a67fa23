"""DenseNet-40 and DenseNet-BC-100 (Huang et al., CVPR 2017) with network slimming's
channel selection: sizes, groups, slimming on concatenations, the smoke run."""
import pytest
import torch
from torch import nn

from prunebench import measure, models, pipeline
from prunebench.errors import PrunebenchError
from prunebench.methods import create
from prunebench.models import densenet
from prunebench.pruning import prune, widths
from tests.cases import DATA, randomized
from tests.conftest import compose_config

BASIC = densenet.spec_for(10, 0.5, 3, 10)  # 2 layers a block, growth 6
BC = densenet.spec_for(16, 0.5, 3, 10, block="bottleneck", compression=0.5)


def params(name):
    cfg = compose_config(f"model={name}").model
    return measure.count_params(models.build(models.spec_from_config(cfg, 3, 10)))


def test_paper_sizes():
    # DenseNet-40 (k=12): 1.06M counted (Huang et al. 2017 write 1.0M); DenseNet-BC-100 (k=12): 0.8M (ibid.)
    assert params("densenet40") == pytest.approx(1.06e6, rel=0.02)
    assert round(params("densenet_bc100") / 1e6, 1) == 0.8
    assert params("densenet_bc100") == 769_162  # this count, pinned


def test_the_released_weight_level_densenet_100_is_a_basic_network_at_compression_half():
    # rethinking-network-pruning cifar/weight-level/models/cifar/densenet.py:74-80 (BasicBlock, 32 layers a block),
    # --compressionRate 2: 24 -> 408 -> 204 -> 588 -> 294 -> 678 channels; 4,068,490 params counted by hand from its
    # layer definitions (BN-ReLU-conv3x3 layers, 1x1 transitions, final BN and fc)
    assert params("densenet_c100") == 4_068_490
    model = models.build(models.spec_from_config(compose_config("model=densenet_c100").model, 3, 10))
    assert [len(getattr(model, f"dense{b}")) for b in (1, 2, 3)] == [32, 32, 32]
    assert (model.trans1.conv1.in_channels, model.trans1.conv1.out_channels, model.bn.num_features) == (408, 204, 678)


@pytest.mark.parametrize("spec", [BASIC, BC], ids=["basic", "bc"])
def test_every_batchnorm_is_a_group(spec):
    model = models.build(spec)
    groups = model.channel_groups()
    bns = {n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert {g.bn for g in groups} == bns and len(groups) == len(bns)
    n_select = sum(g.kind == "select" for g in groups)
    assert n_select == 6 + 3  # every dense layer's first BN, two transitions, the final BN
    assert len(groups) - n_select == (6 if spec["block"] == "bottleneck" else 0)


def test_transitions_compress():
    model = models.build(densenet.spec_for(100, 1.0, 3, 10, block="bottleneck", compression=0.5))
    assert model.trans1.conv1.out_channels == (24 + 16 * 12) // 2 and model.classifier.in_features == 342


def test_filter_methods_refuse_densenet40_clearly():
    model = models.build(BASIC)
    for name in ["l1_norm", "random", "fpgm", "taylor", "apoz"]:
        with pytest.raises(PrunebenchError, match="method=slimming"):
            create(compose_config(f"method={name}").method).scores(model, DATA)


def test_filter_methods_prune_densenet_bc_bottlenecks():
    model = randomized(BC)
    cfg = compose_config("method=l1_norm", "method.min_channels=1").method
    keep = create(cfg).select(model, create(cfg).scores(model, DATA), cfg)
    assert set(keep) == {f"layer{k}_conv1" for k in range(1, 7)}
    pruned = prune(model, keep)
    assert all(widths(pruned)[g] == 12 for g in keep)  # 24 -> 12
    assert pruned(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_slimming_on_concatenations_rebuilds_from_its_spec(tmp_path):
    model = randomized(BASIC)
    cfg = compose_config("method=slimming", "method.pruning_ratio=0.5", "method.selection=global",
                         "method.min_channels=1").method
    method = create(cfg)
    keep = method.select(model, method.scores(model, DATA), cfg)
    pruned = prune(model, keep).eval()
    assert sum(widths(pruned).values()) < sum(widths(model).values())
    assert pruned.classifier.in_features == len(keep["bn"])
    models.save(pruned, tmp_path)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(models.load(tmp_path).eval()(x), pruned(x))


@pytest.mark.parametrize("method", ["slimming", "magnitude"])
def test_smoke_runs_every_row(smoke_cfg, method):
    rows = pipeline.run(smoke_cfg(f"method={method}", "model=densenet40", "model.width=0.25",
                                  "strategy.scratch_b.max_factor=1"))  # one epoch a stage
    assert rows and all(r["status"] == "ok" for r in rows), rows


def test_smoke_with_a_filter_method_is_a_clear_error(smoke_cfg):
    with pytest.raises(PrunebenchError, match="densenet|DenseNet"):
        pipeline.run(smoke_cfg("method=l1_norm", "model=densenet40", "model.width=0.25"))
