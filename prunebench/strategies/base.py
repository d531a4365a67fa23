"""What a retraining strategy is: one row of the table after ``pruned``. A strategy
names itself (the row and the stage kind), the rows it needs, the nodes of
``cfg.strategy`` that key its cache (beside the pruned stage, the seed and the
schedule), the files it needs the unpruned stage to keep, the metrics of its row that
are table columns, whether it applies to a method, what it will train (for
``dry_run``) and its work. The protocol (:mod:`prunebench.protocol`) loops over the
strategies a run asks for and holds no strategy-specific branch.

A strategy sees its run through two small protocols: :class:`RunView` (what it may read,
in a run and in a dry run) and :class:`RunBench` (what it may do in a run:
:class:`prunebench.bench.Bench`). Its work returns the stage's metrics or a
:class:`~prunebench.train.job.Training` (what to train, and what to do when it ends)."""
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Dict, Optional, Protocol, Tuple, Union

import torch
from omegaconf import DictConfig
from torch import nn

from prunebench.bounds import at_least, fractions
from prunebench.pruning.masks import sparse_init
from prunebench.stages import Stage, settings
from prunebench.train import Recipe, TrainHooks
from prunebench.train.job import Training


class RunView(Protocol):
    """What a strategy may read of its run."""
    cfg: DictConfig
    kind: str  # the method's: structured (channels removed) | weight (weights masked)
    family: str  # the groups that describe its widths (prunebench.models.FAMILIES)
    base_spec: Dict  # the unpruned architecture
    input_shape: Tuple[int, int, int]
    recipe: Recipe  # the unpruned model's

    def figure(self, row: str, what: str) -> Optional[Any]:
        """A metric of a row (``params``, ``flops``, ...): a finished row's, or (dry run) the
        predicted architecture's; None when not known yet."""

    def pruned_spec(self) -> Optional[Dict]:
        """The pruned architecture (None in a dry run when it follows from trained scores)."""


class RunBench(RunView, Protocol):
    """What a strategy may do in a run."""

    def fresh(self, spec: Dict, reinit: bool = False) -> nn.Module:
        """A newly initialised model of ``spec`` (``reinit``: the strategies' own seed)."""

    def load(self, row: str) -> nn.Module:
        """The model a finished row saved, with its weights."""

    def masks(self) -> Optional[Dict[str, torch.Tensor]]:
        """The pruned row's weight-level masks (None for structured methods)."""

    def folder(self, row: str) -> Path:
        """The stage folder of a finished row."""

    def trained(self, stage: Stage, model: nn.Module, recipe: Recipe, hooks: Optional[TrainHooks] = None,
                masks: Optional[Dict[str, torch.Tensor]] = None) -> Training:
        """The training of ``model`` in ``stage`` (``hooks``: a strategy's, distillation's) and its measurement after."""


Outcome = Union[Dict[str, Any], Training]


def from_scratch(run: RunBench) -> Tuple[nn.Module, Optional[Dict]]:
    """The pruned architecture re-initialised, with its weight-level masks (None for
    structured methods); masked kept weights re-drawn at the density-corrected scale."""
    masks = run.masks()
    model = run.fresh(run.pruned_spec(), reinit=True)
    if masks:
        sparse_init(model, masks)  # draws on from fresh()'s seed
    return model, masks


def own_recipe(recipe: Recipe, node) -> Recipe:
    """``recipe`` with a strategy's own ``epochs`` and ``milestones`` (fractions of those epochs)
    where its config ``node`` sets them (``strategy.scratch_e``, ``strategy.scratch_b``)."""
    if node.epochs is not None:
        recipe = recipe.replace(epochs=int(node.epochs))
    if node.milestones is not None:
        recipe = recipe.replace(milestones=[float(m) for m in node.milestones])
    return recipe


def check_own_recipe(prefix: str, node) -> None:
    """A one-line error on a strategy's own epochs or milestones that cannot be trained."""
    at_least(f"{prefix}.epochs", node.epochs, 1, optional=True, null="the default")
    fractions(f"{prefix}.milestones", node.milestones, null="the schedule's")


def own_recipe_note(recipe: Recipe, prefix: str, node, epochs: bool = True) -> str:
    """What a strategy's own settings ``node`` (``prefix``: its path) set of ``recipe``, in words
    for its note ("" when it sets nothing); ``epochs``: say the epochs too."""
    parts = []
    if epochs and node.epochs is not None:
        parts.append(f"{recipe.epochs} epochs ({prefix}.epochs)")
    if node.milestones is not None:
        steps = ", ".join(map(str, recipe.milestone_epochs())) or "none"
        parts.append(f"lr x{recipe.gamma:g} after epochs {steps} ({prefix}.milestones)")
    return ", ".join(parts)


INHERITED = ("unpruned", "sparse", "pruned")  # the pipeline of a row that starts from the pruned weights


def own_epochs(cfg, node) -> int:
    """A fine-tuning strategy's epochs: its ``node.epochs``, else ``strategy.finetune.epochs``."""
    return int(node.epochs) if node.epochs is not None else int(cfg.strategy.finetune.epochs)


def check_epochs(prefix: str, node) -> None:
    at_least(f"{prefix}.epochs", node.epochs, 1, optional=True, null="strategy.finetune.epochs")


def with_note(metrics: Dict[str, Any], note: str) -> Dict[str, Any]:
    """``metrics`` with ``note`` (if any) added to the note it may already carry."""
    if not note:
        return metrics
    return {**metrics, "note": "; ".join(n for n in (metrics.get("note"), note) if n)}


class Strategy(ABC):
    name: str = ""
    # the schema of its node cfg.strategy.<name> (prunebench.config): None where it reads none of its own.
    # A strategy of your own names its class there: strategy.<name>._target_: package.module.Class
    Config: ClassVar[Optional[type]] = None
    needs: Tuple[str, ...] = ("pruned",)  # rows that must have finished ok
    keyed_by: Tuple[str, ...] = ()  # nodes of cfg.strategy whose non-default settings key the cache
    columns: Tuple[str, ...] = ()  # metrics of its row that the result table shows as columns
    pruned_model: bool = True  # trains the pruned architecture (weight-level: under the pruned mask)
    # rows whose training the row's result stands on (its pipeline's compute: prunebench.accounting); a row
    # trained from scratch on an architecture of its own counts its own training alone
    pipeline: Tuple[str, ...] = ()

    def check(self, cfg) -> None:
        """Raise PrunebenchError on settings of this strategy that cannot work (before any training)."""

    def applies(self, run: RunView) -> bool:
        """False: the strategy does not apply to this run's method (it is skipped, with a log line)."""
        return True

    def keeps(self, cfg) -> Dict[int, str]:
        """Weights of the unpruned training this strategy reads: {epoch: file name in its stage
        folder} (0: the init). Every run's unpruned stage keeps what any strategy asks for."""
        return {}

    def cache_values(self, cfg) -> Dict[str, Any]:
        return {node: settings(cfg.strategy[node]) for node in self.keyed_by}

    def plan(self, run: RunView) -> Dict[str, Any]:
        """What the stage will train, for ``dry_run``: {"spec": architecture or None when it
        depends on results not there yet, "epochs": int or None, "note": str}."""
        return {"spec": run.pruned_spec(), "epochs": run.recipe.epochs, "note": ""}

    @abstractmethod
    def train(self, run: RunBench, stage: Stage) -> Outcome:
        """The stage's work: its training (``run.trained``), or its metrics."""
