"""What ThiNet and channel pruning share: a channel of group i is judged by how well
the output of its consumer (layer i + 1) is reconstructed without it, and after
surgery each consumer is refitted to reproduce the original model's output.

Statistics: one pass over ``num_images`` training images, sampling every
consumer at ``positions_per_image`` random output positions per image
(:mod:`prunebench.methods.activations`), gives each group the Gram matrix G and
cross terms g of its channels' contributions to the consumer's output, over
every output channel (:class:`ContributionGram`). A group with several consumers
sums them. A consumer that reads several groups (DenseNet: a layer reads every
earlier layer of its block) gives each group its slice of G, and as g the
regression of that group's own contributions: g less what the group's channels
share with the other groups' (sum over c' outside the group of G[c, c']), so
that keeping every channel of the group reproduces its part of the output.

Reconstruction (``reconstruct: true``) goes group by group in forward order on
the PRUNED model: the consumer's inputs come from the pruned model (already
refitted upstream, so earlier errors are compensated), its targets from the
original model on the same images and positions; ``fit`` adjusts the consumer.
A consumer that is also a group's producing convolution (VGG), or another of its
outputs (a branch of a residual sum in a torchvision model), is fitted on the
output channels that group keeps; BatchNorm after it stays valid because the
refit reproduces its pre-BN output. A consumer of several groups is fitted once,
where it first appears.
"""
from abc import abstractmethod
from typing import Dict, Iterable, Tuple

import torch
from torch import nn

from prunebench.errors import PrunebenchError
from prunebench.methods.activations import Samples, sample
from prunebench.methods.base import Method
from prunebench.models import conv_groups
from prunebench.pruning.reconstruct import ContributionGram, layer_weight


class RegressionMethod(Method):
    residual_target = False  # conv2 of a ResNet block reconstructs the block's output (see activations.sample)

    def sampling(self) -> Dict:
        c = self.cfg
        return {"num_images": c.num_images, "batch_size": c.batch_size,
                "positions_per_image": c.positions_per_image, "seed": self.seed}

    def contribution_stats(self, model: nn.Module, data) -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]:
        """{group: (G, g)} of the channels' contributions to their consumers' outputs, on ``model``."""
        groups = conv_groups(model)
        layers = sorted({c for g in groups for c in g.consumers})
        stats = {c: ContributionGram(layer_weight(model.get_submodule(c))) for c in layers}
        for batch in sample(data, layers, model, **self.sampling()):
            for c, s in batch.items():
                stats[c].add(s.x, s.y)
        out = {}
        for g in groups:
            width = model.get_submodule(g.conv).out_channels
            gram = cross = 0
            for k, c in enumerate(g.consumers):
                full_gram, full_cross = stats[c].gram, stats[c].cross
                if full_gram.shape[0] == width:  # the consumer reads this group alone
                    gram, cross = gram + full_gram, cross + full_cross
                    continue
                if not g.offsets:
                    raise PrunebenchError(f"{g.name}: its consumer {c} reads {full_gram.shape[0]} channels, the group "
                                          f"{width}, and the model does not say where the group's lie; use a method "
                                          f"that reads the filters (l1_norm, fpgm)")
                sl = slice(g.offset(k), g.offset(k) + width)
                shared = full_gram[sl].sum(1) - full_gram[sl, sl].sum(1)  # with the consumer's other inputs
                gram, cross = gram + full_gram[sl, sl], cross + full_cross[sl] - shared
            out[g.name] = (gram.cpu(), cross.cpu())
        return out

    @abstractmethod
    def fit(self, layer: nn.Module, batches: Iterable[Samples]) -> None:
        """Adjust ``layer`` (in the pruned model) so that its outputs on the sampled
        inputs reproduce the targets."""

    def reconstruct(self, original: nn.Module, pruned: nn.Module, keep: Dict[str, torch.Tensor], data) -> None:
        if not self.cfg.reconstruct:
            return
        groups = conv_groups(original)
        produced_by = {m: g.name for g in groups for m in (g.conv, *g.outputs)}  # whose outputs each group cuts
        fitted = set()
        for g in groups:  # forward order
            if g.name in keep and keep[g.name].numel() == 0:
                continue  # the group went, and its consumers with it (a whole ResNet block)
            for consumer in g.consumers:
                if consumer in fitted:
                    continue
                fitted.add(consumer)
                out = keep.get(produced_by.get(consumer))
                batches = sample(data, [consumer], pruned, original, residual=self.residual_target,
                                 **self.sampling())
                index = None if out is None else out.to(data.device)
                self.fit(pruned.get_submodule(consumer),
                         (Samples(b[consumer].x, b[consumer].y if index is None else b[consumer].y[:, index])
                          for b in batches))
