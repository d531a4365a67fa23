"""The CIFAR ResNet's shortcuts. ``avgpool_pad_detached`` is the ResNet of the L1-norm
presets: the forward of the authors' code (Eric-mingjie/rethinking-network-pruning
cifar/l1-norm-pruning/models/resnet.py lines 33-49, 51-60, 80-98), written out below
with the same weights, must give the same outputs and gradients."""
import pytest
import torch
import torch.nn.functional as F

from prunebench import models
from prunebench.models import resnet
from tests.conftest import compose_config


def batch_norm(model, name, x):
    m = model.get_submodule(name)
    return F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)


def authors_forward(model, x):
    """The authors' ResNet: post-activation basic blocks; where a block downsamples, the
    shortcut is AvgPool2d(2, 2) of the block's input with zero channels concatenated after
    it, taken from ``x.data`` (no gradient); AvgPool2d(8) and the linear layer."""
    out = F.relu(batch_norm(model, "bn1", F.conv2d(x, model.conv1.weight, padding=1)))
    for k, block in enumerate(model.blocks):
        p = f"blocks.{k}"
        stride, planes = block.conv1.stride[0], block.conv2.out_channels
        branch = F.relu(batch_norm(model, f"{p}.bn1", F.conv2d(out, block.conv1.weight, stride=stride, padding=1)))
        branch = batch_norm(model, f"{p}.bn2", F.conv2d(branch, block.conv2.weight, padding=1))
        if stride != 1 or out.shape[1] != planes:
            pooled = F.avg_pool2d(out, 2, 2).detach()
            zeros = pooled.new_zeros(pooled.shape[0], planes - pooled.shape[1], *pooled.shape[2:])
            shortcut = torch.cat([pooled, zeros], 1)
        else:
            shortcut = out
        out = F.relu(branch + shortcut)
    return F.linear(F.avg_pool2d(out, 8).flatten(1), model.classifier.weight, model.classifier.bias)


def randomized_float64(spec):
    torch.manual_seed(0)
    model = models.build(spec).double().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model


def test_detached_avgpool_shortcut_is_the_authors_forward_and_gradient():
    model = randomized_float64(resnet.spec_for(20, 1.0, 3, 10, shortcut="avgpool_pad_detached"))
    reference = randomized_float64(resnet.spec_for(20, 1.0, 3, 10, shortcut="avgpool_pad_detached"))
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    y = model(x)
    y_ref = authors_forward(reference, x)
    assert torch.allclose(y, y_ref, rtol=0, atol=1e-12)
    y.square().sum().backward()
    y_ref.square().sum().backward()
    grads = dict(reference.named_parameters())
    for name, p in model.named_parameters():
        assert torch.allclose(p.grad, grads[name].grad, rtol=0, atol=1e-12), name


@pytest.mark.parametrize("shortcut,flows", [("avgpool_pad_detached", False), ("avgpool_pad", True),
                                            ("subsample_pad", True)])
def test_only_the_detached_shortcut_stops_the_gradient(shortcut, flows):
    block = models.build(resnet.spec_for(20, 1.0, 3, 10, shortcut=shortcut)).blocks[3].double()  # 16 -> 32, stride 2
    with torch.no_grad():
        block.conv2.weight.zero_()  # the branch no longer depends on the input: what reaches it is the shortcut's
    x = torch.randn(2, 16, 8, 8, dtype=torch.float64, requires_grad=True)
    block(x).sum().backward()
    assert bool(x.grad.abs().sum() > 0) == flows
    identity = models.build(resnet.spec_for(20, 1.0, 3, 10, shortcut=shortcut)).blocks[4].double()  # 32 -> 32
    z = torch.randn(2, 32, 4, 4, dtype=torch.float64, requires_grad=True)
    assert identity.shortcut(z) is z  # identity shortcuts pass the gradient in every option


def test_the_l1_resnet_presets_build_the_authors_shortcut():
    for preset in ("l1_norm_resnet56a", "l1_norm_resnet56b", "l1_norm_resnet110a", "l1_norm_resnet110b"):
        cfg = compose_config(f"experiment=rethinking/{preset}_cifar10")
        assert models.spec_from_config(cfg.model, 3, 10)["shortcut"] == "avgpool_pad_detached"
