"""Scratch-E: the pruned architecture re-initialised and trained for as many epochs
as the unpruned model (Liu et al. 2019). Weight-level: the kept weights are
re-drawn at the density-corrected scale (:func:`prunebench.pruning.masks.sparse_init`)."""
from prunebench.strategies.base import Strategy, from_scratch


class ScratchE(Strategy):
    name = "scratch_e"

    def plan(self, run):
        return {"spec": run.pruned_spec(), "epochs": run.recipe.epochs, "note": "re-initialised"}

    def train(self, run, stage):
        model, masks = from_scratch(run)
        return run.trained(stage, model, run.recipe, masks=masks)
