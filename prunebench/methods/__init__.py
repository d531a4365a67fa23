"""Method registry: ``method=NAME`` -> the class implementing it. The YAML file
``conf/method/NAME.yaml``, its ``name:`` and the table label are the same word."""
from typing import Dict, Type

from prunebench.errors import PrunebenchError
from prunebench.methods.apoz import APoZ
from prunebench.methods.autopruner import AutoPruner
from prunebench.methods.base import Method
from prunebench.methods.channel_pruning import ChannelPruning
from prunebench.methods.dcp import DCP
from prunebench.methods.fpgm import FPGM
from prunebench.methods.l1_norm import L1Norm
from prunebench.methods.magnitude import Magnitude
from prunebench.methods.random import RandomPruning
from prunebench.methods.sfp import SFP
from prunebench.methods.slimming import Slimming
from prunebench.methods.snip import SNIP
from prunebench.methods.sss import SSS
from prunebench.methods.sss_sensitivity import SSSSensitivity
from prunebench.methods.sss_sigmoid import SSSSigmoid
from prunebench.methods.taylor import Taylor
from prunebench.methods.thinet import ThiNet

METHODS: Dict[str, Type[Method]] = {
    "slimming": Slimming,
    "l1_norm": L1Norm,
    "random": RandomPruning,
    "sss": SSS,
    "autopruner": AutoPruner,
    "sfp": SFP,
    "magnitude": Magnitude,
    "snip": SNIP,
    "apoz": APoZ,
    "taylor": Taylor,
    "fpgm": FPGM,
    "thinet": ThiNet,
    "channel_pruning": ChannelPruning,
    "sss_sigmoid": SSSSigmoid,
    "sss_sensitivity": SSSSensitivity,
    "dcp": DCP,
}

__all__ = ["METHODS", "Method", "create"]


def create(cfg, seed: int = 0) -> Method:
    if cfg.name not in METHODS:
        raise PrunebenchError(f"unknown method {cfg.name!r}; known: {', '.join(sorted(METHODS))}")
    return METHODS[cfg.name](cfg, seed)
