"""Scratch-B: the pruned architecture re-initialised and trained with the unpruned
model's computation budget, ceil(E x FLOPs_full / FLOPs_pruned) epochs, optionally
capped at ``strategy.scratch_b.max_factor`` x E (Liu et al. 2019: 2x on ImageNet)."""
import math
from typing import Dict, Optional

from prunebench.strategies.base import Strategy


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


class ScratchB(Strategy):
    name = "scratch_b"
    keyed_by = ("scratch_b",)

    def plan(self, run):
        flops = run.planned_flops("pruned")
        b = run.budget(flops) if flops else None
        return {"spec": run.pruned_spec(), "epochs": b and b["epochs"], "note": b["formula"] if b else
                "epochs follow from the pruned FLOPs"}

    def train(self, run, stage):
        model, masks = run.from_scratch()
        b = run.budget(run.results["pruned"]["flops"])
        return {**run.trained(stage, model, run.with_recipe(epochs=b["epochs"]), masks=masks),
                "epochs_formula": b["formula"]}
