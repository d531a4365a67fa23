"""Method registry: ``method=NAME`` -> the class implementing it. The YAML file
``conf/method/NAME.yaml``, its ``name:`` and the table label are the same word. Each class
declares its settings' schema (``Config``) in its own module, so one line here adds a built-in
method; a method of your own needs none (``_target_``, or an entry point: :mod:`prunebench.plugins`)."""
from typing import Dict, Type

from prunebench import plugins
from prunebench.config import MethodConfig
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

# each method's config schema, declared next to its class (Method.Config)
SCHEMAS: Dict[str, Type[MethodConfig]] = {name: cls.Config for name, cls in METHODS.items()}

__all__ = ["METHODS", "SCHEMAS", "Method", "create", "method_class"]


def method_class(cfg) -> Type[Method]:
    """The class of the method node ``cfg``: ``cfg._target_`` (an import path) when set, else the built-in
    ``cfg.name``, else an installed package's entry point of that name (group ``prunebench.methods``)."""
    cls = plugins.resolve("method", cfg.name, cfg.get("_target_"), METHODS)
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise PrunebenchError(f"method {cfg.name!r}: {cls!r} is not a subclass of prunebench.methods.Method")
    if not (isinstance(cls.Config, type) and issubclass(cls.Config, MethodConfig)):
        raise PrunebenchError(f"{cls.__name__}.Config must be a dataclass subclassing prunebench.config.MethodConfig")
    return cls


def create(cfg, seed: int = 0) -> Method:
    return method_class(cfg)(cfg, seed)
