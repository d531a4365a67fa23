"""Several seeds in one process (``seeds=[0,1,2,3,4]``): one :class:`Run` per seed, each
with its own stage folders and rows (the ``seed`` column tells them apart, so the
table and ``prunebench-report`` see ordinary per-seed runs). With
``train.batch_seeds=true`` the unpruned stages of the seeds not cached yet train first,
together, as one batched model (:mod:`prunebench.train.batched`); each Run then finds
its unpruned stage cached and goes on alone. Liu et al. 2019 report the mean of 5 runs."""
import copy
import logging
from typing import Dict, List

from omegaconf import DictConfig

from prunebench.pipeline import Run
from prunebench.stages import Stage
from prunebench.train.batched import train_batched

log = logging.getLogger(__name__)


def with_seed(cfg: DictConfig, seed: int) -> DictConfig:
    out = copy.deepcopy(cfg)
    out.seed = int(seed)
    out.seeds = None
    return out


def batch_unpruned(runs: List[Run]) -> None:
    """Train the unpruned stages of ``runs`` that are not cached, as one batched model."""
    todo = [r for r in runs if Stage(r.cache, *r.stage_values()["unpruned"]).result() is None]
    if len(todo) < 2:
        return
    lead = todo[0]
    for r in todo[1:]:
        r.__dict__["data"] = lead.data  # one copy of the data set for every seed
    stages = [Stage(r.cache, *r.stage_values()["unpruned"]) for r in todo]
    for st in stages:
        st.dir.mkdir(parents=True, exist_ok=True)
    models = [r.fresh(r.base_spec) for r in todo]
    s = lead.cfg.schedule
    log.info("unpruned: seeds %s batched", [r.cfg.seed for r in todo])
    outs = train_batched(models, lead.data, lead.recipe, seeds=[r.cfg.seed for r in todo],
                         eval_every=s.eval_every, eval_batch_size=s.eval_batch_size,
                         snapshots=[r.snapshots(st) for r, st in zip(todo, stages)])
    for r, st, model, out in zip(todo, stages, models, outs):
        r.stage("unpruned", st.kind, st.values, lambda stage, r=r, m=model, o=out: r.after_training(stage, m, o))


def run(cfg: DictConfig) -> List[Dict]:
    runs = [Run(with_seed(cfg, s)) for s in cfg.seeds]
    if cfg.get("train") is not None and cfg.train.batch_seeds:
        batch_unpruned(runs)
    rows = []
    for r in runs:
        rows += r.execute()
    return rows
