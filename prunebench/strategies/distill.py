"""Fine-tuning with knowledge distillation from the trained unpruned model: the pruned model
keeps its inherited weights and trains on

    (1 - alpha) CE(student, y) + alpha T^2 KL(softmax(teacher / T) || softmax(student / T))

(Hinton, Vinyals & Dean 2015's loss; T: ``strategy.distill.temperature``, alpha:
``strategy.distill.weight``), at the fine-tune lr and epochs unless set. Minitron (Sreenivas
et al., "LLM Pruning and Distillation in Practice: The Minitron Approach", arXiv 2407.14679)
recovers pruned models this way, with the logit KL alone (``weight: 1``). The teacher runs
forward on every training image, which the row's training FLOPs count."""
import torch
import torch.nn.functional as F

from prunebench import accounting
from prunebench.bounds import positive, within
from prunebench.config import DistillConfig
from prunebench.strategies.base import INHERITED, Strategy, check_epochs, own_epochs
from prunebench.train.hooks import TrainHooks


def distillation_loss(logits: torch.Tensor, teacher: torch.Tensor, y: torch.Tensor, temperature: float,
                      weight: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """(1 - weight) cross-entropy + weight T^2 KL(teacher_T || student_T), the KL averaged over the batch.
    ``y``: class indices or, under mixup/cutmix, soft targets (the teacher then sees the mixed images
    too); the cross-entropy smooths them as the recipe's does (``label_smoothing``)."""
    t = temperature
    kl = F.kl_div(F.log_softmax(logits.float() / t, dim=1), F.log_softmax(teacher.float() / t, dim=1),
                  reduction="batchmean", log_target=True)
    ce = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
    return (1 - weight) * ce + weight * t * t * kl


class DistillHook(TrainHooks):
    """The teacher's logits of each batch (on the host, before the step), the distillation loss in the step."""

    capturable = False  # the teacher's logits change every step outside the captured graph

    def __init__(self, teacher: torch.nn.Module, temperature: float, weight: float, label_smoothing: float = 0.0):
        self.teacher, self.temperature, self.weight = teacher.eval(), temperature, weight
        self.label_smoothing = label_smoothing
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.targets = None

    @torch.no_grad()
    def on_batch(self, model, x, y):
        self.teacher.eval()
        self.targets = self.teacher(x)

    def loss(self, logits, y):
        return distillation_loss(logits, self.targets, y, self.temperature, self.weight, self.label_smoothing)


class Distill(Strategy):
    name = "distill"
    Config = DistillConfig
    needs = ("unpruned", "pruned")  # the teacher
    keyed_by = ("distill", "finetune")
    pipeline = INHERITED

    def check(self, cfg):
        node = cfg.strategy.distill
        check_epochs("strategy.distill", node)
        positive("strategy.distill.temperature", node.temperature)
        within("strategy.distill.weight", node.weight, 0, 1, what="alpha on the KL term")
        positive("strategy.distill.lr", node.lr, optional=True, null="strategy.finetune.lr")

    def recipe(self, run):
        node = run.cfg.strategy.distill
        lr = float(node.lr) if node.lr is not None else float(run.cfg.strategy.finetune.lr)
        return run.recipe.replace(epochs=own_epochs(run.cfg, node), lr=lr, milestones=[], warmup_epochs=0)

    def note(self, run) -> str:
        node = run.cfg.strategy.distill
        return f"inherited weights, distilled from the unpruned model (T {node.temperature:g}, alpha {node.weight:g})"

    def plan(self, run):
        return {"spec": run.pruned_spec(), "epochs": self.recipe(run).epochs, "note": self.note(run)}

    def train(self, run, stage):
        node = run.cfg.strategy.distill
        recipe = self.recipe(run)
        hook = DistillHook(run.load("unpruned"), float(node.temperature), float(node.weight), recipe.label_smoothing)
        teacher_flops = run.figure("unpruned", "flops")

        def with_teacher(m):
            extra = accounting.train_flops(m["epochs"], m["train_images"], 0, teacher_flops)
            return {**m, "train_flops": m["train_flops"] + extra, "note": self.note(run) +
                    "; training FLOPs include the teacher's forward passes"}
        return run.trained(stage, run.load("pruned"), recipe, hooks=hook, masks=run.masks()).after(
            with_teacher)
