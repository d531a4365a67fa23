"""DenseNet-40 and DenseNet-BC-100 (Huang et al., CVPR 2017) with network slimming's
channel selection: sizes, groups, slimming on concatenations, filters pruned through the
concatenations (groups with offsets), the smoke runs."""
import copy

import pytest
import torch
from torch import nn

from prunebench import measure, models, pipeline
from prunebench.methods import METHODS, create
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


def test_filters_are_groups_with_offsets_into_the_concatenations():
    model = models.build(BASIC)  # stem 12, growth 6, 2 layers a block, transitions 24 and 36 wide
    groups = {g.name: g for g in models.conv_groups(model)}
    assert list(groups) == ["conv1", "layer1_conv1", "layer2_conv1", "trans1_conv1", "layer3_conv1", "layer4_conv1",
                            "trans2_conv1", "layer5_conv1", "layer6_conv1"]
    stem, first, last = groups["conv1"], groups["layer1_conv1"], groups["layer6_conv1"]
    assert stem.consumers == ("dense1.0.conv1", "dense1.1.conv1", "trans1.conv1") and stem.offsets == (0, 0, 0)
    assert first.consumers == ("dense1.1.conv1", "trans1.conv1") and first.offsets == (12, 12)
    assert first.norms == ("dense1.1.bn1", "trans1.bn1") and first.bn is None
    assert last.consumers == ("classifier",) and last.norms == ("bn",) and last.offsets == (36 + 6,)
    assert groups["trans1_conv1"].consumers == ("dense2.0.conv1", "dense2.1.conv1", "trans2.conv1")
    assert models.members(first) == [("dense1.0.conv1", 0, 0), ("dense1.1.bn1", 0, 12), ("trans1.bn1", 0, 12),
                                     ("dense1.1.conv1", 1, 12), ("trans1.conv1", 1, 12)]
    # every input channel of every consumer belongs to exactly one group
    for path, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and path != "conv1":
            covered = sorted(i for g in groups.values() for k, c in enumerate(g.consumers) if c == path
                             for i in range(g.offset(k), g.offset(k) + model.get_submodule(g.conv).out_channels))
            assert covered == list(range(m.weight.shape[1])), path
    assert [g.name for g in model.channel_groups()] == [f"layer{k}_bn1" for k in (1, 2)] + ["trans1_bn1"] + [
        f"layer{k}_bn1" for k in (3, 4)] + ["trans2_bn1"] + [f"layer{k}_bn1" for k in (5, 6)] + ["bn"]  # slimming's


def silenced(model, name, removed):
    """A copy of ``model`` (float64) whose filters ``removed`` of group ``name`` output nothing: the
    filter zeroed, and at every BatchNorm that reads the channel its shift and running mean zeroed,
    so BN(0) = 0 and the ReLU passes 0: every consumer gets exactly 0 from it, borders included."""
    ref = copy.deepcopy(model).double()
    g = next(g for g in models.conv_groups(ref) if g.name == name)
    with torch.no_grad():
        ref.get_submodule(g.conv).weight[removed] = 0
        for path, offset in g.normalized():
            bn = ref.get_submodule(path)
            bn.running_mean[[offset + j for j in removed]] = 0
            bn.bias[[offset + j for j in removed]] = 0
    return ref


@pytest.mark.parametrize("spec,name,j", [(BASIC, "conv1", 0), (BASIC, "layer1_conv1", 2), (BASIC, "layer2_conv1", 5),
                                         (BASIC, "trans1_conv1", 7), (BASIC, "layer6_conv1", 3),
                                         (BC, "layer2_conv2", 1), (BC, "trans2_conv1", 4), (BC, "layer3_conv1", 0)],
                         ids=["stem", "layer1", "layer2", "trans1", "layer6", "bc_layer2", "bc_trans2",
                              "bc_bottleneck"])
def test_removing_filter_j_removes_that_input_channel_of_every_consumer(spec, name, j):
    model = randomized(spec).double()
    g = next(g for g in models.conv_groups(model) if g.name == name)
    width = model.get_submodule(g.conv).out_channels
    pruned = prune(model, {name: torch.tensor([i for i in range(width) if i != j])}).double().eval()
    state, new = model.state_dict(), pruned.state_dict()
    for m in models.members(g):  # exactly the matching slice of every member is gone
        at = m.offset + j
        for key in [k for k in state if k.startswith(m.module + ".") and state[k].dim() > m.axis
                    and k.rsplit(".", 1)[1] != "num_batches_tracked"]:
            w = state[key]
            expected = torch.cat([w.narrow(m.axis, 0, at), w.narrow(m.axis, at + 1, w.shape[m.axis] - at - 1)], m.axis)
            assert torch.equal(new[key], expected), key
    touched = {f"{m.module}." for m in models.members(g)}
    for key, w in state.items():
        if not any(key.startswith(t) for t in touched):
            assert torch.equal(new[key], w), key
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(pruned(x), silenced(model, name, [j])(x), rtol=0, atol=1e-6)
        assert (model(x) - silenced(model, name, [j])(x)).abs().max() > 1e-5  # the channel mattered


