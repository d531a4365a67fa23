"""A run of the command: one protocol run per seed (``seeds=[...]``, else ``seed``), every
stage of all of them through one scheduler, their rows in one table; or (``dry_run``)
the plan of what would train."""
import copy
from typing import Dict, List

from omegaconf import DictConfig

from prunebench import planner
from prunebench.bench import resolve_device, shared_data
from prunebench.errors import PrunebenchError
from prunebench.protocol import Run
from prunebench.scheduler import schedule


def with_seed(cfg: DictConfig, seed: int) -> DictConfig:
    out = copy.deepcopy(cfg)
    out.seed = int(seed)
    out.seeds = None
    return out


def runs_of(cfg: DictConfig) -> List[Run]:
    """One :class:`Run` per seed, sharing one copy of the data set."""
    if not cfg.get("seeds"):
        return [Run(cfg)]
    seeds = list(cfg.seeds)
    if len(set(seeds)) != len(seeds):
        raise PrunebenchError(f"seeds must differ from each other, got {seeds}")
    configs = [with_seed(cfg, s) for s in seeds]
    data = shared_data(configs[0], resolve_device(cfg.device))
    return [Run(c, data) for c in configs]


def run(cfg: DictConfig) -> List[Dict]:
    """Run the whole protocol for ``cfg``; return the rows of the result table (every seed's
    rows with ``seeds=[...]``, the ``seed`` column telling them apart)."""
    runs = runs_of(cfg)
    schedule(runs, cfg.train.max_concurrent, cfg.progress)
    return [row for r in runs for row in r.rows()]


def plan(cfg: DictConfig) -> List[Dict]:
    """What ``run(cfg)`` would train (``dry_run=true``), without training or loading data."""
    return planner.plan(runs_of(cfg))
