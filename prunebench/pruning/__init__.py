"""Shared pruning machinery: selection policies, physical channel removal and the
uniform-width baseline. Methods only score channels; everything here is common."""
from prunebench.pruning.selection import select
from prunebench.pruning.surgery import prune, widths
from prunebench.pruning.uniform import uniform_spec

__all__ = ["select", "prune", "widths", "uniform_spec"]
