"""prunebench: the comparison of "Rethinking the Value of Network Pruning"
(Liu et al., ICLR 2019) for any model, data set and pruning method.

Python API: ``prunebench.run(overrides=["experiment=smoke"])`` composes the config as
the command line does and returns the rows of the result table (``dry_run=true``:
the plan); torch and Hydra are imported on the first call, not with the package."""
from typing import Dict, List, Sequence

__version__ = "0.1.0"
__all__ = ["run", "__version__"]


def run(overrides: Sequence[str] = ()) -> List[Dict]:
    """Run ``prunebench OVERRIDES`` in this process; return its rows (dicts with ``row``,
    ``acc1``, ``params``, ``flops``, ``epochs``, ``status``, ``stage``, ...). Writes the stage
    cache (``cache_dir``) but no run folder; bad input raises :class:`PrunebenchError`."""
    from prunebench import cli, pipeline

    cfg = cli.compose(overrides)
    return pipeline.plan(cfg) if cfg.dry_run else pipeline.run(cfg)