@pytest.mark.parametrize("spec", [BASIC, BC], ids=["basic", "bc"])
def test_filter_pruned_densenet_rebuilds_from_arch_json_with_equal_outputs(tmp_path, spec):
    model = randomized(spec)
    gen = torch.Generator().manual_seed(3)
    full = widths(model, "filters")
    keep = {g: torch.sort(torch.randperm(w, generator=gen)[:max(1, w // 3)]).values for g, w in full.items()}
    pruned = prune(model, keep).eval()
    assert widths(pruned, "filters") == {g: len(i) for g, i in keep.items()}
    assert all(index is None for index in pruned.spec["selections"].values())  # slimming's view stays whole
    assert measure.count_params(pruned) < measure.count_params(model) / 3
    models.save(pruned, tmp_path)
    loaded = models.load(tmp_path).eval()
    x = torch.randn(2, 3, 32, 32)
    assert loaded.spec == pruned.spec and torch.equal(loaded(x), pruned(x))
    ref = model.double()
    with torch.no_grad():
        for g in models.conv_groups(ref):
            removed = [i for i in range(full[g.name]) if i not in keep[g.name].tolist()]
            ref = silenced(ref, g.name, removed)
        assert torch.allclose(pruned.double()(x.double()), ref(x.double()), rtol=0, atol=1e-6)


FILTER_METHODS = sorted(name for name, cls in METHODS.items() if cls.kind == "structured" and cls.prunes == "filters")


def test_filter_methods_are_the_structured_methods_but_slimming():
    assert set(FILTER_METHODS) == {n for n, c in METHODS.items() if c.kind == "structured"} - {"slimming"}


@pytest.mark.parametrize("method", FILTER_METHODS)
def test_filter_methods_run_every_row_on_a_small_densenet(smoke_cfg, method):
    rows = {r["row"]: r for r in pipeline.run(smoke_cfg(f"method={method}", "model=densenet40", "model.depth=10",
                                                        "model.width=0.5"))}
    assert all(r["status"] == "ok" for r in rows.values()), rows
    assert {"unpruned", "pruned", "finetune", "scratch_e", "scratch_b", "uniform"} <= set(rows)
    pruned = models.load_spec(rows["pruned"]["stage"])
    assert all(index is None for index in pruned["selections"].values())  # filters pruned, not selections
    if method not in ("sss", "sss_sigmoid", "sss_sensitivity", "autopruner"):  # these decide in training how much
        assert rows["pruned"]["params"] < rows["unpruned"]["params"]


def test_filter_methods_prune_every_convolution_of_densenet_bc():
    model = randomized(BC)
    cfg = compose_config("method=l1_norm", "method.min_channels=1").method
    keep = create(cfg).select(model, create(cfg).scores(model, DATA), cfg)
    assert set(keep) == {"conv1", "trans1_conv1", "trans2_conv1"} | {f"layer{k}_conv{j}" for k in range(1, 7)
                                                                      for j in (1, 2)}
    pruned = prune(model, keep)
    assert all(widths(pruned)[f"layer{k}_conv1"] == 12 for k in range(1, 7))  # bottlenecks 24 -> 12
    assert pruned.spec["layer_widths"] == [3] * 6  # growth 6 -> 3
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


def test_a_layer_read_with_others_regresses_its_own_contribution():
    """Channel pruning's and ThiNet's statistics of a group whose consumers read other groups too:
    G is the group's block of the consumers' Gram matrices and g the regression of the group's
    own part of their outputs, so keeping every channel (beta = 1) reproduces it: g = G 1."""
    model = randomized(BASIC)
    cfg = compose_config("method=channel_pruning", "method.num_images=64", "method.batch_size=32",
                         "method.positions_per_image=4").method
    stats = create(cfg).contribution_stats(model, DATA)
    widths_ = widths(model, "filters")
    assert set(stats) == set(widths_)
    for name, (gram, cross) in stats.items():
        assert gram.shape == (widths_[name],) * 2
        assert torch.allclose(cross, gram.sum(1), rtol=1e-4, atol=1e-6 * float(gram.abs().max())), name
