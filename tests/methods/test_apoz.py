import json
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from prunebench import pipeline
from prunebench.methods.apoz import APoZConfig
from prunebench.data import ImageData
from prunebench.errors import PrunebenchError
from prunebench.methods import create
from prunebench.models import build, resnet, vgg


def method_cfg(**kw):
    return OmegaConf.structured(APoZConfig(name="apoz", **kw))


def images(n=40, size=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen)
    y = torch.randint(0, 10, (n,), generator=gen)
    return ImageData(x, y, x[:8], y[:8], mean=[0.5] * 3, std=[0.25] * 3, num_classes=10)


def kill(bn, channel):
    """BN output -1 everywhere on ``channel`` (in eval mode): zero after the ReLU, on every input."""
    with torch.no_grad():
        bn.weight[channel] = 0.0
        bn.bias[channel] = -1.0


def by_row(rows):
    return {r["row"]: r for r in rows}


@pytest.mark.parametrize("arch", ["vgg", "resnet"])
def test_apoz_drops_the_channel_that_is_always_zero(arch):
    torch.manual_seed(0)
    if arch == "vgg":
        model, group, bn = build(vgg.spec_for(11, 0.125, 3, 10)), "conv1", "features.1"
    else:
        model, group, bn = build(resnet.spec_for(20, 0.5, 3, 10)), "block2", "blocks.1.bn1"
    kill(model.get_submodule(bn), 3)
    method = create(method_cfg(criterion="ratio", pruning_ratio=0.125, min_channels=1, num_images=1000,
                               batch_size=16))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    apoz = method.apoz(model, images())
    assert apoz[group][3] == 1.0
    assert (apoz[group][torch.arange(8) != 3] < 0.95).all()
    keep = method.select(model, method.scores(model, images()), method.cfg)
    assert keep[group].tolist() == [0, 1, 2, 4, 5, 6, 7]
    # the std criterion (paper, k = 1) singles out the same dead channel
    std = create(method_cfg(criterion="std", min_channels=1, num_images=1000, batch_size=16))
    assert 3 not in std.select(model, std.scores(model, images()), std.cfg)[group].tolist()
    # the model is left as it was: training mode, weights and statistics, no hooks
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(m._forward_hooks for m in model.modules())


def test_apoz_is_the_fraction_of_zero_relu_outputs_over_all_images_and_positions():
    torch.manual_seed(1)
    model = build(vgg.spec_for(11, 0.125, 3, 10)).eval()
    data = images(n=37)  # batches of 16, 16 and 5
    apoz = create(method_cfg(num_images=1000, batch_size=16)).apoz(model, data)
    with torch.no_grad():
        out = torch.relu(model.features[:2](data.normalize(data.train_x)))  # conv1 -> BN1 -> ReLU
    expected = (out == 0).float().mean(dim=(0, 2, 3))
    assert torch.allclose(apoz["conv1"], expected, atol=1e-6)
    # num_images limits what is seen
    fewer = create(method_cfg(num_images=5, batch_size=16)).apoz(model, data)
    assert not torch.allclose(fewer["conv1"], expected, atol=1e-6)


def test_std_criterion_removes_exactly_the_outliers():
    apoz = {
        # mean 0.615, population std 0.1996: the threshold 0.815 leaves out 0.95 and 0.97
        "conv1": torch.tensor([0.50, 0.52, 0.48, 0.50, 0.51, 0.49, 0.95, 0.97]),
        "conv2": torch.full((6,), 0.3),  # no spread: nothing stands out
        # 0.9 and 0.95 stand out, but min_channels = 5 keeps the lower of them
        "conv3": torch.tensor([0.1, 0.1, 0.1, 0.1, 0.9, 0.95]),
        "conv4": torch.tensor([0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.99]),  # skipped
    }
    scores = {k: 1 - v for k, v in apoz.items()}
    method = create(method_cfg(criterion="std", std_k=1.0, min_channels=5, skip=["conv4"]))
    keep = method.select(None, scores, method.cfg)
    assert keep["conv1"].tolist() == [0, 1, 2, 3, 4, 5]
    assert keep["conv2"].tolist() == list(range(6))
    assert keep["conv3"].tolist() == [0, 1, 2, 3, 4]
    assert keep["conv4"].tolist() == list(range(8))
    # two standard deviations: 0.615 + 0.399 > 0.97, nothing goes
    wide = create(method_cfg(criterion="std", std_k=2.0, min_channels=1))
    assert wide.select(None, scores, wide.cfg)["conv1"].tolist() == list(range(8))
    # the ratio criterion ignores the spread and removes pruning_ratio of every layer
    ratio = create(method_cfg(criterion="ratio", pruning_ratio=0.5, min_channels=1))
    assert ratio.select(None, scores, ratio.cfg)["conv2"].numel() == 3


def test_unknown_criterion_is_an_error():
    with pytest.raises(PrunebenchError, match="criterion"):
        create(method_cfg(criterion="mean"))


@pytest.mark.parametrize("model", ["vgg11", "resnet20"])
def test_smoke_run_through_the_pipeline(smoke_cfg, model):
    extra = ["model.width=0.5"] if model.startswith("resnet") else []
    rows = by_row(pipeline.run(smoke_cfg("method=apoz", f"model={model}", *extra)))
    assert list(rows) == ["unpruned", "pruned", "finetune", "scratch_e", "scratch_b", "uniform"]
    assert all(r["status"] == "ok" for r in rows.values()), rows
    assert rows["pruned"]["flops"] < rows["unpruned"]["flops"]


def test_iterated_trimming_retrains_between_steps(smoke_cfg):
    rows = by_row(pipeline.run(smoke_cfg("method=apoz", "method.criterion=ratio", "method.iterations=2",
                                         "method.iteration_epochs=1", "strategies=[finetune]")))
    assert all(r["status"] == "ok" for r in rows.values()), rows
    assert rows["pruned"]["epochs"] == 1  # one epoch of fine-tuning between the two trims
    # each of the two steps keeps floor(sqrt(0.5) x what is left), at least min_channels = 4
    full = [w for w in vgg.spec_for(11, 0.125, 3, 10)["widths"] if w != "M"]
    expected = {}
    for k, w in enumerate(full):
        for _ in range(2):
            w = max(math.floor(w * 0.5 ** 0.5 + 1e-9), min(4, w))
        expected[f"conv{k + 1}"] = w
    assert json.loads((Path(rows["pruned"]["stage"]) / "widths.json").read_text()) == expected
