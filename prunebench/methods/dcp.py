"""Discrimination-aware channel pruning (Zhuang, Tan, Zhuang, Liu, Guo, Wu, Huang,
Zhu, "Discrimination-aware Channel Pruning for Deep Neural Networks", NeurIPS
2018): a channel is kept for what it contributes to the network's discriminative
power, measured by auxiliary classifiers inside the network, as well as for what
it contributes to reconstructing the next layer's output.

Auxiliary losses (the sparse stage, from the trained model): the places the
prunable groups end (a residual block's output on ResNets and PreResNets, each
group's BatchNorm on VGG, the first BatchNorm that reads a DenseNet layer's
channels), n in forward order, are split as the authors' ``cal_pivot`` does
(``dcp/utils/others.py`` lines 16-28): segments of n // (``num_stages`` + 1) + 1,
the last pivot before the last place, so PreResNet-56's 27 blocks get classifiers
after blocks 7, 14 and 21 (``dcp/aux_trainer.py`` lines 91-168). Each auxiliary
classifier is BatchNorm, ReLU, global average pooling and a fully connected layer
(the authors' ``dcp/aux_classifier.py``) on its place's output. The model is
fine-tuned with the loss L_f + sum_p CE(aux_p), L_f the final cross-entropy.

Channel selection, group by group in forward order: for the consumers W of a group
(the layers reading its channels: the next convolution or the classifier on VGG,
a block's conv2 on ResNets and PreResNet-56, whose conv2 input channels are what
the authors select; every later layer of the block on DenseNet, as a slice of its
input), with A the channels chosen so far and W_A the consumers' trained weights
on them (zero elsewhere), the loss is

    L(W_A) = reconstruction_weight * MSE(consumer output, the original model's)
             + discrimination_weight * CE(the classifier of the consumer's segment)

(the segment's auxiliary classifier; the final classifier for the last segment),
over ``num_images`` training images with BatchNorm on its running statistics. The
channel c not in A with the largest Frobenius norm of dL/dW[:, c] (over all the
consumers) joins A; this repeats until A holds the layer's count (``pruning_ratio``
/ ``layer_ratios`` per layer, at least ``min_channels``). The chosen channels of earlier groups are
applied (the others zeroed) while later groups are chosen, so every choice is
made on the network pruned so far. Scores: the chosen channels in the order
chosen, above every other, so the shared ``layer`` selection keeps exactly A.
After surgery the consumers' kept weights are refitted by least squares on the
original model's outputs (channel pruning's reconstruction, ``reconstruct``).

Defaults from the paper and the authors' CIFAR configs (``dcp/channel_selection/
cifar10_resnet.hocon``, which builds PreResNet-56): 3 additional losses, both loss
weights 1.0, 50% of the channels; the auxiliary fine-tuning there is 100 epochs at
lr 0.1.

Departures: the paper solves the sub-problem (SGD on W_A for the combined loss)
after every added channel, the authors' code for one epoch each; here W_A stays at
its trained values during selection (the authors' warm start) and the kept
weights are refitted once, after surgery, by least squares on the reconstruction
term alone. The paper fine-tunes after each stage's selection; the protocol's
``finetune`` row fine-tunes once at the end. The auxiliary fine-tuning sums the
losses with equal weight (the authors' code weighs each segment's gradient).
prunebench's PreResNet-56 is network slimming's: the first block of each stage
takes its shortcut from the block's input, where the authors' DCP model takes it
after bn1 and ReLU (``dcp/models/preresnet.py`` lines 66-71 and 146-147,
``half_preact``).
"""
from dataclasses import dataclass
import math
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from prunebench.errors import PrunebenchError
from prunebench.methods.activations import evaluating
from prunebench.methods.base import StatisticsConfig
from prunebench.methods.base import require_batchnorm
from prunebench.methods.channel_pruning import ChannelPruning
from prunebench.models import conv_groups
from prunebench.models.groups import Residual, scale_channels
from prunebench.pruning.selection import check_layer_names, keep_count

ATTR = "dcp_heads"  # the submodule attach() adds to the model


