"""Fine-tuning with a 1-cycle schedule from a large learning rate (Le & Hua, "Network Pruning
That Matters: A Case Study on Retraining Variants", ICLR 2021, after Smith's 1-cycle policy):
the pruned model keeps its inherited weights; the lr rises linearly from lr / div_factor to lr
over the first ``warmup`` fraction of the epochs, then falls linearly to lr / div_factor x
``final_factor`` in the last epoch (``warmup: 0``: a linear decay from lr). The lr is set per
epoch (:func:`one_cycle_lrs`); lr defaults to the schedule's (the unpruned model's peak)."""
from typing import List

from prunebench.bounds import at_least, positive, within
from prunebench.config import OneCycleConfig
from prunebench.strategies.base import INHERITED, Strategy, check_epochs, own_epochs


def one_cycle_lrs(epochs: int, lr: float, warmup: float, div_factor: float, final_factor: float) -> List[float]:
    """The lr of each of ``epochs`` epochs: a linear rise over round(warmup x epochs) epochs from
    lr / div_factor (excluded: the rise ends at lr), then a linear fall from lr to lr / div_factor x final_factor."""
    start, end = lr / div_factor, lr / div_factor * final_factor
    up = int(round(warmup * epochs))
    up = min(up, epochs - 1)
    rise = [start + (lr - start) * (e + 1) / up for e in range(up)] if up else []
    down = epochs - up
    if not up:
        fall = [lr - (lr - end) * e / (down - 1) for e in range(down)] if down > 1 else [lr]
    else:
        fall = [lr - (lr - end) * (e + 1) / down for e in range(down)]
    return rise + fall


class OneCycle(Strategy):
    name = "one_cycle"
    Config = OneCycleConfig
    keyed_by = ("one_cycle", "finetune")
    pipeline = INHERITED

    def check(self, cfg):
        node = cfg.strategy.one_cycle
        check_epochs("strategy.one_cycle", node)
        positive("strategy.one_cycle.lr", node.lr, optional=True, null="the schedule's")
        within("strategy.one_cycle.warmup", node.warmup, 0, 1, open_high=True, what="the fraction of epochs rising")
        at_least("strategy.one_cycle.div_factor", node.div_factor, 1)
        within("strategy.one_cycle.final_factor", node.final_factor, 0, 1)

    def recipe(self, run):
        node = run.cfg.strategy.one_cycle
        e = own_epochs(run.cfg, node)
        lr = float(node.lr) if node.lr is not None else run.recipe.lr
        lrs = one_cycle_lrs(e, lr, float(node.warmup), float(node.div_factor), float(node.final_factor))
        return run.recipe.replace(epochs=e, lr=lrs[0], milestones=[], warmup_epochs=0, lr_epochs=lrs)

    def note(self, run) -> str:
        lrs = self.recipe(run).lr_epochs
        return f"inherited weights, 1-cycle lr {lrs[0]:.3g} -> {max(lrs):.3g} -> {lrs[-1]:.3g}"

    def plan(self, run):
        return {"spec": run.pruned_spec(), "epochs": self.recipe(run).epochs, "note": self.note(run)}

    def train(self, run, stage):
        return run.trained(stage, run.load("pruned"), self.recipe(run), masks=run.masks()).after(
            lambda m: {**m, "note": self.note(run)})
