"""The lottery ticket's control (Frankle & Carbin, ICLR 2019, "random reinitialization"; Liu et
al. 2019 Sec. 6 compare it): the lottery row's mask (or, with ``strategy.lottery.structured``,
its pruned architecture) with the kept weights drawn afresh from the model's own initialiser,
not reset to the unpruned model's init, trained with the same recipe as the lottery row (the
unpruned model's). Unlike Scratch-E, the kept weights are not rescaled for the layer's density,
so the only difference from the lottery row is the init. Runs where the lottery row runs."""
from prunebench.strategies.base import Strategy


class Reinit(Strategy):
    name = "reinit"

    def applies(self, run):
        return run.kind == "weight" or run.cfg.strategy.lottery.structured

    def plan(self, run):
        return {"spec": run.pruned_spec(), "epochs": run.recipe.epochs,
                "note": "the lottery's mask, weights re-drawn from the initialiser"}

    def train(self, run, stage):
        masks = run.masks()
        model = run.fresh(run.pruned_spec(), reinit=True)  # a weight-level pruned spec is the unpruned architecture
        note = "re-initialised (no density rescaling), the unpruned recipe" + ("; non-zero counts" if masks else "")
        return run.trained(stage, model, run.recipe, masks=masks).after(lambda m: {**m, "note": note})
