"""Learning-rate rewinding (Renda, Frankle & Carbin, "Comparing Rewinding and Fine-tuning in
Neural Network Pruning", ICLR 2020): the pruned model keeps its inherited weights and retrains
for E' epochs with the learning rates of the last E' epochs of the unpruned model's schedule
(``strategy.lr_rewind.epochs``, default the fine-tune epochs): with the paper's CIFAR schedule
(160 epochs, lr 0.1, x0.1 at 80 and 120) and E' = 40, the 40 epochs run at 0.001, the
schedule's last 40; with E' = 90, 10 epochs at 0.1, 40 at 0.01 and 40 at 0.001 (per epoch:
:func:`rewound_lrs`)."""
from typing import List

from prunebench.config import LrRewindConfig
from prunebench.errors import PrunebenchError
from prunebench.strategies.base import INHERITED, Strategy, check_epochs, own_epochs
from prunebench.train.loop import Recipe, epoch_lr


def rewound_lrs(recipe: Recipe, epochs: int) -> List[float]:
    """The learning rates of the last ``epochs`` epochs of ``recipe`` (its milestones and warm-up), in order."""
    milestones = recipe.milestone_epochs()
    return [epoch_lr(recipe, milestones, e) for e in range(recipe.epochs - epochs, recipe.epochs)]


class LrRewind(Strategy):
    name = "lr_rewind"
    Config = LrRewindConfig
    keyed_by = ("lr_rewind", "finetune")  # E' defaults to the fine-tune epochs
    pipeline = INHERITED

    def check(self, cfg):
        node = cfg.strategy.lr_rewind
        check_epochs("strategy.lr_rewind", node)
        e = own_epochs(cfg, node)
        if e > cfg.schedule.epochs:
            raise PrunebenchError(f"strategy.lr_rewind.epochs (E' = {e}) rewinds the last E' epochs of the unpruned "
                                  f"schedule, which has {cfg.schedule.epochs}; set it <= {cfg.schedule.epochs}")

    def recipe(self, run):
        e = own_epochs(run.cfg, run.cfg.strategy.lr_rewind)
        lrs = rewound_lrs(run.recipe, e)
        return run.recipe.replace(epochs=e, lr=lrs[0], milestones=[], warmup_epochs=0, lr_epochs=lrs)

    def note(self, run) -> str:
        r = self.recipe(run)
        return (f"inherited weights, lr of epochs {run.recipe.epochs - r.epochs + 1}-{run.recipe.epochs} of the "
                f"unpruned schedule ({r.lr_epochs[0]:g} -> {r.lr_epochs[-1]:g})")

    def plan(self, run):
        return {"spec": run.pruned_spec(), "epochs": self.recipe(run).epochs, "note": self.note(run)}

    def train(self, run, stage):
        return run.trained(stage, run.load("pruned"), self.recipe(run), masks=run.masks()).after(
            lambda m: {**m, "note": self.note(run)})
