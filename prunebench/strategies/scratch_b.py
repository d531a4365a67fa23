"""Scratch-B: the pruned architecture re-initialised and trained with the unpruned
model's computation budget, ceil(E x FLOPs_full / FLOPs_pruned) epochs, optionally
capped at ``strategy.scratch_b.max_factor`` x E (Liu et al. 2019: 2x on ImageNet).
The budget is also the uniform and guided baselines'."""
import math
from typing import Dict, Optional

from prunebench.strategies.base import Strategy, from_scratch


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


class ScratchB(Strategy):
    name = "scratch_b"
    keyed_by = ("scratch_b",)

    def plan(self, run):
        flops = run.figure("pruned", "flops")
        b = budget(run, flops) if flops else None
        return {"spec": run.pruned_spec(), "epochs": b and b["epochs"], "note": b["formula"] if b else
                "epochs follow from the pruned FLOPs"}

    def train(self, run, stage):
        model, masks = from_scratch(run)
        b = budget(run, run.figure("pruned", "flops"))
        return run.trained(stage, model, run.recipe.replace(epochs=b["epochs"]), masks=masks).after(
            lambda metrics: {**metrics, "epochs_formula": b["formula"]})
