"""Training: one loop for every stage, its hooks, and evaluation."""
from prunebench.train.evaluate import evaluate
from prunebench.train.hooks import HookList, MaskHook, TrainHooks
from prunebench.train.loop import Recipe, train

__all__ = ["HookList", "MaskHook", "Recipe", "TrainHooks", "evaluate", "train"]
