"""The lottery ticket (Frankle & Carbin, ICLR 2019), as Liu et al. 2019 compare it:
the weight-level pruned mask with the kept weights reset to the unpruned model's
initialisation (or to its weights after epoch k, ``strategy.lottery.rewind_epoch``),
trained with the unpruned model's recipe. Structured methods: not applicable."""
from prunebench import atomic
from prunebench.errors import PrunebenchError
from prunebench.strategies.base import Strategy


class Lottery(Strategy):
    name = "lottery"
    needs = ("unpruned", "pruned")  # the unpruned stage's snapshots
    keyed_by = ("lottery",)

    def check(self, cfg):
        k = cfg.strategy.lottery.rewind_epoch
        if not 0 <= k <= cfg.schedule.epochs:
            raise PrunebenchError(f"strategy.lottery.rewind_epoch must lie in [0, {cfg.schedule.epochs}] (the "
                                  f"unpruned model's epochs; 0: its init), got {k}")

    def keeps(self, cfg):
        k = cfg.strategy.lottery.rewind_epoch
        return {0: "init.pt", **({k: f"epoch{k}.pt"} if k else {})}

    def applies(self, run):
        return run.kind == "weight"

    def plan(self, run):
        k = run.cfg.strategy.lottery.rewind_epoch
        return {"spec": run.base_spec, "epochs": run.recipe.epochs,
                "note": f"kept weights reset to the unpruned model's {'init' if k == 0 else f'epoch {k}'}"}

    def train(self, run, stage):
        k = run.cfg.strategy.lottery.rewind_epoch
        unpruned = run.folder("unpruned")
        path = unpruned / self.keeps(run.cfg)[k]
        if not path.exists():
            raise PrunebenchError(f"the lottery strategy rewinds to epoch {k} of the unpruned model, but {path} "
                                  f"was not saved when that stage trained; delete {unpruned} to retrain it "
                                  f"with strategy.lottery.rewind_epoch={k}")
        model = run.fresh(run.base_spec)
        model.load_state_dict(atomic.load(path))
        note = f"kept weights reset to the unpruned model's {'init' if k == 0 else f'epoch {k}'}; non-zero counts"
        return run.trained(stage, model, run.recipe, masks=run.masks()).after(
            lambda metrics: {**metrics, "note": note})
