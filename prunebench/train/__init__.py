"""Training: one loop for every stage, its hooks, and evaluation."""
from prunebench.train.evaluate import evaluate
from prunebench.train.hooks import TrainHooks
from prunebench.train.loop import Recipe, train

__all__ = ["Recipe", "TrainHooks", "evaluate", "train"]
