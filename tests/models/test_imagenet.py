"""ImageNet models (torchvision's VGG / ResNet from widths), image trees through the
pipeline, and any torchvision model pruned through torch-pruning's graph."""
from pathlib import Path

import pytest
import torch
import torchvision

from prunebench import models, pipeline
from prunebench.measure import count_flops, count_params
from prunebench.methods.sss import SSS
from prunebench.pruning import prune, uniform_spec, widths
from tests.imagetree import write_tree


@pytest.mark.parametrize("name,spec", [
    ("resnet50", {"arch": "imagenet_resnet", **{k: v for k, v in
                  models.imagenet_resnet.spec_for(50, 1.0, 3, 1000).items() if k != "arch"}}),
    ("vgg16_bn", models.imagenet_vgg.spec_for(16, 1.0, 3, 1000)),
])
def test_torchvision_state_dicts_map_onto_ours(name, spec):
    torch.manual_seed(0)
    theirs = torchvision.models.get_model(name, weights=None).eval()
    ours = models.build(spec).eval()
    assert ours.torchvision_name() == name
    ours.load_torchvision_state_dict(theirs.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs(x), atol=1e-4)


def test_resnet50_groups_prune_and_rebuild_from_the_spec():
    model = models.build(models.imagenet_resnet.spec_for(50, 0.125, 3, 10)).eval()
    groups = model.channel_groups()
    assert len(groups) == 32 and groups[1].name == "layer1_0_conv2" and groups[1].consumers == ("layer1.0.conv3",)
    keep = {g.name: torch.arange(0, model.get_submodule(g.conv).out_channels, 2) for g in groups}
    keep["layer3_1_conv1"] = keep["layer3_1_conv2"] = torch.zeros(0, dtype=torch.long)  # a whole block goes
    small = prune(model, keep).eval()
    assert small.layer3[1].removed and widths(small)["layer1_0_conv1"] == 4
    again = models.build(small.spec)
    again.load_state_dict(small.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(again.eval()(x), small(x))
    # SSS at block level reads the blocks the model lists, not its arch name
    assert [b.name for b in model.residual_blocks()][:2] == ["layer1_0", "layer1_1"]
    from omegaconf import OmegaConf
    from prunebench.methods.sss import SSSConfig
    sizes, targets = SSS(OmegaConf.structured(SSSConfig(name="sss", level="block"))).structures(model)
    assert sizes["layer4_2"] == 1 and targets["layer4_2"] == [("layer4.2.bn3", None)]  # the whole BN, one factor


def test_image_tree_through_every_row_with_resnet50(smoke_cfg, tmp_path):
    write_tree(tmp_path / "tree", size=20)
    rows = pipeline.run(smoke_cfg("dataset=imagefolder", f"dataset.root={tmp_path / 'tree'}", "dataset.image_size=32",
                                  "dataset.workers=0", "model=resnet50", "model.width=0.0625",
                                  "strategies=[finetune,scratch_e,scratch_b,uniform]"))
    assert [r["row"] for r in rows] == ["unpruned", "sparse", "pruned", "finetune", "scratch_e", "scratch_b", "uniform"]
    assert all(r["status"] == "ok" for r in rows), rows


def test_torchvision_model_pruned_by_l1_norm_reloads_in_one_call(smoke_cfg):
    rows = {r["row"]: r for r in pipeline.run(smoke_cfg(
        "model=torchvision", "model.name=mobilenet_v2", "model.width=1.0", "method=l1_norm", "dataset.image_size=32",
        "strategies=[finetune,scratch_e,scratch_b,uniform]"))}
    assert all(r["status"] == "ok" for r in rows.values()), rows
    assert rows["pruned"]["flops"] < rows["unpruned"]["flops"]
    assert abs(rows["uniform"]["flops"] - rows["pruned"]["flops"]) <= 0.01 * rows["pruned"]["flops"]
    folder = Path(rows["pruned"]["stage"])
    spec = models.load_spec(folder)
    assert spec["arch"] == "torchvision" and spec["keep"] and spec["num_classes"] == 10
    model = models.load(folder).eval()
    saved = torch.load(folder / "model.pt", weights_only=True)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in saved.items()}
    x = torch.randn(2, 3, 32, 32)
    twin = models.build(spec)
    twin.load_state_dict(saved)
    with torch.no_grad():
        assert torch.equal(model(x), twin.eval()(x))


