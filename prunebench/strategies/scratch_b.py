"""Scratch-B: the pruned architecture re-initialised and trained with the unpruned
model's computation budget, E x FLOPs_full / FLOPs_pruned epochs rounded up (or down,
``strategy.scratch_b.rounding``), optionally capped at ``strategy.scratch_b.max_factor`` x E
(Liu et al. 2019: 2x on ImageNet). The budget is also the uniform and guided baselines'.

``strategy.scratch_b``:

- ``flops``: how a weight-level pruned model's FLOPs count. ``nonzero``: masked weights
  excluded, so the masked model trains longer the more it is pruned. ``dense``: every weight,
  masked or not, i.e. the unpruned architecture's FLOPs, so Scratch-B trains E epochs. That
  is what Liu et al.'s released weight-level code computes: it counts the FLOPs of two freshly
  built dense models before the pruned weights are loaded (rethinking-network-pruning
  cifar/weight-level/cifar_B.py:184-186, imagenet/weight-level/main_B.py:112-116). A
  structured pruned model has no masked weights: both count the same.
- ``base_epochs``: the E of the formula (null: the schedule's epochs). With a value, the run
  lasts base_epochs x r (r = FLOPs_full / FLOPs_pruned) and its learning-rate milestones sit
  at the schedule's milestone epochs x r, rounded down, as soft filter pruning's longer
  scratch training does (rethinking-network-pruning cifar/soft-filter-pruning/
  pruning_resnet_longer_scratch.py:162-166: int(400 r) epochs, milestones [1, int(60 r),
  int(120 r), int(160 r)]). Without one, milestones stay fractions of the new length.
- ``epochs`` / ``milestones``: Scratch-B's own epochs and lr steps (fractions of those epochs)
  where the authors give them instead of the formula (SSS on ImageNet: 117, 145 and 179
  epochs); only this row reads them, the uniform and guided baselines keep the formula."""
import math
from typing import Dict, Optional

from prunebench.bounds import at_least
from prunebench.config import ScratchBConfig
from prunebench.stages import settings
from prunebench.strategies.base import Strategy, check_own_recipe, from_scratch, own_recipe, own_recipe_note, with_note

OWN = ("epochs", "milestones")  # strategy.scratch_b settings of the Scratch-B row alone


def scratch_b_epochs(epochs: int, flops_full: int, flops_pruned: int,
                     max_factor: Optional[float] = None, rounding: str = "ceil") -> Dict:
    """Scratch-B: as many epochs as give the pruned model the unpruned model's training budget,
    ceil(E x F_full / F_pruned) (``rounding: floor``: int()), optionally capped at max_factor x E."""
    if rounding == "floor":
        n = epochs * int(flops_full) // int(flops_pruned)  # exact integer floor
    else:
        n = -(-epochs * int(flops_full) // int(flops_pruned))  # exact integer ceiling
    formula = f"{'int' if rounding == 'floor' else 'ceil'}({epochs} x {flops_full} / {flops_pruned}) = {n}"
    if max_factor is not None and n > math.ceil(max_factor * epochs):
        n = math.ceil(max_factor * epochs)
        formula += f", capped at {max_factor:g} x {epochs} = {n}"
    return {"epochs": n, "formula": formula, "flops_full": int(flops_full), "flops_pruned": int(flops_pruned)}


def check(cfg) -> None:
    """The budget's ``strategy.scratch_b`` settings, before anything trains."""
    sb = cfg.strategy.scratch_b
    at_least("strategy.scratch_b.base_epochs", sb.base_epochs, 1, optional=True, null="the schedule's epochs")


def budget(run, flops: Optional[int], dense: bool = True) -> Dict:
    """Scratch-B's epochs and recipe for a model of ``flops`` FLOPs in ``run`` (a RunView):
    {"epochs", "formula", "flops_full", "flops_pruned", "recipe"}; with ``flops: dense`` a
    weight-level model counts as the unpruned architecture whatever ``flops`` says (``dense=False``:
    a model of its own, never masked, counts its ``flops``)."""
    sb, recipe = run.cfg.strategy.scratch_b, run.recipe
    full = run.figure("unpruned", "flops")
    dense = dense and sb.flops == "dense" and run.kind == "weight"
    if dense:
        flops = full
    base = sb.base_epochs if sb.base_epochs is not None else recipe.epochs
    b = scratch_b_epochs(base, full, flops, sb.max_factor, sb.rounding)
    if dense:
        b["formula"] += " (FLOPs counted dense: masked weights included)"
    milestones = list(recipe.milestones)
    if sb.base_epochs is not None:  # the schedule's milestone epochs x F_full / F_pruned, rounded down
        at = [round(m * recipe.epochs) * int(full) // int(flops) for m in recipe.milestones]
        milestones = [min(e, b["epochs"]) / b["epochs"] for e in at]
        b["formula"] += f", lr milestones at epochs {at}"
    b["recipe"] = recipe.replace(epochs=b["epochs"], milestones=milestones)
    return b


def budget_known(run) -> bool:
    """Whether the budget can be computed yet (the pruned FLOPs, or dense counting, are known)."""
    return bool(run.figure("pruned", "flops")) or run.cfg.strategy.scratch_b.flops == "dense" and run.kind == "weight"


def budget_values(cfg) -> Dict:
    """The settings of the budget formula, which key the uniform and guided rows too."""
    return settings(cfg.strategy.scratch_b, exclude=OWN)


class ScratchB(Strategy):
    name = "scratch_b"
    Config = ScratchBConfig
    keyed_by = ("scratch_b",)

    def check(self, cfg):
        check(cfg)
        check_own_recipe("strategy.scratch_b", cfg.strategy.scratch_b)

    def own_budget(self, run) -> Optional[Dict]:
        """The epochs, recipe and how they were found, or None while the pruned FLOPs are unknown."""
        own = run.cfg.strategy.scratch_b
        if own.epochs is not None:
            b = {"epochs": int(own.epochs), "formula": f"{own.epochs} epochs (strategy.scratch_b.epochs)",
                 "recipe": run.recipe}
        elif budget_known(run):
            b = budget(run, run.figure("pruned", "flops"))
        else:
            return None
        b["recipe"] = own_recipe(b["recipe"].replace(epochs=b["epochs"]), own)
        return b

    def steps_note(self, run, b: Dict) -> str:
        """Its own lr steps in words; "" when it stretches the schedule's."""
        return own_recipe_note(b["recipe"], "strategy.scratch_b", run.cfg.strategy.scratch_b, epochs=False)

    def plan(self, run):
        b = self.own_budget(run)
        if b is None:
            return {"spec": run.pruned_spec(), "epochs": None, "note": "epochs follow from the pruned FLOPs"}
        return {"spec": run.pruned_spec(), "epochs": b["epochs"],
                "note": "; ".join(n for n in (b["formula"], self.steps_note(run, b)) if n)}

    def train(self, run, stage):
        model, masks = from_scratch(run)
        b = self.own_budget(run)
        steps = self.steps_note(run, b)
        return run.trained(stage, model, b["recipe"], masks=masks).after(
            lambda metrics: with_note({**metrics, "epochs_formula": b["formula"]}, steps))
