"""What a pruning method is. A method scores channels (structured) or weights
(weight-level); selection, surgery and retraining are shared. Optional parts:

- a sparse stage (``sparse = True``): training with the method's hooks
  (``on_batch``, ``penalty``, ``regularize``, ``after_step``, ``on_epoch_end`` of
  :class:`TrainHooks`), from scratch or from the unpruned model;
- training-time modules (``attach``/``detach``): scaling factors or gates added
  for the sparse stage and folded away before surgery;
- its own selection (``select``), e.g. a statistical threshold;
- reconstruction after surgery (``reconstruct``): refitting the next layers.
"""
from abc import ABC, abstractmethod
from dataclasses import dataclass
import math
from typing import ClassVar, Dict, List, Optional, Tuple, Type

import torch
from torch import nn

from prunebench.config import MethodConfig
from prunebench.data import ImageData
from prunebench.errors import PrunebenchError
from prunebench.models import conv_groups, group_width
from prunebench.models.groups import ChannelGroup
from prunebench.pruning.masks import select_weights
from prunebench.pruning.selection import iteration_config, keep_count, select
from prunebench.train.hooks import TrainHooks


def require_batchnorm(groups: List[ChannelGroup], method: str) -> None:
    """An error naming the groups whose channels never come out of a BatchNorm, for methods that
    read or scale channels there."""
    missing = [g.name for g in groups if not g.normalized()]
    if missing:
        raise PrunebenchError(f"{method} reads each channel after its BatchNorm, and groups {missing[:5]} have none; "
                              f"use a model with BatchNorm (e.g. vgg16_bn) or a method that reads the filters "
                              f"(l1_norm, fpgm, thinet)")


@dataclass
class StatisticsConfig(MethodConfig):
    num_images: int = 1000  # training images the statistics are collected over (fewer if the set is smaller)
    batch_size: int = 250  # images per forward pass while collecting


def refuse_transformer(name: str) -> None:
    """The one-line refusal of method ``name`` on a transformer, naming the methods that run."""
    from prunebench.methods import METHODS  # the registry imports this module

    units = sorted(n for n, c in METHODS.items() if c.kind == "structured" and c.scores_units)
    raise PrunebenchError(f"{name} scores convolution channels (through BatchNorm, feature maps or their "
                          f"reconstruction), not attention heads or MLP units; on a transformer use one of "
                          f"{', '.join(units)} or a weight-level method (magnitude, snip)")


class Method(TrainHooks, ABC):
    """A pruning method. ``cfg`` is its node of the composed config, typed by ``Config``: a
    subclass of :class:`MethodConfig` declaring the method's own settings."""

    Config: ClassVar[Type[MethodConfig]] = MethodConfig

    kind: str = "structured"  # structured: channels removed | weight: weights masked, architecture kept
    sparse: bool = False  # trains its own (sparse) stage before pruning
    prune_at_init: bool = False  # scores the freshly initialised model, not the trained one (SNIP)
    prunes: str = "filters"  # structured: which groups it scores (models.FAMILIES): filters | channels (every group)
    # structured: its score is defined on any layer's output units from the weights and the loss alone, so it
    # scores a transformer's attention heads (q/k/v rows) and MLP units; others read BatchNorm or feature maps
    scores_units: bool = False
    paper: str = ""

    def __init__(self, cfg, seed: int = 0):
        self.cfg = cfg
        self.seed = seed
        self.kind = self.kind_of(cfg)

    @classmethod
    def kind_of(cls, cfg) -> str:
        """The method's kind under ``cfg`` (structured | weight); most methods have one."""
        return cls.kind

    @property
    def family(self) -> str:
        """The family of groups that describes the run's widths (``widths.json``, the uniform and
        guided baselines): the one it prunes; weight-level methods: every group the model lists."""
        return self.prunes if self.kind == "structured" else "channels"

    def groups(self, model: nn.Module) -> List[ChannelGroup]:
        """The groups it scores: the convolutions' filters (:func:`conv_groups`), or every group."""
        return conv_groups(model) if self.prunes == "filters" else model.channel_groups()

    def check_model(self, model: nn.Module) -> None:
        """Raise :class:`PrunebenchError` (one line, what to do) when the method cannot prune
        ``model`` (built on the meta device): called before anything trains."""
        if self.kind == "structured":
            self.groups(model)

    def check_transformer(self, model: nn.Module) -> None:
        """Refuse, by name, a structured method whose score is not defined on a transformer's
        heads and MLP units (a model with ``transformer = True``)."""
        if self.kind == "structured" and getattr(model, "transformer", False) and not self.scores_units:
            refuse_transformer(self.cfg.name)

    def sparse_settings(self) -> Dict:
        """The method settings that change the sparse stage (part of its cache key)."""
        return {}

    def attach(self, model: nn.Module, input_shape: Tuple[int, int, int]) -> None:
        """Add training-time parameters or modules to ``model`` (before the sparse stage, and
        before its checkpoints are loaded); ``input_shape`` is one image's (C, H, W). Must be
        deterministic: the same model and shape give the same parameter names and shapes."""

    def detach(self, model: nn.Module) -> None:
        """Fold away what ``attach`` added, leaving a plain model of the registry."""

    @abstractmethod
    def scores(self, model: nn.Module, data: ImageData) -> Dict[str, torch.Tensor]:
        """Structured: importance of every channel of every prunable layer, by group name.
        Weight-level: a tensor shaped like each prunable weight, by parameter name.
        Higher is kept. ``model`` still carries what ``attach`` added."""

    def select(self, model: nn.Module, scores: Dict[str, torch.Tensor], cfg) -> Dict[str, torch.Tensor]:
        """Structured: the channel indices each group keeps, under ``cfg`` (the method's config,
        or one step's of an iterated pruning). Default: the shared policies."""
        return select(scores, cfg)

    def weight_masks(self, model: nn.Module, data: ImageData, cfg,
                     kept: Optional[Dict[str, torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
        """Weight-level: the masks (True = kept) of the pruned stage, by parameter name, under
        ``cfg`` (the method's config, or one step's of an iterated pruning, whose masks so far
        are ``kept``). Default: the shared selection of :meth:`scores`."""
        return select_weights(self.scores(model, data), cfg, kept)

    def predicted_masks(self, model: nn.Module) -> Optional[Dict[str, torch.Tensor]]:
        """Weight-level: masks with the counts pruning will leave when the configuration alone
        decides them (which weights is unknown before training), else None: the dry run's
        non-zero params and FLOPs. ``model`` may live on the meta device."""
        return None

    def reconstruct(self, original: nn.Module, pruned: nn.Module, keep: Dict[str, torch.Tensor],
                    data: ImageData) -> None:
        """Adjust ``pruned`` in place after surgery (default: nothing)."""

    def predicted_widths(self, model: nn.Module) -> Optional[Dict[str, int]]:
        """The widths pruning will leave when the configuration alone decides them (per-layer
        ratios under the shared selection, also over iterations), else None: the dry run's
        pruned architecture. ``model`` may live on the meta device."""
        cfg = self.cfg
        if cfg.selection != "layer" or type(self).select is not Method.select:
            return None
        step = iteration_config(cfg)
        out = {}
        for g in self.groups(model):
            n = group_width(model, g)
            if g.name in cfg.skip:
                out[g.name] = n
                continue
            ratio = step.layer_ratios.get(g.name, step.pruning_ratio)
            for _ in range(cfg.iterations):  # as select(): int(n (1 - r)), at least min_channels
                n = keep_count(math.floor(n * (1 - ratio) + 1e-9), n, cfg.min_channels, cfg.round_to)
            out[g.name] = n
        return out
