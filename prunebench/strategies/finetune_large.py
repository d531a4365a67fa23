"""Fine-tuning at a large learning rate: the pruned model keeps its inherited weights and
trains at ``strategy.finetune_large.lr`` (0.01) with a step schedule, lr x gamma (the schedule's)
at ``milestones`` (fractions of its epochs; default half and three quarters), for the fine-tune
epochs unless set. Wang et al. ("Why is the State of Neural Network Pruning so Confusing?",
arXiv 2301.05219) show that the fine-tune lr of Liu et al. (0.001) is too small and that a
larger one reverses the verdict at most ratios; Renda, Frankle & Carbin (ICLR 2020) make the
same point with learning-rate rewinding (:mod:`.lr_rewind`)."""
from prunebench.bounds import fractions, positive
from prunebench.config import FinetuneLargeConfig
from prunebench.strategies.base import INHERITED, Strategy, check_epochs, own_epochs


class FinetuneLarge(Strategy):
    name = "finetune_large"
    Config = FinetuneLargeConfig
    keyed_by = ("finetune_large", "finetune")  # its epochs default to the fine-tune's
    pipeline = INHERITED

    def check(self, cfg):
        node = cfg.strategy.finetune_large
        check_epochs("strategy.finetune_large", node)
        positive("strategy.finetune_large.lr", node.lr)
        fractions("strategy.finetune_large.milestones", node.milestones)

    def recipe(self, run):
        node = run.cfg.strategy.finetune_large
        return run.recipe.replace(epochs=own_epochs(run.cfg, node), lr=float(node.lr),
                                  milestones=[float(m) for m in node.milestones], warmup_epochs=0)

    def plan(self, run):
        r = self.recipe(run)
        return {"spec": run.pruned_spec(), "epochs": r.epochs,
                "note": f"inherited weights, lr {r.lr:g} x{r.gamma:g} after epochs {r.milestone_epochs()}"}

    def train(self, run, stage):
        r = self.recipe(run)
        return run.trained(stage, run.load("pruned"), r, masks=run.masks()).after(
            lambda m: {**m, "note": f"lr {r.lr:g}, x{r.gamma:g} after epochs {r.milestone_epochs()}"})
