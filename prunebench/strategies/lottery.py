"""The lottery ticket (Frankle & Carbin, ICLR 2019), as Liu et al. 2019 compare it:
the pruned model's kept weights reset to the unpruned model's initialisation (or to
its weights after epoch k, ``strategy.lottery.rewind_epoch``), trained with the
unpruned model's recipe. Weight-level methods: the mask over the unpruned
architecture, the kept weights from that snapshot. Structured methods, with
``strategy.lottery.structured: true``: the pruned architecture cut from that snapshot
with the channels every pruning iteration kept (the pruned stage's ``keep.pt``), as
the authors' L1-norm lottery trains the kept
filters from the stored init (rethinking-network-pruning cifar/lottery-ticket/
l1-norm-pruning/main_lottery.py:122-130; they keep the full network with the other
filters zeroed, whose BatchNorm shifts still train: here those channels are gone)."""
from typing import Dict

import torch

from prunebench import atomic
from prunebench.bounds import within
from prunebench.config import LotteryConfig
from prunebench.errors import PrunebenchError
from prunebench.pruning import prune
from prunebench.strategies.base import INHERITED, Strategy


def snapshot_name(k: int) -> str:
    """The unpruned stage's file of its weights after epoch ``k`` (0: its init)."""
    return f"epoch{k}.pt" if k else "init.pt"


def rewind_state(run) -> Dict[str, torch.Tensor]:
    """The unpruned model's weights at ``strategy.lottery.rewind_epoch`` (0: its init), from
    the unpruned stage's folder; a clear error when that stage did not save them."""
    k = run.cfg.strategy.lottery.rewind_epoch
    unpruned = run.folder("unpruned")
    path = unpruned / snapshot_name(k)
    if not path.exists():
        raise PrunebenchError(f"the lottery rewinds to epoch {k} of the unpruned model, but {path} was not saved "
                              f"when that stage trained; delete {unpruned} to retrain it with "
                              f"strategy.lottery.rewind_epoch={k}")
    return atomic.load(path)


class Lottery(Strategy):
    name = "lottery"
    Config = LotteryConfig
    needs = ("unpruned", "pruned")  # the unpruned stage's snapshots
    keyed_by = ("lottery",)
    pipeline = INHERITED  # its mask (or kept channels) and init come from the pruned and unpruned stages

    def check(self, cfg):
        k = cfg.strategy.lottery.rewind_epoch
        within("strategy.lottery.rewind_epoch", k, 0, cfg.schedule.epochs,
               what="the unpruned model's epochs; 0: its init")

    def keeps(self, cfg):
        k = cfg.strategy.lottery.rewind_epoch
        return {0: snapshot_name(0), **({k: snapshot_name(k)} if k else {})}

    def applies(self, run):
        return run.kind == "weight" or run.cfg.strategy.lottery.structured

    def note(self, run) -> str:
        k = run.cfg.strategy.lottery.rewind_epoch
        return f"kept weights reset to the unpruned model's {'init' if k == 0 else f'epoch {k}'}"

    def plan(self, run):
        spec = run.base_spec if run.kind == "weight" else run.pruned_spec()
        return {"spec": spec, "epochs": run.recipe.epochs, "note": self.note(run)}

    def train(self, run, stage):
        model = run.fresh(run.base_spec)
        model.load_state_dict(rewind_state(run))
        if run.kind == "weight":
            return run.trained(stage, model, run.recipe, masks=run.masks()).after(
                lambda metrics: {**metrics, "note": self.note(run) + "; non-zero counts"})
        path = run.folder("pruned") / "keep.pt"
        if not path.exists():
            raise PrunebenchError(f"{run.folder('pruned')} holds no keep.pt (the channels pruning kept), which the "
                                  f"lottery row of a structured method needs; delete that folder to prune again")
        for keep in atomic.load(path):
            model = prune(model, {g: idx.to(next(model.parameters()).device) for g, idx in keep.items()})
        return run.trained(stage, model, run.recipe).after(lambda metrics: {**metrics, "note": self.note(run)})
