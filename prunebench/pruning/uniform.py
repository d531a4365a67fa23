"""The uniform baseline of Liu et al.: every prunable layer of the unpruned model
scaled by one width factor, the factor found so that FLOPs (or parameters) match
the pruned model.

Widths are whole channels, so the count moves in steps as the factor moves; on
small models the best factor can still miss the target by more than the tolerance.
Then single layers are widened or narrowed by one channel at a time, always the
change that closes the gap most, until the gap is within the tolerance. A
layer's FLOPs are proportional to its input and to its output channels, so the
change one channel of a group makes is read off one count of per-layer FLOPs:
each nudge costs one count, however many groups the model has (a consumer that
reads several groups, inside a concatenation, shares its FLOPs among all its input
channels).

The layers scaled are the groups of the run's family (``family``: a DenseNet's
filters for filter criteria, its BatchNorm selections for network slimming)."""

from typing import Dict, Optional, Sequence, Tuple

from torch import nn

from prunebench.measure import spec_layer_flops, spec_layer_params
from prunebench.models.groups import family_groups
from prunebench.pruning.surgery import widths as layer_widths

MAX_NUDGES = 20  # one-channel changes at most


def uniform_spec(model: nn.Module, target_flops: int, input_shape: Sequence[int], min_channels: int = 1,
                 tolerance: float = 0.01, steps: int = 40, measure: str = "flops",
                 family: str = "channels", shape: Optional[Dict[str, float]] = None) -> Tuple[Dict, float, int, int]:
    """Return (spec, factor, count, adjusted) for the uniformly narrowed model whose
    FLOPs (``measure="flops"``) or parameters (``"params"``) are nearest ``target_flops``;
    ``adjusted`` counts one-channel nudges. ``shape``: a relative width in (0, 1] per group, so
    that group g gets factor x shape[g] x its width (capped at its width): the random
    architectures of ``random_arch`` scaled to the target by the same search."""
    full = layer_widths(model, family)
    rel = {g: 1.0 for g in full} if shape is None else {g: float(shape[g]) for g in full}
    floor = {g: min(min_channels, c) for g, c in full.items()}
    groups = family_groups(model, family)
    layers = {p for g in groups for p in ((g.conv,) if g.conv else ()) + g.consumers}
    feeds: Dict[str, list] = {}  # consumer -> the groups it reads
    for g in groups:
        for c in g.consumers:
            feeds.setdefault(c, []).append(g.name)
    counted: Dict[tuple, Tuple[int, Dict[str, int]]] = {}
    # a model that counts its own FLOPs/params from widths (one traced pass: torchvision models)
    counter = model.width_counter(input_shape, measure) if hasattr(model, "width_counter") else None

    def count(w: Dict[str, int]) -> Tuple[int, Dict[str, int]]:
        key = tuple(sorted(w.items()))
        if key not in counted:
            spec = model.spec_with_widths(w)
            counted[key] = (spec_layer_params(spec, layers) if measure == "params"
                            else spec_layer_flops(spec, input_shape, layers))
        return counted[key]

    def flops_of(w: Dict[str, int]) -> int:
        return counter(w) if counter is not None else count(w)[0]

    def per_channel(w: Dict[str, int]) -> Dict[str, float]:
        """What one more (or one fewer) channel of each group adds (removes) at widths ``w``: a
        layer's FLOPs and weights are proportional to its input and output channels."""
        if counter is not None:
            now = counter(w)
            return {g.name: counter({**w, g.name: w[g.name] + 1}) - now for g in groups if w[g.name] > 0}
        per_layer = count(w)[1]
        return {g.name: sum([per_layer[p] / w[g.name] for p in ((g.conv,) if g.conv else ())] +
                            [per_layer[p] / sum(w[h] for h in feeds[p]) for p in g.consumers])
                for g in groups if w[g.name] > 0}

    def scaled(factor: float) -> Dict[str, int]:
        return {g: min(c, max(floor[g], round(factor * rel[g] * c))) for g, c in full.items()}

    lo, hi = 0.0, 1.0 / min(rel.values())
    best_w, best_f, best_flops = full, 1.0, flops_of(full)
    for _ in range(steps):
        mid = (lo + hi) / 2
        w = scaled(mid)
        flops = flops_of(w)
        if abs(flops - target_flops) < abs(best_flops - target_flops):
            best_w, best_f, best_flops = w, mid, flops
        if flops == target_flops:
            break
        lo, hi = (mid, hi) if flops < target_flops else (lo, mid)
    adjusted = 0
    while abs(best_flops - target_flops) > tolerance * target_flops and adjusted < MAX_NUDGES:
        step = 1 if best_flops < target_flops else -1
        cost = per_channel(best_w)
        candidates = []
        for g in full:
            c = best_w[g] + step
            if g in cost and floor[g] <= c <= full[g]:
                candidates.append((abs(best_flops + step * cost[g] - target_flops), g))
        if not candidates:
            break
        _, g = min(candidates, key=lambda t: t[0])
        w = {**best_w, g: best_w[g] + step}
        flops = flops_of(w)
        if abs(flops - target_flops) >= abs(best_flops - target_flops):
            break
        best_w, best_flops = w, flops
        adjusted += 1
    return model.spec_with_widths(best_w), best_f, best_flops, adjusted
