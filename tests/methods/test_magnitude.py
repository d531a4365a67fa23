"""Magnitude weight pruning (Han et al. 2015) and the weight-level plumbing it relies on:
mask selection, non-zero parameter and FLOP counts, and the protocol's rows."""
import json
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from prunebench import measure, models, pipeline
from prunebench.methods.magnitude import MagnitudeConfig
from prunebench.errors import PrunebenchError
from prunebench.methods import create
from prunebench.pruning.masks import select_weights, uniform_masks
from prunebench.pruning.surgery import prunable_weights

ROWS = ["unpruned", "pruned", "finetune", "scratch_e", "scratch_b", "uniform", "lottery"]


def cfg(**kw):
    return OmegaConf.structured(MagnitudeConfig(name="magnitude", **kw))


class Tiny(nn.Module):
    """conv 1x1 (1 -> 2 channels, no bias) -> spatial mean -> linear 2 -> 2 (with bias)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1, bias=False)
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([5.0, -4.0]).view(2, 1, 1, 1))
            self.fc.weight.copy_(torch.tensor([[1.0, -2.0], [3.0, -0.1]]))

    def forward(self, x):
        return self.fc(self.conv(x).mean(dim=(2, 3)))


def magnitude_masks(model, **kw):
    return select_weights(create(cfg(**kw)).scores(model, None), cfg(**kw))


def test_global_selection_keeps_the_largest_weights_over_all_layers():
    masks = magnitude_masks(Tiny(), pruning_ratio=0.5, selection="global")
    # |w| = conv 5, 4 | fc 1, 2, 3, 0.1: the three smallest (0.1, 1, 2) all sit in fc
    assert masks["conv.weight"].flatten().tolist() == [True, True]
    assert masks["fc.weight"].tolist() == [[False, False], [True, False]]


def test_layer_selection_keeps_the_largest_weights_of_every_layer():
    masks = magnitude_masks(Tiny(), pruning_ratio=0.5, selection="layer")
    assert masks["conv.weight"].flatten().tolist() == [True, False]  # 5 kept, 4 removed
    assert masks["fc.weight"].tolist() == [[False, True], [True, False]]  # 2 and 3 kept


def test_skip_and_layer_ratios():
    masks = magnitude_masks(Tiny(), pruning_ratio=0.5, selection="layer", layer_ratios={"fc": 0.75})
    assert masks["conv.weight"].sum() == 1 and masks["fc.weight"].tolist() == [[False, False], [True, False]]
    masks = magnitude_masks(Tiny(), pruning_ratio=0.5, selection="global", skip=["conv"])
    assert masks["conv.weight"].all()  # skipped: whole, and out of the count
    assert masks["fc.weight"].tolist() == [[False, True], [True, False]]  # half of fc's 4: 0.1 and 1 go
    masks = magnitude_masks(Tiny(), pruning_ratio=0.5, selection="layer", skip=["fc"])
    assert masks["fc.weight"].all() and masks["conv.weight"].sum() == 1


@pytest.mark.parametrize("kw, match", [
    ({"pruning_ratio": 1.0}, "pruning_ratio"),
    ({"pruning_ratio": -0.1}, "pruning_ratio"),
    ({"selection": "layer", "layer_ratios": {"fc": 1.5}}, "layer_ratios.fc"),
    ({"selection": "layer", "layer_ratios": {"conv7": 0.5}}, "unknown layers"),
    ({"skip": ["fc.weight"]}, "unknown layers"),
    ({"selection": "global", "layer_ratios": {"fc": 0.5}}, "selection: layer"),
    ({"selection": "threshold"}, "'global' or 'layer'"),
])
def test_bad_settings_are_rejected(kw, match):
    with pytest.raises(PrunebenchError, match=match):
        magnitude_masks(Tiny(), **{"selection": "global", **kw})


def test_global_masks_of_a_real_model_keep_exactly_the_top_weights():
    spec = models.vgg.spec_for(11, 0.125, 3, 10)
    torch.manual_seed(0)
    model = models.build(spec)
    masks = magnitude_masks(model, pruning_ratio=0.7, selection="global", skip=["classifier"])
    convs = {n: w.detach().abs() for n, w in prunable_weights(model).items() if n != "classifier.weight"}
    flat = torch.cat([w.flatten() for w in convs.values()])
    n_removed = int(0.7 * flat.numel())
    threshold = flat.sort().values[n_removed - 1]  # the largest removed |w| (random floats: no ties)
    for n, w in convs.items():
        assert torch.equal(masks[n], w > threshold), n
    assert masks["classifier.weight"].all()
    assert sum(int((~m).sum()) for m in masks.values()) == n_removed


def test_non_zero_params_and_flops_on_a_hand_checked_model():
    model = Tiny()
    masks = {"conv.weight": torch.tensor([True, False]).view(2, 1, 1, 1),
             "fc.weight": torch.tensor([[False, False], [True, False]])}
    # params: conv 2 + fc 4 + bias 2 = 8; non-zero: conv 1 + fc 1 + bias 2 = 4
    assert measure.count_params(model) == 8 and measure.count_params(model, masks) == 4
    # FLOPs on a 1x4x4 image: conv 2 x (2 x 1) MACs x 16 pixels = 64, fc 2 x 2 x 2 = 8 (bias adds not counted)
    assert measure.count_flops(model, (1, 4, 4)) == 72
    assert measure.count_flops(model, (1, 4, 4), masks) == 32 + 2


@pytest.mark.parametrize("arch, layer", [("vgg", "features.0"), ("resnet", "blocks.0.conv1")])
def test_masked_flops_of_the_registry_models_drop_by_the_pruned_layers_share(arch, layer):
    spec = (models.vgg.spec_for(11, 0.25, 3, 10) if arch == "vgg" else models.resnet.spec_for(20, 0.5, 3, 10))
    model = models.build(spec)
    conv = model.get_submodule(layer)
    masks = {n: torch.ones_like(w, dtype=torch.bool) for n, w in prunable_weights(model).items()}
    masks[f"{layer}.weight"][: conv.out_channels // 2] = False  # half of this 3x3, stride-1 conv's weights
    full = measure.count_flops(model, (3, 16, 16))
    layer_flops = 2 * conv.in_channels * conv.out_channels * 9 * 16 * 16
    assert measure.count_flops(model, (3, 16, 16), masks) == full - layer_flops // 2


def test_uniform_masks_keep_the_same_fraction_of_every_layer():
    model = models.build(models.resnet.spec_for(20, 0.5, 3, 10))
    masks = uniform_masks(model, 0.3, seed=0)
    for n, w in prunable_weights(model).items():
        assert int(masks[n].sum()) == max(1, round(0.3 * w.numel())), n
    assert all(torch.equal(masks[n], m) for n, m in uniform_masks(model, 0.3, seed=0).items())
    assert not all(torch.equal(masks[n], m) for n, m in uniform_masks(model, 0.3, seed=1).items())


def load_state(row):
    return torch.load(Path(row["stage"]) / "model.pt", weights_only=True)


@pytest.mark.parametrize("model", ["vgg11", "resnet20"])
def test_smoke_run_gives_every_weight_level_row(smoke_cfg, model):
    extra = ["model.width=0.5"] if model.startswith("resnet") else []
    rows = {r["row"]: r for r in pipeline.run(smoke_cfg("method=magnitude", f"model={model}", *extra))}
    assert list(rows) == ROWS
    assert all(r["status"] == "ok" for r in rows.values()), rows
    full, pruned = rows["unpruned"], rows["pruned"]
    for name in ROWS[1:]:
        assert rows[name]["params"] < full["params"] and rows[name]["flops"] < full["flops"], name
        assert "non-zero" in rows[name]["note"], name
    assert rows["scratch_b"]["epochs"] == math.ceil(full["epochs"] * full["flops"] / pruned["flops"]) > 1
    assert rows["uniform"]["epochs"] == rows["scratch_b"]["epochs"]
    assert abs(rows["uniform"]["flops"] - pruned["flops"]) <= 0.01 * pruned["flops"]
    uniform_density = json.loads((Path(rows["uniform"]["stage"]) / "density.json").read_text())
    assert max(uniform_density.values()) - min(uniform_density.values()) < 0.01  # one density everywhere

    # the mask keeps exactly the |w| of the trained convolutions above y[int(N p)] (the authors' threshold,
    # int(N p) + 1 removed); the classifier is skipped
    mask = torch.load(Path(pruned["stage"]) / "mask.pt", weights_only=True)
    trained = load_state(full)
    convs = [n for n in mask if n != "classifier.weight"]
    flat = torch.cat([trained[n].abs().flatten() for n in convs])
    threshold = flat.sort().values[int(0.8 * flat.numel())]
    assert all(torch.equal(mask[n], trained[n].abs() > threshold) for n in convs)
    assert mask["classifier.weight"].all()
    # pruned weights are exactly zero in every model trained under the mask
    for name in ["pruned", "finetune", "scratch_e", "scratch_b", "lottery"]:
        state = load_state(rows[name])
        assert all(torch.count_nonzero(state[n][~m]) == 0 for n, m in mask.items()), name
        assert all(torch.count_nonzero(state[n][m]) > 0 for n, m in mask.items()), name
    umask = torch.load(Path(rows["uniform"]["stage"]) / "mask.pt", weights_only=True)
    state = load_state(rows["uniform"])
    assert all(torch.count_nonzero(state[n][~m]) == 0 for n, m in umask.items())
    assert pruned["params"] == full["params"] - sum(int((~m).sum()) for m in mask.values())


def test_inclusive_global_threshold_removes_int_np_plus_one_weights():
    # |w| = conv 5, 4 | fc 1, 2, 3, 0.1; N = 6, p = 0.5: int(N p) = 3
    masks = magnitude_masks(Tiny(), pruning_ratio=0.5, selection="global", global_threshold="inclusive")
    assert masks["conv.weight"].flatten().tolist() == [True, True]  # thre = y[3] = 3: 0.1, 1, 2 and 3 go
    assert masks["fc.weight"].tolist() == [[False, False], [False, False]]
    assert sum(int((~m).sum()) for m in masks.values()) == 3 + 1
    exact = magnitude_masks(Tiny(), pruning_ratio=0.5, selection="global", global_threshold="exact")
    assert sum(int((~m).sum()) for m in exact.values()) == 3


def test_the_magnitude_methods_default_removes_the_authors_count_on_a_real_model():
    from tests.conftest import compose_config
    method_cfg = compose_config("method=magnitude", "method.pruning_ratio=0.7").method
    torch.manual_seed(0)
    model = models.build(models.vgg.spec_for(11, 0.125, 3, 10))
    masks = select_weights(create(method_cfg).scores(model, None), method_cfg)
    n = sum(w.numel() for name, w in prunable_weights(model).items() if name != "classifier.weight")
    assert sum(int((~m).sum()) for m in masks.values()) == int(0.7 * n) + 1  # random floats: no ties