class AuxClassifier(nn.Module):
    """BatchNorm, ReLU, global average pooling, fully connected."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, num_classes)
        with torch.no_grad():
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.bn(x)).mean(dim=(2, 3)))


class Heads(nn.Module):
    """The auxiliary classifiers, by the name of the group whose segment they end, and the
    module each reads (its output is kept on every forward pass)."""

    def __init__(self, heads: Dict[str, AuxClassifier], points: Dict[str, str]):
        super().__init__()
        self.heads = nn.ModuleDict(heads)
        self.points = dict(points)  # head name -> module path whose output it classifies
        self.handles: List = []
        self.features: Dict[str, torch.Tensor] = {}
        self.labels: Optional[torch.Tensor] = None


def segment_ends(n: int, stages: int) -> List[int]:
    """0-based indices of the places (of ``n``) after which the first ``stages`` of ``stages`` + 1
    segments end, as the authors' ``cal_pivot``: the pivots min(k (i + 1), n - 1), i < ``stages``,
    k = n // (``stages`` + 1) + 1, counted from 1 (fewer when there are not enough places)."""
    k = n // (stages + 1) + 1
    return sorted({min(k * (i + 1), n - 1) - 1 for i in range(stages)} - {-1})


def residual_of(model: nn.Module, group) -> Optional[Residual]:
    """The residual block (``model.residuals()``) whose branch holds ``group``'s convolution."""
    for r in getattr(model, "residuals", lambda: [])():
        if group.conv.startswith(r.block + "."):
            return r
    return None


def output_point(model: nn.Module, group) -> str:
    """The module whose output ends ``group``'s place in the network: its residual block (ResNet,
    PreResNet), else its BatchNorm (inside a concatenation: the first that reads it)."""
    r = residual_of(model, group)
    if r is not None:
        return r.block
    places = group.normalized()
    if not places:
        raise PrunebenchError(f"dcp places its auxiliary classifiers after a BatchNorm or a residual block; "
                              f"the group {group.name} has neither")
    return places[0][0]


@dataclass
class DCPConfig(StatisticsConfig):
    num_stages: int = 3  # additional (auxiliary) losses; the authors' CIFAR config: 3
    discrimination_weight: float = 1.0  # lambda on the auxiliary cross-entropy in channel selection
    reconstruction_weight: float = 1.0  # weight of the consumer-output MSE in channel selection
    positions_per_image: int = 10  # sampled output positions per image for the least-squares refit
    reconstruct: bool = True  # least-squares refit of the next layer on the kept channels


