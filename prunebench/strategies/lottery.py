"""The lottery ticket (Frankle & Carbin, ICLR 2019), as Liu et al. 2019 compare it:
the weight-level pruned mask with the kept weights reset to the unpruned model's
initialisation (or to its weights after epoch k, ``strategy.lottery.rewind_epoch``),
trained with the unpruned model's recipe. Structured methods: not applicable."""
from prunebench import atomic, models
from prunebench.errors import PrunebenchError
from prunebench.stages import Stage
from prunebench.strategies.base import Strategy


class Lottery(Strategy):
    name = "lottery"
    keyed_by = ("lottery",)

    def check(self, cfg):
        k = cfg.strategy.lottery.rewind_epoch
        if not 0 <= k <= cfg.schedule.epochs:
            raise PrunebenchError(f"strategy.lottery.rewind_epoch must lie in [0, {cfg.schedule.epochs}] (the "
                                  f"unpruned model's epochs; 0: its init), got {k}")

    def applies(self, run):
        return run.method.kind == "weight"

    def plan(self, run):
        k = run.cfg.strategy.lottery.rewind_epoch
        return {"spec": run.base_spec, "epochs": run.recipe.epochs,
                "note": f"kept weights reset to the unpruned model's {'init' if k == 0 else f'epoch {k}'}"}

    def train(self, run, stage):
        k = run.cfg.strategy.lottery.rewind_epoch
        unpruned = Stage(run.cache, "unpruned", run.common)
        path = run.snapshots(unpruned)[k]
        if not path.exists():
            raise PrunebenchError(f"the lottery strategy rewinds to epoch {k} of the unpruned model, but {path} "
                                  f"was not saved when that stage trained; delete {unpruned.dir} to retrain it "
                                  f"with strategy.lottery.rewind_epoch={k}")
        with run.rng_lock:  # building draws a (discarded) init from the global RNG
            model = models.build(run.base_spec)
        model.load_state_dict(atomic.load(path))
        out = run.trained(stage, model.to(run.device), run.recipe, masks=run.masks())
        return {**out, "note": f"kept weights reset to the unpruned model's {'init' if k == 0 else f'epoch {k}'}; "
                               "non-zero counts"}
