"""Scratch-E: the pruned architecture re-initialised and trained for as many epochs
as the unpruned model (Liu et al. 2019), or with a recipe of its own where the authors
trained it apart from the unpruned model (``strategy.scratch_e.epochs`` / ``milestones``:
on ImageNet SSS they trained 100 epochs, lr steps at 30, 60 and 90). Weight-level: the
kept weights are re-drawn at the density-corrected scale
(:func:`prunebench.pruning.masks.sparse_init`)."""
from prunebench.config import ScratchEConfig
from prunebench.stages import settings
from prunebench.strategies.base import Strategy, check_own_recipe, from_scratch, own_recipe, own_recipe_note, with_note


class ScratchE(Strategy):
    name = "scratch_e"
    Config = ScratchEConfig

    def check(self, cfg):
        check_own_recipe("strategy.scratch_e", cfg.strategy.scratch_e)

    def cache_values(self, cfg):
        own = settings(cfg.strategy.scratch_e)
        return {"scratch_e": own} if own else {}  # unset: the key Scratch-E had before it had settings

    def recipe(self, run):
        return own_recipe(run.recipe, run.cfg.strategy.scratch_e)

    def own_note(self, run) -> str:
        """Its own recipe in words; "" when it trains the unpruned model's."""
        return own_recipe_note(self.recipe(run), "strategy.scratch_e", run.cfg.strategy.scratch_e)

    def plan(self, run):
        own = self.own_note(run)
        return {"spec": run.pruned_spec(), "epochs": self.recipe(run).epochs,
                "note": "re-initialised" + (f"; {own}" if own else "")}

    def train(self, run, stage):
        model, masks = from_scratch(run)
        training = run.trained(stage, model, self.recipe(run), masks=masks)
        own = self.own_note(run)
        return training.after(lambda metrics: with_note(metrics, own)) if own else training
