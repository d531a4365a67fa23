"""A run of the command: one protocol run per seed (``seeds=[...]``, else ``seed``), every
stage of all of them through one scheduler, their rows in one table; or (``dry_run``)
the plan of what would train."""
from typing import Dict, List

from omegaconf import DictConfig

from prunebench import planner
from prunebench.bench import resolve_device, shared_data
from prunebench.protocol import Run, seed_configs
from prunebench.scheduler import schedule


def runs_of(cfg: DictConfig) -> List[Run]:
    """One :class:`Run` per seed, sharing one copy of the data set."""
    configs = seed_configs(cfg)
    if len(configs) == 1:
        return [Run(configs[0])]
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
    return planner.plan(cfg)
