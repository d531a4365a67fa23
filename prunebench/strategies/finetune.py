"""Fine-tuning: the pruned model keeps its inherited weights and trains on at a
constant, small learning rate (Liu et al. 2019 on CIFAR: 40 epochs at lr 0.001,
``strategy.finetune``)."""
from prunebench.config import FinetuneConfig
from prunebench.strategies.base import INHERITED, Strategy


class Finetune(Strategy):
    name = "finetune"
    Config = FinetuneConfig
    keyed_by = ("finetune",)
    pipeline = INHERITED

    def recipe(self, run):
        ft = run.cfg.strategy.finetune
        return run.recipe.replace(epochs=ft.epochs, lr=ft.lr, milestones=[], warmup_epochs=0)  # constant lr

    def plan(self, run):
        return {"spec": run.pruned_spec(), "epochs": run.cfg.strategy.finetune.epochs, "note": "inherited weights"}

    def train(self, run, stage):
        return run.trained(stage, run.load("pruned"), self.recipe(run), masks=run.masks())