class DCP(ChannelPruning):
    Config = DCPConfig
    sparse = True
    paper = "Zhuang et al., NeurIPS 2018"
    capturable = False  # the auxiliary losses read the labels on_batch() stores on the host

    def __init__(self, cfg, seed: int = 0):
        super().__init__(cfg, seed)
        if cfg.num_stages < 0 or cfg.discrimination_weight < 0 or cfg.reconstruction_weight < 0:
            raise PrunebenchError(f"dcp needs num_stages, discrimination_weight and reconstruction_weight >= 0, got "
                                  f"{cfg.num_stages}, {cfg.discrimination_weight}, {cfg.reconstruction_weight}")
        if cfg.selection != "layer":
            raise PrunebenchError(f"dcp chooses a count of channels in each layer: use method.selection=layer, "
                                  f"got {cfg.selection!r}")

    def sparse_settings(self) -> Dict:
        # "segments": the authors' pivots (segment_ends), which replaced an even split of the groups
        return {"num_stages": self.cfg.num_stages, "segments": "cal_pivot"}

    def check_model(self, model: nn.Module) -> None:
        self.num_classes(model)
        require_batchnorm(conv_groups(model), "dcp")  # the chosen channels are masked there
        for g in conv_groups(model):
            output_point(model, g)

    # -- the auxiliary classifiers ------------------------------------------

    def attach(self, model: nn.Module, input_shape=None) -> None:
        places: List[Tuple[str, str]] = []  # (output point, the name of the last group ending there)
        for g in conv_groups(model):
            point = output_point(model, g)
            if places and places[-1][0] == point:  # a block holding several groups ends once
                places[-1] = (point, g.name)
            else:
                places.append((point, g.name))
        points = {places[i][1]: places[i][0] for i in segment_ends(len(places), self.cfg.num_stages)}
        classes = self.num_classes(model)
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(self.seed)  # attach is deterministic: the same heads for a resumed stage
        try:
            heads = {name: AuxClassifier(self.point_channels(model, path), classes) for name, path in points.items()}
        finally:
            torch.random.set_rng_state(gen_state)
        container = Heads(heads, points).to(next(model.parameters()).device)
        model.add_module(ATTR, container)
        for name, path in points.items():
            def keep(module, inputs, output, name=name):
                container.features[name] = output
            container.handles.append(model.get_submodule(path).register_forward_hook(keep))

    @staticmethod
    def num_classes(model: nn.Module) -> int:
        last = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not last:
            raise PrunebenchError(f"dcp needs a model ending in a linear classifier; {type(model).__name__} has none")
        return last[-1].out_features

    @staticmethod
    def point_channels(model: nn.Module, path: str) -> int:
        module = model.get_submodule(path)
        if isinstance(module, nn.BatchNorm2d):
            return module.num_features
        block = next(r for r in model.residuals() if r.block == path)
        return model.get_submodule(block.conv).out_channels  # a residual block: its branch's output width

    @staticmethod
    def heads(model: nn.Module) -> Heads:
        if not hasattr(model, ATTR):
            raise PrunebenchError("dcp chooses channels with the auxiliary classifiers of its sparse stage, which "
                                  "this model does not carry; dcp prunes in one step (method.iterations=1)")
        return getattr(model, ATTR)

    def detach(self, model: nn.Module) -> None:
        container = self.heads(model)
        for h in container.handles:
            h.remove()
        delattr(model, ATTR)

    def on_batch(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        self.heads(model).labels = y

    def penalty(self, model: nn.Module):
        """The auxiliary classifiers' cross-entropy, summed (L_f is the loop's own loss)."""
        container = self.heads(model)
        y, feats = container.labels, container.features
        container.labels, container.features = None, {}
        if y is None or not feats:
            return None
        return sum(F.cross_entropy(container.heads[n](f), y) for n, f in feats.items())

    # -- channel selection -------------------------------------------------

    def counts(self, model: nn.Module) -> Dict[str, int]:
        """Channels each group keeps (skipped groups: all)."""
        c = self.cfg
        groups = conv_groups(model)
        names = [g.name for g in groups]
        check_layer_names(c.skip, names, "method.skip")
        check_layer_names(c.layer_ratios, names, "method.layer_ratios")
        out = {}
        for g in groups:
            n = model.get_submodule(g.conv).out_channels
            ratio = c.layer_ratios.get(g.name, c.pruning_ratio)
            out[g.name] = n if g.name in c.skip else keep_count(math.floor(n * (1 - ratio) + 1e-9), n,
                                                                 c.min_channels, c.round_to)
        return out

    def loss_point(self, model: nn.Module, consumers: Tuple[str, ...]) -> Optional[str]:
        """The auxiliary classifier of the consumers' segment: the first whose point ends at or
        after the last consumer; None: the final classifier."""
        order = [n for n, _ in model.named_modules()]
        index = {n: i for i, n in enumerate(order)}
        ends = {n: max(i for i, m in enumerate(order) if m == n or m.startswith(n + ".")) for n in order}
        last = max(index[c] for c in consumers)
        container = self.heads(model)
        after = [(ends[path], name) for name, path in container.points.items() if ends[path] >= last]
        return min(after)[1] if after else None

    def scores(self, model, data) -> Dict[str, torch.Tensor]:
        container = self.heads(model)
        groups = conv_groups(model)
        counts = self.counts(model)
        device = next(model.parameters()).device
        gen = torch.Generator(device=data.device).manual_seed(self.seed)
        batches = list(data.sample_batches(self.cfg.num_images, self.cfg.batch_size, gen))
        if not batches:
            raise PrunebenchError("dcp saw no images: method.num_images must be >= 1 and the training set non-empty")
        masks: Dict[str, torch.Tensor] = {}  # group -> 0/1 per channel, for the groups chosen so far

        def apply_mask(name, offset):
            def hook(module, inputs, output):
                m = masks.get(name)
                return None if m is None else scale_channels(output, offset, m)
            return hook

        # the masks come first, so that an auxiliary classifier reading the same BatchNorm sees them
        handles = [model.get_submodule(path).register_forward_hook(apply_mask(g.name, offset), prepend=True)
                   for g in groups for path, offset in g.normalized()]
        out = {}
        try:
            with evaluating(model):
                for g in groups:
                    width = model.get_submodule(g.conv).out_channels
                    if counts[g.name] >= width:
                        out[g.name] = torch.ones(width)
                        continue
                    out[g.name] = self.greedy(model, container, g, width, counts[g.name], batches, masks)
                    chosen = torch.zeros(width, device=device)
                    chosen[out[g.name].topk(counts[g.name]).indices.to(device)] = 1.0
                    masks[g.name] = chosen
        finally:
            for h in handles:
                h.remove()
            container.features = {}
        return out

    def greedy(self, model, container: Heads, group, width: int, count: int, batches, masks) -> torch.Tensor:
        """Choose ``count`` of ``group``'s ``width`` channels by the gradient norm of the combined
        loss; return scores that rank them first, in the order chosen."""
        consumers = group.consumers
        sl = {c: slice(group.offset(k), group.offset(k) + width) for k, c in enumerate(consumers)}
        point = self.loss_point(model, consumers)
        weights = {c: model.get_submodule(c).weight.detach() for c in consumers}
        # the original model's consumer outputs: no masks, trained weights
        targets, saved = [], dict(masks)
        masks.clear()
        with torch.no_grad():
            for x, _ in batches:
                targets.append(self.forward_with(model, container, consumers, None, x, {})[0])
        masks.update(saved)
        chosen = torch.zeros(width, dtype=torch.bool, device=next(iter(weights.values())).device)
        order: List[int] = []
        norms = torch.zeros(width)
        rw, dw = self.cfg.reconstruction_weight, self.cfg.discrimination_weight
        for _ in range(count):
            keep = chosen.to(next(iter(weights.values())).dtype)
            w_eff = {}
            for c, w in weights.items():  # the consumer's inputs outside the group as they are
                inputs = torch.ones(w.shape[1], dtype=w.dtype, device=w.device)
                inputs[sl[c]] = keep
                w_eff[c] = (w * inputs.view(1, -1, *[1] * (w.dim() - 2))).requires_grad_()
            grads = {c: torch.zeros_like(w) for c, w in weights.items()}
            for (x, y), target in zip(batches, targets):
                with torch.enable_grad():
                    outputs, logits = self.forward_with(model, container, consumers, point, x, w_eff)
                    loss = dw * F.cross_entropy(logits, y)
                    loss = loss + rw * sum(F.mse_loss(outputs[c], target[c]) for c in consumers)
                    for c, gr in zip(consumers, torch.autograd.grad(loss, [w_eff[c] for c in consumers])):
                        grads[c] += gr
            sq = sum(gr[:, sl[c]].transpose(0, 1).reshape(width, -1).square().sum(1) for c, gr in grads.items())
            norms = sq.sqrt().cpu()
            pick = int(torch.where(chosen.cpu(), torch.full_like(norms, -1.0), norms).argmax())
            chosen[pick] = True
            order.append(pick)
        scores = 0.5 * norms / norms.max().clamp_min(1e-30)  # the others, below every chosen one
        scores[order] = 1.0 + torch.arange(count, 0, -1, dtype=torch.float32) / count
        return scores

    def forward_with(self, model, container: Heads, consumers, point, x, w_eff):
        """The consumers' outputs and the segment's logits with the consumers' weights ``w_eff``."""
        outputs: Dict[str, torch.Tensor] = {}
        handles = [model.get_submodule(c).register_forward_hook(self.recorder(outputs, c)) for c in consumers]
        try:
            logits = torch.func.functional_call(model, {f"{c}.weight": w for c, w in w_eff.items()}, (x,))
        finally:
            for h in handles:
                h.remove()
        if point is not None:
            logits = container.heads[point](container.features[point])
        container.features = {}
        return outputs, logits

    @staticmethod
    def recorder(outputs, name):
        def hook(module, inputs, output):
            outputs[name] = output
        return hook
