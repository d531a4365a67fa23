import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from prunebench import pipeline
from prunebench.methods.taylor import TaylorConfig
from prunebench.data import ImageData
from prunebench.errors import PrunebenchError
from prunebench.methods import create
from prunebench.models import build, resnet, vgg
from prunebench.models.groups import ChannelGroup


def method_cfg(**kw):
    return OmegaConf.structured(TaylorConfig(name="taylor", **kw))


def images(n=40, size=8, classes=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen)
    y = torch.randint(0, classes, (n,), generator=gen)
    return ImageData(x, y, x[:8], y[:8], mean=[0.5] * 3, std=[0.25] * 3, num_classes=classes)


def by_row(rows):
    return {r["row"]: r for r in rows}


class Planted(nn.Module):
    """conv(4 filters, all the same) -> BN -> ReLU -> average -> linear. The classifier reads
    channel 0 with weight 10, channel 1 with weight 1, channel 2 not at all; channel 3 is read
    like channel 0 but its BN gamma and beta are 0, so it always outputs 0."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(1, 3, 3, 3).expand(4, -1, -1, -1))
            self.bn.bias.fill_(0.2)
            self.bn.weight[3] = 0.0
            self.bn.bias[3] = 0.0
            self.fc.weight.copy_(torch.tensor([[10.0, 1.0, 0.0, 10.0], [-10.0, -1.0, 0.0, -10.0]]))
            self.fc.bias.zero_()

    def features(self, x):
        return self.bn(self.conv(x))

    def forward(self, x, gate=None):
        y = self.features(x)
        if gate is not None:
            y = y * gate.view(1, -1, 1, 1)
        return self.fc(F.relu(y).mean(dim=(2, 3)))

    def channel_groups(self):
        return [ChannelGroup("conv1", "conv", "bn", ("fc",))]


@pytest.mark.parametrize("target", ["bn", "weight"])
def test_taylor_ranks_the_channels_by_how_much_they_matter(target):
    torch.manual_seed(0)
    model = Planted()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    method = create(method_cfg(target=target, num_images=1000, batch_size=16))
    s = method.scores(model, images())["conv1"]
    # the same activation read 10x as strongly: a 10x first-order term, squared
    assert s[0] > 0 and torch.isclose(s[0] / s[1], torch.tensor(100.0), rtol=1e-3)
    assert s[2] == 0  # nothing reads it: zero gradient
    assert s[3] == 0  # gamma = beta = 0: zero output (and, for the weights, zero gradient)
    keep = method.select(model, {"conv1": s}, method_cfg(pruning_ratio=0.5, min_channels=1))
    assert keep["conv1"].tolist() == [0, 1]
    # the model is left unchanged: no update, no gradient, same mode
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_bn_target_is_the_squared_gate_gradient_averaged_over_batches():
    torch.manual_seed(1)
    model = Planted()
    with torch.no_grad():
        model.conv.weight.normal_()  # distinct filters now
        model.bn.weight.uniform_(0.5, 1.5)
        model.bn.bias.uniform_(-0.5, 0.5)
        model.bn.running_mean.uniform_(-0.2, 0.2)
    model.eval()
    data = images(n=37)  # batches of 16, 16 and 5
    method = create(method_cfg(num_images=1000, batch_size=16))
    scores = method.scores(model, data)["conv1"]
    gen = torch.Generator().manual_seed(method.seed)
    per_batch = []
    for x, y in data.sample_batches(1000, 16, gen):
        gate = torch.ones(4, requires_grad=True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(x, gate), y), gate)
        per_batch.append(g ** 2)
    assert len(per_batch) == 3
    assert torch.allclose(scores, torch.stack(per_batch).mean(0), rtol=1e-4, atol=1e-12)


@pytest.mark.parametrize("arch", ["vgg", "resnet"])
def test_a_dead_channel_scores_zero_in_real_models(arch):
    torch.manual_seed(0)
    if arch == "vgg":
        model, group, bn = build(vgg.spec_for(11, 0.125, 3, 10)), "conv2", "features.5"
    else:
        model, group, bn = build(resnet.spec_for(20, 0.5, 3, 10)), "block2", "blocks.1.bn1"
    with torch.no_grad():
        model.get_submodule(bn).weight[3] = 0.0
        model.get_submodule(bn).bias[3] = 0.0
    scores = create(method_cfg(num_images=64, batch_size=32)).scores(model, images(size=16, classes=10))
    assert list(scores) == [g.name for g in model.channel_groups()]
    assert scores[group][3] == 0 and (scores[group][torch.arange(scores[group].numel()) != 3] > 0).all()


def test_unknown_target_is_an_error():
    from tests.conftest import compose_config

    with pytest.raises(PrunebenchError, match="method.target must be one of bn, weight, got 'activation'"):
        compose_config("method=taylor", "method.target=activation")


@pytest.mark.parametrize("model", ["vgg11", "resnet20"])
def test_smoke_run_through_the_pipeline(smoke_cfg, model):
    extra = ["model.width=0.5"] if model.startswith("resnet") else []
    rows = by_row(pipeline.run(smoke_cfg("method=taylor", f"model={model}", *extra)))
    assert list(rows) == ["unpruned", "pruned", "finetune", "scratch_e", "scratch_b", "uniform"]
    assert all(r["status"] == "ok" for r in rows.values()), rows
    assert rows["pruned"]["flops"] < rows["unpruned"]["flops"]


def test_smoke_run_with_the_weight_target_iterated(smoke_cfg):
    rows = by_row(pipeline.run(smoke_cfg("method=taylor", "method.target=weight", "method.iterations=2",
                                         "method.iteration_epochs=1", "strategies=[finetune]")))
    assert all(r["status"] == "ok" for r in rows.values()), rows
    assert rows["pruned"]["epochs"] == 1
