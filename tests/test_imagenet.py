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
    from prunebench.config import SSSConfig
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
