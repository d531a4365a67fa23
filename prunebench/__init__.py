"""prunebench: the comparison of "Rethinking the Value of Network Pruning"
(Liu et al., ICLR 2019) for any model, data set and pruning method."""

__version__ = "0.1.0"
