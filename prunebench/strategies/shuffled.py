"""The shuffled mask (Frankle, Dziugaite, Roy & Carbin, "Pruning Neural Networks at
Initialization: Why Are We Missing the Mark?", ICLR 2021): the pruned stage's weight-level
mask permuted at random within each layer, so that every layer keeps as many weights as
pruning kept but not the ones it chose, re-initialised as Scratch-E/B are (the kept weights
at the density-corrected scale) and trained with the unpruned model's epochs
(``strategy.shuffled.budget: scratch_e``) or Scratch-B's budget (``scratch_b``). If it matches
Scratch-E/B, the method found per-layer densities, not which weights matter. Weight-level
methods only."""
from prunebench.config import ShuffledConfig
from prunebench.errors import PrunebenchError
from prunebench.pruning.masks import shuffled_masks, sparse_init
from prunebench.strategies.base import Strategy
from prunebench.strategies.scratch_b import budget, budget_values, check as check_scratch_b

BUDGETS = ("scratch_e", "scratch_b")
SHUFFLE_SEED_OFFSET = 2_000_003  # the shuffle's generator: seed + this


class Shuffled(Strategy):
    name = "shuffled"
    Config = ShuffledConfig
    keyed_by = ("shuffled",)

    def cache_values(self, cfg):
        out = super().cache_values(cfg)
        return {**out, "scratch_b": budget_values(cfg)} if cfg.strategy.shuffled.budget == "scratch_b" else out

    def check(self, cfg):
        if cfg.strategy.shuffled.budget not in BUDGETS:
            raise PrunebenchError(f"strategy.shuffled.budget must be one of {', '.join(BUDGETS)}, got "
                                  f"{cfg.strategy.shuffled.budget!r}")
        if cfg.strategy.shuffled.budget == "scratch_b":
            check_scratch_b(cfg)

    def applies(self, run):
        return run.kind == "weight"

    def budget(self, run):
        if run.cfg.strategy.shuffled.budget == "scratch_b":
            b = budget(run, run.figure("pruned", "flops"))
            return b["recipe"], b["formula"]
        return run.recipe, f"{run.recipe.epochs} epochs (the unpruned model's)"

    def plan(self, run):
        budget_known = run.cfg.strategy.shuffled.budget == "scratch_e" or run.figure("pruned", "flops")
        epochs = self.budget(run)[0].epochs if budget_known else None
        return {"spec": run.pruned_spec(), "epochs": epochs, "note": "pruned mask shuffled within each layer"}

    def train(self, run, stage):
        masks = shuffled_masks(run.masks(), run.cfg.seed + SHUFFLE_SEED_OFFSET)
        model = run.fresh(run.pruned_spec(), reinit=True)
        sparse_init(model, masks)
        recipe, formula = self.budget(run)
        return run.trained(stage, model, recipe, masks=masks).after(
            lambda m: {**m, "epochs_formula": formula,
                       "note": "pruned mask shuffled within each layer, re-initialised; non-zero counts"})
