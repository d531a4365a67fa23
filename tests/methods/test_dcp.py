import json
import os

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from prunebench import pipeline
from prunebench.methods.dcp import DCPConfig
from prunebench.data import ImageData
from prunebench.methods import create
from prunebench.methods.dcp import ATTR, segment_ends
from prunebench.pruning import prune
from prunebench.models import build, preresnet, resnet, vgg
from prunebench.models.groups import ChannelGroup
from tests.cases import DATA

SHAPE = (3, 16, 16)


def method(**kw):
    kw = {"num_images": 64, "batch_size": 32, **kw}
    return create(OmegaConf.structured(DCPConfig(name="dcp", **kw)))


def labelled_images(n=64, size=8):
    """Red is full for class 0 and empty for class 1; green is full everywhere; blue is noise."""
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 2
    x = torch.zeros(n, 3, size, size, dtype=torch.uint8)
    x[:, 0] = (255 * (y == 0)).to(torch.uint8)[:, None, None]
    x[:, 1] = 255
    x[:, 2] = torch.randint(0, 256, (n, size, size), generator=gen, dtype=torch.uint8)
    return ImageData(x, y, x[:8], y[:8], mean=[0.5] * 3, std=[0.5] * 3, num_classes=2)


class Planted(nn.Module):
    """1x1 conv (4 channels) -> BN (identity) -> ReLU -> average -> linear. Channel 0 reads red: it
    tells the classes apart, and the classifier reads it weakly. Channel 1 reads green with a large
    filter: a large activation, read equally by both logits, so useless for the decision but the
    largest part of the classifier's output. Channels 2 and 3 read the noise, faintly. The logits
    are small (a model early in training), so the cross-entropy's gradient is not drowned by the
    reconstruction error's."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, 0] = 1.0
            self.conv.weight[1, 1] = 3.0
            self.conv.weight[2, 2] = 0.3
            self.conv.weight[3, 2] = -0.3
            self.fc.weight.copy_(0.05 * torch.tensor([[0.5, 0.3, 0.1, 0.1], [-0.5, 0.3, -0.1, 0.1]]))
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(F.relu(self.bn(self.conv(x))).mean(dim=(2, 3)))

    def channel_groups(self):
        return [ChannelGroup("conv1", "conv", "bn", ("fc",))]


@pytest.mark.parametrize("discrimination,kept", [(1.0, 0), (0.0, 1)])
def test_dcp_prefers_the_discriminative_channel_over_a_high_norm_useless_one(discrimination, kept):
    model = Planted().eval()
    m = method(pruning_ratio=0.75, min_channels=1, num_stages=0, discrimination_weight=discrimination)
    m.attach(model, (3, 8, 8))
    scores = m.scores(model, labelled_images())
    keep = m.select(model, scores, m.cfg)
    # reconstruction alone keeps the channel that carries most of the classifier's output (and the largest
    # filter, which an L1-norm criterion would keep too); with the discrimination loss DCP keeps the one
    # that separates the classes
    assert keep["conv1"].tolist() == [kept]
    assert model.conv.weight[1].abs().sum() > model.conv.weight[0].abs().sum()


def test_greedy_order_is_the_score_order_and_layer_selection_keeps_exactly_the_chosen():
    torch.manual_seed(0)
    model = build(vgg.spec_for(11, 0.125, 3, 10))
    m = method(pruning_ratio=0.5, min_channels=1, num_stages=2)
    m.attach(model, SHAPE)
    scores = m.scores(model, DATA)
    keep = m.select(model, scores, m.cfg)
    for g, s in scores.items():
        n = s.numel()
        assert len(keep[g]) == n // 2
        assert (s[keep[g]] > 1).all() and (s[[i for i in range(n) if i not in keep[g].tolist()]] < 1).all()
    assert getattr(model, ATTR).features == {}


def test_auxiliary_classifiers_sit_at_the_authors_pivots_and_train_with_the_labels():
    # the authors' cal_pivot (dcp/utils/others.py:16-28): PreResNet-56's 27 blocks, 3 losses -> after blocks 7, 14, 21
    assert segment_ends(27, 3) == [6, 13, 20]
    assert segment_ends(8, 3) == [2, 5, 6] and segment_ends(9, 3) == [2, 5, 7] and segment_ends(1, 3) == []
    torch.manual_seed(0)
    model = build(resnet.spec_for(20, 0.5, 3, 10))
    m = method(num_stages=3)
    m.attach(model, SHAPE)
    heads = getattr(model, ATTR)
    assert heads.points == {"block3": "blocks.2", "block6": "blocks.5", "block8": "blocks.7"}
    assert [heads.heads[n].fc.in_features for n in heads.points] == [8, 16, 32]  # each block's output width
    other = build(resnet.spec_for(20, 0.5, 3, 10))
    m.attach(other, SHAPE)
    a, b = heads.state_dict(), getattr(other, ATTR).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # deterministic
    x, y = torch.randn(8, *SHAPE), torch.randint(0, 10, (8,))
    model.train()
    m.on_batch(model, x, y)
    model(x)
    feats = dict(heads.features)
    p = m.penalty(model)
    assert p.item() == pytest.approx(sum(F.cross_entropy(heads.heads[n](f), y).item() for n, f in feats.items()))
    w0 = heads.heads["block3"].fc.weight.detach().clone()
    p.backward()
    torch.optim.SGD(heads.parameters(), lr=0.1).step()
    assert not torch.equal(heads.heads["block3"].fc.weight.detach(), w0)
    assert m.penalty(model) is None  # used once
    m.detach(model)
    assert not hasattr(model, ATTR) and set(model.state_dict()) == set(other.state_dict()) - {
        k for k in other.state_dict() if k.startswith(ATTR)}


def test_on_preresnet56_the_classifiers_follow_blocks_7_14_21_and_conv2_inputs_are_chosen():
    """The authors' CIFAR model (SCUT-AILab/DCP dcp/models/preresnet.py): auxiliary classifiers after
    blocks 7, 14 and 21 of 27 on each block's output (its residual width), and the channels chosen
    are each block's conv2 input channels, between conv1 and conv2; the residual width stays."""
    torch.manual_seed(0)
    model = build(preresnet.spec_for(56, 0.25, 3, 10)).eval()  # stages 4/8/16
    m = method(num_stages=3, pruning_ratio=0.5, min_channels=1, num_images=32, batch_size=32)
    m.attach(model, SHAPE)
    heads = getattr(model, ATTR)
    assert heads.points == {"block7_conv1": "blocks.6", "block14_conv1": "blocks.13", "block21_conv1": "blocks.20"}
    assert [heads.heads[n].fc.in_features for n in heads.points] == [4, 8, 16]
    scores = m.scores(model, DATA)
    assert set(scores) == {f"block{k}_conv1" for k in range(1, 28)}
    keep = m.select(model, scores, m.cfg)
    m.detach(model)
    pruned = prune(model, keep)
    for k, (old, new) in enumerate(zip(model.blocks, pruned.blocks)):
        assert new.conv2.in_channels == new.bn2.num_features == new.conv1.out_channels == old.conv2.in_channels // 2
        assert new.conv2.out_channels == old.conv2.out_channels and new.bn1.num_features == old.bn1.num_features


@pytest.mark.parametrize("model,extra", [
    ("vgg11", []),
    ("resnet20", ["model.width=0.5"]),
    ("preresnet56", ["model.width=0.25"]),  # the authors' own CIFAR model
])
def test_smoke_runs_every_row(smoke_cfg, model, extra):
    rows = {r["row"]: r for r in pipeline.run(smoke_cfg("method=dcp", f"model={model}", *extra))}
    assert list(rows) == ["unpruned", "sparse", "pruned", "finetune", "scratch_e", "scratch_b", "uniform"]
    assert all(r["status"] == "ok" for r in rows.values()), rows
    assert rows["pruned"]["flops"] < rows["unpruned"]["flops"]
    settings = json.load(open(os.path.join(rows["sparse"]["stage"], "settings.json")))
    assert settings["sparse"]["sparse_init"] == "unpruned"  # the auxiliary losses fine-tune the trained model
