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
a consumer is found by one traced forward pass of a 32x32 zero image.

Channels inside a concatenation (DenseNet) reach each consumer through that
consumer's own BatchNorm, so each consumer receives its own c (its norm's gamma,
beta and statistics at the channel's offset); a zero filter is constant for all of
them, a zero gamma only where every norm's is. A consumer convolution whose
output goes into a concatenation is read by the norms of its own group, at their
offsets: ``d`` goes into each of those running means."""
import logging
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from prunebench.models.groups import ChannelGroup, bn_channels, groups_named

log = logging.getLogger(__name__)

TRACE_SIZE = 32  # pixels of the zero image traced to find the BatchNorm behind each consumer conv


def after_bn(bn: nn.BatchNorm2d, pre: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """ReLU(BN(pre)) in eval mode of a constant ``pre`` per channel, for ``bn``'s channels from ``offset``."""
    sl = slice(offset, offset + pre.numel())
    gamma = bn.weight.detach()[sl] if bn.weight is not None else torch.ones_like(pre)
    beta = bn.bias.detach()[sl] if bn.bias is not None else torch.zeros_like(pre)
    return F.relu(gamma * (pre - bn.running_mean[sl]) / torch.sqrt(bn.running_var[sl] + bn.eps) + beta)


def constant_outputs(model: nn.Module, group: ChannelGroup) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """(is_constant, values): which channels of ``group`` output an input-independent value in
    eval mode (zero filter, or BN gamma exactly 0) and, for each consumer, that value after its
    BN and ReLU. A selection group (no producing conv) has constant channels where gamma is 0;
    its channels are the selected BatchNorm channels, in the selection's order."""
    if group.conv is None:
        bn = model.get_submodule(group.bn)
        gamma = bn.weight.detach() if bn.weight is not None else torch.ones_like(bn.running_mean)
        beta = bn.bias.detach() if bn.bias is not None else torch.zeros_like(bn.running_mean)
        index = bn_channels(model, group)
        index = torch.arange(gamma.numel(), device=gamma.device) if index is None else index.to(gamma.device)
        return gamma[index] == 0, [F.relu(beta[index])] * len(group.consumers)
    conv = model.get_submodule(group.conv)
    w = conv.weight.detach()
    zero_filter = (w.flatten(1) == 0).all(dim=1)
    b = conv.bias.detach() if conv.bias is not None else torch.zeros_like(zero_filter, dtype=w.dtype)
    places = group.normalized()
    if not places:  # no BatchNorm (torchvision's VGG-16): a zero filter outputs ReLU(bias)
        return zero_filter, [F.relu(b)] * len(group.consumers)
    zero_gamma = torch.ones_like(zero_filter)
    for path, offset in places:
        bn = model.get_submodule(path)
        if bn.weight is None:
            zero_gamma = torch.zeros_like(zero_filter)
        else:
            zero_gamma &= bn.weight.detach()[offset:offset + b.numel()] == 0
    if group.norms:  # each consumer through its own norm
        values = [after_bn(model.get_submodule(path), b, offset) for path, offset in places]
    else:
        values = [after_bn(model.get_submodule(group.bn), b)] * len(group.consumers)
    return zero_filter | zero_gamma, values


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
    groups = {g.name: g for g in groups_named(model, keep)}
    pending = []  # (group, removed constant channel indices, their value at each consumer)
    for name, idx in keep.items():
        g = groups[name]
        is_const, values = constant_outputs(model, g)
        removed = torch.ones_like(is_const)
        removed[idx.to(is_const.device)] = False
        channels = (removed & is_const).nonzero().flatten()
        if channels.numel():
            pending.append((g, channels, [v[channels] for v in values]))
    if not pending:
        return {}
    convs = sorted({c for g, _, _ in pending for c in g.consumers
                    if isinstance(model.get_submodule(c), nn.Conv2d) and model.get_submodule(c).bias is None})
    after = {c: [(bn, 0)] for c, bn in norms_after(model, convs).items()}
    if hasattr(model, "filter_groups"):  # a consumer writing into a concatenation: its own group's norms
        produced = {g.conv: g.normalized() for g in model.filter_groups() if g.norms}
        after.update({c: produced[c] for c in convs if c not in after and c in produced})
    delta: Dict[str, torch.Tensor] = {}

    def add(key: str, d: torch.Tensor, offset: int = 0) -> None:
        if key not in delta:
            path, attr = key.rsplit(".", 1)
            delta[key] = torch.zeros_like(getattr(model.get_submodule(path), attr))
        delta[key][offset:offset + d.numel()] += d

    for g, channels, values in pending:
        for k, c in enumerate(g.consumers):
            m = model.get_submodule(c)
            w = m.weight.detach()[:, g.offset(k) + channels]
            d = (w.flatten(2).sum(2) if w.dim() > 2 else w) @ values[k].to(w.dtype)  # per output channel
            if m.bias is not None:
                add(f"{c}.bias", d)
            elif c in after:
                for bn, offset in after[c]:
                    add(f"{bn}.running_mean", -d, offset)
            else:
                log.warning("%s: the constant output of %d removed channels is dropped: their consumer %s has "
                            "no bias and no BatchNorm reads its output", g.name, channels.numel(), c)
    return delta
