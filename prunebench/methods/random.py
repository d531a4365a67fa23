"""Random channel pruning: the control every criterion should beat. Scores are
uniform random numbers drawn from the run's seed."""
from dataclasses import dataclass
from typing import Dict

import torch

from prunebench.config import MethodConfig
from prunebench.methods.base import Method
from prunebench.models import conv_groups, group_width


@dataclass
class RandomConfig(MethodConfig):
    pass


class RandomPruning(Method):
    Config = RandomConfig
    scores_units = True
    paper = "control"

    def scores(self, model, data) -> Dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(self.seed)
        return {g.name: torch.rand(group_width(model, g), generator=gen)
                for g in conv_groups(model)}
