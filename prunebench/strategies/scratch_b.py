"""Scratch-B: the pruned architecture re-initialised and trained with the unpruned
model's computation budget, ceil(E x FLOPs_full / FLOPs_pruned) epochs, optionally
capped at ``strategy.scratch_b.max_factor`` x E (Liu et al. 2019: 2x on ImageNet).
The budget is also the uniform and guided baselines'. Where the authors give Scratch-B's
epochs and lr steps themselves (SSS on ImageNet: 117, 145 and 179 epochs), they are
``strategy.scratch_b.epochs`` / ``milestones``, which only this row reads."""
import math
from typing import Dict, Optional

from prunebench.stages import settings
from prunebench.strategies.base import Strategy, check_own_recipe, from_scratch, own_recipe, own_recipe_note, with_note

OWN = ("epochs", "milestones")  # strategy.scratch_b settings of the Scratch-B row alone


def scratch_b_epochs(epochs: int, flops_full: int, flops_pruned: int,
                     max_factor: Optional[float] = None) -> Dict:
    """Scratch-B: as many epochs as give the pruned model the unpruned model's
    training budget, ceil(E x F_full / F_pruned), optionally capped at max_factor x E."""
    n = -(-epochs * int(flops_full) // int(flops_pruned))  # exact integer ceiling
    formula = f"ceil({epochs} x {flops_full} / {flops_pruned}) = {n}"
    if max_factor is not None and n > math.ceil(max_factor * epochs):
        n = math.ceil(max_factor * epochs)
        formula += f", capped at {max_factor:g} x {epochs} = {n}"
    return {"epochs": n, "formula": formula, "flops_full": int(flops_full), "flops_pruned": int(flops_pruned)}


def budget(run, flops: int) -> Dict:
    """Scratch-B's epochs for a model of ``flops`` FLOPs in ``run`` (a RunView)."""
    return scratch_b_epochs(run.recipe.epochs, run.figure("unpruned", "flops"), flops,
                            run.cfg.strategy.scratch_b.max_factor)


def budget_values(cfg) -> Dict:
    """The settings of the budget formula, which key the uniform and guided rows too."""
    return settings(cfg.strategy.scratch_b, exclude=OWN)


class ScratchB(Strategy):
    name = "scratch_b"
    keyed_by = ("scratch_b",)

    def check(self, cfg):
        check_own_recipe("strategy.scratch_b", cfg.strategy.scratch_b)

    def own_budget(self, run) -> Optional[Dict]:
        """The epochs (and how they were found), or None while the pruned FLOPs are unknown."""
        own = run.cfg.strategy.scratch_b
        if own.epochs is not None:
            return {"epochs": int(own.epochs), "formula": f"{own.epochs} epochs (strategy.scratch_b.epochs)"}
        flops = run.figure("pruned", "flops")
        return budget(run, flops) if flops else None

    def recipe(self, run, b: Dict):
        return own_recipe(run.recipe.replace(epochs=b["epochs"]), run.cfg.strategy.scratch_b)

    def steps_note(self, run, b: Dict) -> str:
        """Its own lr steps in words; "" when it stretches the schedule's."""
        return own_recipe_note(self.recipe(run, b), "strategy.scratch_b", run.cfg.strategy.scratch_b, epochs=False)

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
        return run.trained(stage, model, self.recipe(run, b), masks=masks).after(
            lambda metrics: with_note({**metrics, "epochs_formula": b["formula"]}, steps))
