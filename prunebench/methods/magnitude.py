"""Magnitude-based weight pruning (Han, Pool, Tran, Dally, "Learning both Weights and
Connections for Efficient Neural Networks", NeurIPS 2015): the weights of smallest
absolute value are removed from the trained network, the architecture is kept, and
the pruned weights stay zero (masked) while the rest is retrained.

Departures: the paper thresholds each layer at a multiple of its weights' standard
deviation (chosen per layer from a sensitivity analysis) and iterates prune/retrain;
here, as in the weight-level experiments of Liu et al. ("Rethinking the Value of
Network Pruning", ICLR 2019, Section 6 and its code), one global threshold removes
``pruning_ratio`` of the convolution weights in one shot (``selection: layer`` gives
the same ratio in every layer), so every strategy is compared at one known sparsity.
``iterations`` > 1 prunes in steps over the weights still kept, fine-tuning or
rewinding to the unpruned init between them (:meth:`prunebench.protocol.Run.prune_weights_from`)."""
from dataclasses import dataclass
from typing import Dict

import torch

from prunebench.config import MethodConfig
from prunebench.methods.base import Method
from prunebench.pruning.surgery import prunable_weights


@dataclass
class MagnitudeConfig(MethodConfig):
    pass


class Magnitude(Method):
    Config = MagnitudeConfig
    kind = "weight"
    paper = "Han et al., NeurIPS 2015"

    def scores(self, model, data) -> Dict[str, torch.Tensor]:
        return {name: w.detach().abs() for name, w in prunable_weights(model).items()}
