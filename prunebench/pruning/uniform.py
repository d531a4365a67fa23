"""The uniform baseline of Liu et al.: every prunable layer of the unpruned model
scaled by one width factor, the factor found so that FLOPs (or parameters) match
the pruned model.

Widths are whole channels, so the count moves in steps as the factor moves; on
small models the best factor can still miss the target by more than the tolerance.
Then single layers are widened or narrowed by one channel at a time, always the
change that closes the gap most, until the gap is within the tolerance."""
from typing import Dict, Sequence, Tuple

from torch import nn

from prunebench.measure import spec_flops, spec_params
from prunebench.pruning.surgery import widths as layer_widths

MAX_NUDGES = 20  # one-channel changes at most; each costs one FLOPs count per layer


def uniform_spec(model: nn.Module, target_flops: int, input_shape: Sequence[int], min_channels: int = 1,
                 tolerance: float = 0.01, steps: int = 40, measure: str = "flops") -> Tuple[Dict, float, int, int]:
    """Return (spec, factor, count, adjusted) for the uniformly narrowed model whose
    FLOPs (``measure="flops"``) or parameters (``"params"``) are nearest ``target_flops``;
    ``adjusted`` counts one-channel nudges."""
    full = layer_widths(model)
    floor = {g: min(min_channels, c) for g, c in full.items()}
    counter = model.width_counter(input_shape, measure) if hasattr(model, "width_counter") else None

    def flops_of(w: Dict[str, int]) -> int:
        if counter is not None:  # counted from one traced pass (torchvision models)
            return counter(w)
        spec = model.spec_with_widths(w)
        return spec_params(spec) if measure == "params" else spec_flops(spec, input_shape)

    def scaled(factor: float) -> Dict[str, int]:
        return {g: max(floor[g], round(factor * c)) for g, c in full.items()}

    lo, hi = 0.0, 1.0
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
        candidates = []
        for g in full:
            c = best_w[g] + step
            if floor[g] <= c <= full[g]:
                w = {**best_w, g: c}
                candidates.append((abs(flops_of(w) - target_flops), g, w))
        if not candidates:
            break
        gap, g, w = min(candidates, key=lambda t: t[0])
        if gap >= abs(best_flops - target_flops):
            break
        best_w, best_flops = w, flops_of(w)
        adjusted += 1
    return model.spec_with_widths(best_w), best_f, best_flops, adjusted