def test_torchvision_uniform_keeps_the_first_channels_and_counts_exactly():
    model = models.build({"arch": "torchvision", "name": "resnet18", "num_classes": 4, "keep": {}})
    target = count_flops(model, (3, 32, 32)) // 3
    spec, factor, achieved, _ = uniform_spec(model, target, (3, 32, 32))
    assert all(idx == list(range(len(idx))) for idx in spec["keep"].values())
    narrow = models.build(spec)
    assert count_flops(narrow, (3, 32, 32)) == achieved and abs(achieved - target) <= 0.01 * target
    assert models.torchvision_models.TorchvisionModel.width_counter(model, (3, 32, 32), "params")(widths(narrow)) == \
        count_params(narrow)


@pytest.mark.parametrize("spec", [models.imagenet_resnet.spec_for(50, 0.125, 3, 10),
                                  models.imagenet_vgg.spec_for(11, 0.125, 3, 10, batch_norm=False)])
def test_imagenet_models_count_narrowed_widths_exactly(spec):
    model = models.build(spec)
    w = {g: max(1, c // 3) for g, c in widths(model).items()}
    narrow = models.build(model.spec_with_widths(w))
    assert model.width_counter((3, 32, 32))(w) == count_flops(narrow, (3, 32, 32))
    assert model.width_counter((3, 32, 32), "params")(w) == count_params(narrow)
    if "layer2_1_conv1" in w:  # a removed block: its convolutions' FLOPs go with it
        w["layer2_1_conv1"] = w["layer2_1_conv2"] = 0
        assert model.width_counter((3, 32, 32))(w) == count_flops(models.build(model.spec_with_widths(w)), (3, 32, 32))


def test_thinet_vgg_gap_is_cut_under_the_fc_head_then_takes_the_gap_head(smoke_cfg):
    cfg = smoke_cfg("experiment=rethinking/thinet_vgg16_gap_imagenet", "dataset=synthetic", "dataset.image_size=32",
                    "schedule=smoke", "device=cpu", "model.pretrained=false", "model.width=0.0625",
                    "method.num_images=32", "strategy.finetune.epochs=1", "measure.latency_repeats=2",
                    "strategies=[finetune,scratch_e,scratch_b,uniform]")
    rows = {r["row"]: r for r in pipeline.run(cfg)}
    assert all(r["status"] == "ok" for r in rows.values()), rows
    spec = models.load_spec(Path(rows["pruned"]["stage"]))
    assert spec["head"] == "gap" and spec["widths"][-1] != "M" and "pruned_head" not in spec
    convs = [w for w in spec["widths"] if w != "M"]
    assert convs[2:4] == [4, 4] and convs[10:] == [32, 32, 32]  # 128 x 0.0625 halved; the last three unpruned
    assert "untrained" in rows["pruned"]["note"] and "ThiNet's released" in rows["finetune"]["note"]
    for row in ("finetune", "scratch_e", "scratch_b"):
        assert models.load_spec(Path(rows[row]["stage"])) == spec, row
    assert models.load_spec(Path(rows["uniform"]["stage"]))["head"] == "gap"


def test_pruned_form_keeps_the_cut_convolutions_and_starts_the_new_head_fresh():
    spec = models.imagenet_vgg.spec_for(16, 0.0625, 3, 10, batch_norm=False, pruned_head="gap")
    model = models.build(spec)
    keep = {g.name: torch.arange(0, model.get_submodule(g.conv).out_channels, 2) for g in model.channel_groups()}
    cut = prune(model, keep)
    assert cut.spec["head"] == "fc" and cut.spec["pruned_head"] == "gap"  # cut under the fc head
    final = models.pruned_form(cut, models.build)
    assert final.spec == model.spec_with_widths(widths(cut)) and final.spec["head"] == "gap"
    for name, tensor in final.state_dict().items():
        if name.startswith("features."):
            assert torch.equal(tensor, cut.state_dict()[name]), name
    assert final.classifier.weight.shape == (10, 16)  # 512 x 0.0625, half kept
    plain = models.build(models.imagenet_vgg.spec_for(16, 0.0625, 3, 10, batch_norm=False))
    assert models.pruned_form(plain, models.build) is plain


def slimming_vgg11(width=0.0625):
    """Network slimming's VGG-11 (imagenet/network-slimming/vgg.py), narrowed for a CPU."""
    torch.manual_seed(0)
    return models.build(models.imagenet_vgg.spec_for(11, width, 3, 10, head="fc_bn", bn_init=0.5))


def test_network_slimmings_vgg11_is_the_authors_network():
    from prunebench.measure import spec_params
    from tests.conftest import compose_config

    cfg = compose_config("experiment=rethinking/slimming_vgg11_imagenet")
    spec = models.spec_from_config(cfg.model, 3, 1000)
    # torchvision's vgg11_bn (132,868,840) with a BatchNorm1d of 4,096 units after each hidden layer
    # (authors' vgg.py:20-28): counted by hand from the authors' layers, 132,885,224
    assert spec_params(spec) == 132_885_224 == 132_868_840 + 2 * 2 * 4096
    with torch.device("meta"):
        full = models.build(spec)
    units = {g.name: models.group_width(full, g) for g in full.channel_groups()}
    assert units["fc1"] == units["fc2"] == 4096 and sum(units.values()) == 10_944  # 2,752 channels + 8,192 units
    model = slimming_vgg11()
    assert not any(isinstance(m, torch.nn.Dropout) for m in model.modules())
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in norms) == 2
    assert all(torch.all(m.weight == 0.5) and torch.all(m.bias == 0) for m in norms)  # vgg.py:44-52


def test_the_fc_bn_head_is_linear_batchnorm1d_relu_twice():
    model = slimming_vgg11().train()
    x = torch.randn(4, 3, 32, 32)
    head = model.classifier
    with torch.no_grad():
        feats = model.avgpool(model.features(x)).flatten(1)  # 7x7 map, flattened as the authors' x.view
        h = feats
        for conv, bn in ((head[0], head[1]), (head[3], head[4])):
            h = torch.nn.functional.linear(h, conv.weight.flatten(1), conv.bias)
            h = torch.relu(torch.nn.functional.batch_norm(h, None, None, bn.weight, bn.bias, True))
        expected = torch.nn.functional.linear(h, head[6].weight.flatten(1), head[6].bias)
        assert torch.allclose(model(x), expected, atol=1e-5)


def test_slimming_ranks_the_heads_batchnorm1d_units_and_the_pruned_head_rebuilds(tmp_path):
    from prunebench.methods import create
    from tests.conftest import compose_config

    cfg = compose_config("method=slimming", "method.pruning_ratio=0.5", "method.min_channels=1").method
    slimming = create(cfg)
    model = slimming_vgg11().eval()
    groups = {g.name: g for g in model.channel_groups()}
    with torch.no_grad():  # every conv channel above every head unit, the head's units all distinct
        for name, g in groups.items():
            bn = model.get_submodule(g.bn)
            bn.weight.copy_(torch.linspace(1.0, 2.0, bn.num_features) if name.startswith("conv") else
                            torch.linspace(0.001, 0.01, bn.num_features) * (1 if name == "fc1" else 2))
    scores = slimming.scores(model, None)
    assert set(scores) == set(groups) and scores["fc1"].numel() == 256
    keep = slimming.select(model, scores, cfg)
    total = sum(s.numel() for s in scores.values())
    removed = {name: scores[name].numel() - len(idx) for name, idx in keep.items()}
    assert all(removed[f"conv{k}"] == 0 for k in range(1, 9))
    assert removed["fc1"] + removed["fc2"] >= int(total * 0.5) and removed["fc1"] > removed["fc2"] > 0
    pruned = prune(model, keep).eval()
    assert pruned.spec["hidden"] == [256 - removed["fc1"], 256 - removed["fc2"]]
    assert isinstance(pruned.classifier[1], torch.nn.BatchNorm1d)
    models.save(pruned, tmp_path)
    again = models.load(tmp_path).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(again(x), pruned(x))
    w = {**widths(model), "fc1": 100, "fc2": 50}  # the uniform baseline's count of a narrower head is exact
    assert model.width_counter((3, 32, 32), "params")(w) == count_params(models.build(model.spec_with_widths(w)))


def test_slimmings_l1_penalty_reaches_the_heads_batchnorm1d():
    from prunebench.methods import create
    from tests.conftest import compose_config

    slimming = create(compose_config("method=slimming", "method.sparsity=0.001").method)
    model = slimming_vgg11()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    slimming.regularize(model)
    for bn in (model.classifier[1], model.classifier[4], model.features[1]):
        assert torch.allclose(bn.weight.grad, 0.001 * torch.sign(bn.weight.detach()))
