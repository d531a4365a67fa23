"""APoZ / network trimming (Hu, Peng, Tai, Tang, "Network Trimming: A Data-Driven
Neuron Pruning Approach towards Efficient Deep Architectures", arXiv 2016): a
channel whose output after ReLU is mostly zero is unimportant. The Average
Percentage of Zeros of a channel is the fraction of its post-ReLU outputs that
are zero over ``num_images`` images and every spatial position; the channels
with the highest APoZ go. Criteria: ``std`` (the paper's) removes in each layer
the channels whose APoZ exceeds that layer's mean + ``std_k`` standard deviations
(population std), keeping at least ``min_channels``; ``ratio`` removes
``pruning_ratio`` of each layer through the shared selection. The paper alternates
trimming and retraining: ``iterations`` / ``iteration_epochs`` do that.

Departures from the paper: APoZ is measured on (un-augmented) training images,
not on the validation set, so that the test set stays unseen before evaluation;
every prunable layer is trimmed at once (``skip`` leaves layers whole) rather than
the paper's hand-picked layers with the highest mean APoZ (e.g. VGG-16's CONV5 and
FC layers); on ResNets only the first convolution of a block is a prunable
group, its APoZ taken after the block's inner ReLU; on DenseNet a layer's channel
is counted after every BatchNorm (and ReLU) of the later layers that read it.
"""
from dataclasses import dataclass
from enum import StrEnum
from typing import Dict

import torch
from torch import nn

from prunebench.errors import PrunebenchError
from prunebench.methods.base import Method, StatisticsConfig, require_batchnorm
from prunebench.models import conv_groups
from prunebench.pruning.selection import check_layer_names, keep_count



Criterion = StrEnum("Criterion", ["ratio", "std"])


@dataclass
class APoZConfig(StatisticsConfig):
    criterion: Criterion = Criterion.ratio  # ratio: remove pruning_ratio of each layer | std: remove APoZ > mean + std_k * std
    std_k: float = 1.0  # paper: 1


class APoZ(Method):
    Config = APoZConfig
    paper = "Hu et al., arXiv 2016"

    def check_model(self, model: nn.Module) -> None:
        require_batchnorm(conv_groups(model), "apoz")

    def apoz(self, model: nn.Module, data) -> Dict[str, torch.Tensor]:
        """APoZ of every channel of every group: the fraction of its BN outputs that are <= 0
        (zero after the ReLU that follows), over ``num_images`` training images and all positions;
        inside a concatenation, over its outputs at every BatchNorm that reads it."""
        groups = conv_groups(model)
        zeros: Dict[str, torch.Tensor] = {}
        positions = {g.name: 0 for g in groups}

        def counter(name, offset, width):
            def hook(module, inputs, output):
                out = output[:, offset:offset + width]
                z = (out <= 0).sum(dim=(0, 2, 3))  # per channel, over batch and positions
                zeros[name] = zeros[name] + z if name in zeros else z
                positions[name] += out.numel() // out.shape[1]
            return hook

        modes = {m: m.training for m in model.modules()}
        handles = []
        try:
            for g in groups:
                width = model.get_submodule(g.conv).out_channels
                for path, offset in g.normalized():
                    handles.append(model.get_submodule(path).register_forward_hook(counter(g.name, offset, width)))
            model.eval()
            gen = torch.Generator(device=data.device).manual_seed(self.seed)
            with torch.no_grad():
                for x, _ in data.sample_batches(self.cfg.num_images, self.cfg.batch_size, gen):
                    model(x)
        finally:
            for h in handles:
                h.remove()
            for m, mode in modes.items():
                m.training = mode
        if not positions or min(positions.values()) == 0:
            raise PrunebenchError("APoZ saw no images: method.num_images must be >= 1 and the training set non-empty")
        return {g.name: (zeros[g.name].double() / positions[g.name]).float().cpu() for g in groups}

    def scores(self, model, data) -> Dict[str, torch.Tensor]:
        # higher is kept: the fraction of non-zero outputs, 1 - APoZ
        return {name: 1.0 - a for name, a in self.apoz(model, data).items()}

    def select(self, model, scores, cfg) -> Dict[str, torch.Tensor]:
        if cfg.criterion == "ratio":
            return super().select(model, scores, cfg)
        return std_select(scores, cfg)


def std_select(scores: Dict[str, torch.Tensor], cfg) -> Dict[str, torch.Tensor]:
    """The paper's criterion: in each layer remove the channels whose APoZ (1 - score) exceeds
    mean + std_k * std of the layer's APoZ values; keep at least ``min_channels`` (the lowest
    APoZ ones) and, with ``round_to`` > 1, a multiple of it. Layers in ``skip`` keep everything."""
    check_layer_names(cfg.skip, scores, "method.skip")
    keep = {}
    for name, s in scores.items():
        s = s.flatten().double().cpu()
        n = s.numel()
        if name in cfg.skip:
            keep[name] = torch.arange(n)
            continue
        apoz = 1.0 - s
        excess = apoz - apoz.mean()
        # a small tolerance, so that equal values (std 0) never count as outliers by rounding
        removed = excess > cfg.std_k * apoz.std(correction=0) + 1e-9
        n_keep = keep_count(n - int(removed.sum()), n, cfg.min_channels, cfg.round_to)
        top = torch.argsort(s, descending=True, stable=True)[:n_keep]
        keep[name] = torch.sort(top).values
    return keep
