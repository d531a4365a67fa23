"""Removed channels that output a constant: their contribution is carried into the
next layer, so removing them changes nothing the network computes.

A channel of a group (conv -> BN -> ReLU -> consumers) whose filter is all zero
(soft filter pruning, He et al. IJCAI 2018, zeroes filters and removes them at the
end) still outputs a constant: in eval mode its BN gives

    c = ReLU(gamma * (b - running_mean) / sqrt(running_var + eps) + beta)

where b is the conv's bias (0 without one); without a BatchNorm (ImageNet VGG-16
without ``_bn``) c = ReLU(b). The same holds for any filter when
gamma is exactly 0 (c = ReLU(beta)). Removing such a channel drops c from every
consumer; this module computes what each consumer received from it and folds it in:

- Linear consumer (after global pooling): the pooled input is c itself, so
  ``bias[o] += sum_k weight[o, k] * c[k]``. Exact.
- Conv consumer: ``d[o] = sum_k c[k] * sum_{i,j} weight[o, k, i, j]``, added to its
  bias when it has one, else to the BatchNorm that reads its output, as
  ``running_mean[o] -= d[o]`` (BN(z + d) with mean m equals BN(z) with mean m - d).
  Exact for a 1x1 conv and at every output position whose receptive field lies
  inside the input; a padded 3x3 conv's border positions (one pixel wide) see
  part of the kernel on zero padding, received less than d there, and differ.

A removed channel whose filter is not zero and whose gamma is not zero is not
constant (it depends on the input); nothing is carried for it, so methods that
remove live channels (L1-norm, slimming, ...) are unaffected. The BatchNorm behind
a consumer is found by one traced forward pass of a 32x32 zero image."""
import logging
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from prunebench.models.groups import ChannelGroup, bn_channels

log = logging.getLogger(__name__)

TRACE_SIZE = 32  # pixels of the zero image traced to find the BatchNorm behind each consumer conv


def constant_outputs(model: nn.Module, group: ChannelGroup) -> Tuple[torch.Tensor, torch.Tensor]:
    """(is_constant, value): which channels of ``group`` output an input-independent value in
    eval mode (zero filter, or BN gamma exactly 0) and that value after BN and ReLU. A selection
    group (no producing conv) has constant channels where gamma is 0; its channels are the
    selected BatchNorm channels, in the selection's order."""
    if not group.bn:  # no BatchNorm: a zero filter outputs ReLU(bias)
        conv = model.get_submodule(group.conv)
        w = conv.weight.detach()
        b = conv.bias.detach() if conv.bias is not None else torch.zeros(w.shape[0], device=w.device, dtype=w.dtype)
        return (w.flatten(1) == 0).all(dim=1), F.relu(b)
    bn = model.get_submodule(group.bn)
    gamma = bn.weight.detach() if bn.weight is not None else torch.ones_like(bn.running_mean)
    beta = bn.bias.detach() if bn.bias is not None else torch.zeros_like(bn.running_mean)
    if group.conv is None:
        index = bn_channels(model, group)
        index = torch.arange(gamma.numel(), device=gamma.device) if index is None else index.to(gamma.device)
        return gamma[index] == 0, F.relu(beta[index])
    conv = model.get_submodule(group.conv)
    w = conv.weight.detach()
    zero_filter = (w.flatten(1) == 0).all(dim=1)
    b = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    value = F.relu(gamma * (b - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) + beta)
    return zero_filter | (gamma == 0), value


@torch.no_grad()
def norms_after(model: nn.Module, convs: List[str]) -> Dict[str, str]:
    """For each conv path in ``convs``, the path of the BatchNorm2d whose input is that
    conv's output, where there is one (one traced forward pass in eval mode)."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None or not convs:
        return {}
    outputs: Dict[str, torch.Tensor] = {}
    found: Dict[str, str] = {}
    handles = []

    def keep_output(name):
        return lambda module, inputs, output: outputs.__setitem__(name, output)

    def match_input(name):
        def hook(module, inputs):
            for conv, out in outputs.items():
                if inputs[0] is out and conv not in found:
                    found[conv] = name
        return hook

    for name, m in model.named_modules():
        if name in convs:
            handles.append(m.register_forward_hook(keep_output(name)))
        elif isinstance(m, nn.BatchNorm2d):
            handles.append(m.register_forward_pre_hook(match_input(name)))
    was_training = model.training
    model.eval()
    try:
        p = next(model.parameters())
        model(torch.zeros(1, first.in_channels, TRACE_SIZE, TRACE_SIZE, device=p.device, dtype=p.dtype))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return found


@torch.no_grad()
def carried(model: nn.Module, keep: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Additions to ``model``'s state-dict entries (in its unpruned shapes) that carry the
    constant output of every removed constant channel into its consumers; empty when no
    removed channel is constant."""
    groups = {g.name: g for g in model.channel_groups()}
    pending = []  # (group, removed constant channel indices, their values)
    for name, idx in keep.items():
        g = groups[name]
        is_const, value = constant_outputs(model, g)
        removed = torch.ones_like(is_const)
        removed[idx.to(is_const.device)] = False
        channels = (removed & is_const).nonzero().flatten()
        if channels.numel():
            pending.append((g, channels, value[channels]))
    if not pending:
        return {}
    convs = sorted({c for g, _, _ in pending for c in g.consumers
                    if isinstance(model.get_submodule(c), nn.Conv2d) and model.get_submodule(c).bias is None})
    after = norms_after(model, convs)
    delta: Dict[str, torch.Tensor] = {}

    def add(key: str, d: torch.Tensor) -> None:
        delta[key] = delta.get(key, 0) + d

    for g, channels, value in pending:
        for c in g.consumers:
            m = model.get_submodule(c)
            w = m.weight.detach()[:, channels]
            d = (w.flatten(2).sum(2) if w.dim() > 2 else w) @ value.to(w.dtype)  # per output channel
            if m.bias is not None:
                add(f"{c}.bias", d)
            elif c in after:
                add(f"{after[c]}.running_mean", -d)
            else:
                log.warning("%s: the constant output of %d removed channels is dropped: their consumer %s has "
                            "no bias and no BatchNorm reads its output", g.name, channels.numel(), c)
    return delta
