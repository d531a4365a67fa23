"""The uniform baseline (Liu et al. 2019): the unpruned architecture with every
prunable layer scaled by one width factor, chosen so that the model matches the
pruned one in FLOPs or in parameters (``strategy.uniform.match``; the paper's
architecture-search figures compare at equal parameters), re-initialised and
trained with Scratch-B's budget. Weight-level methods: a random mask keeping the
same fraction of every layer.

Budget: matched by FLOPs, the uniform model gets Scratch-B's epochs (its FLOPs are
the pruned model's within the tolerance); matched by parameters, its FLOPs differ,
and it gets the unpruned model's budget for its own FLOPs."""
import torch

from prunebench import models
from prunebench.config import UniformConfig
from prunebench.measure import spec_flops, spec_layer_flops
from prunebench.pruning import uniform_spec
from prunebench.pruning.masks import sparse_init, uniform_masks
from prunebench.pruning.surgery import prunable_weights
from prunebench.strategies.base import Strategy
from prunebench.strategies.scratch_b import budget, budget_values, check as check_scratch_b



class Uniform(Strategy):
    name = "uniform"
    Config = UniformConfig
    pruned_model = False  # a model of its own
    keyed_by = ("uniform",)
    columns = ("width_factor", "match")

    def cache_values(self, cfg):
        return {**super().cache_values(cfg), "scratch_b": budget_values(cfg)}

    def check(self, cfg):
        check_scratch_b(cfg)

    def match(self, run) -> str:
        return run.cfg.strategy.uniform.match

    def structured(self, run, target: int):
        """(spec, factor, achieved, adjusted) of the uniformly narrowed unpruned model."""
        tol = run.cfg.strategy.uniform.tolerance
        with torch.device("meta"):  # widths and counts only: no weights allocated
            base = models.build(run.base_spec)
        return uniform_spec(base, target, run.input_shape, run.cfg.method.min_channels, tol,
                            measure=self.match(run), family=run.family)

    def plan(self, run):
        match = self.match(run)
        target = run.figure("pruned", match)
        if target is None or run.kind == "weight":
            return {"spec": None if run.kind != "weight" else run.base_spec, "epochs": None,
                    "note": f"matched by {match} to the pruned model"}
        spec, factor, achieved, _ = self.structured(run, target)
        flops = spec_flops(spec, run.input_shape)
        epochs = budget(run, run.figure("pruned", "flops") if match == "flops" else flops)["epochs"]
        return {"spec": spec, "epochs": epochs, "note": f"width x{factor:.3f}, matched by {match}"}

    def train(self, run, stage):
        match = self.match(run)
        target = run.figure("pruned", match)
        tol = run.cfg.strategy.uniform.tolerance
        if run.kind == "weight":
            model = run.fresh(run.base_spec, reinit=True)
            full = run.figure("unpruned", match)
            if match == "params":  # only conv/linear weights are masked; BN and biases stay
                prunable = sum(w.numel() for w in prunable_weights(model).values())
                keep = (target - (full - prunable)) / prunable
            else:  # the masks thin the layers' FLOPs; the rest (a transformer's attention products) stays
                layers = {name.rsplit(".", 1)[0] for name in prunable_weights(model)}
                maskable = sum(spec_layer_flops(run.base_spec, run.input_shape, layers)[1].values())
                keep = (target - (full - maskable)) / maskable
            masks = uniform_masks(model, keep, run.cfg.seed)
            sparse_init(model, masks)  # draws on from fresh()'s seed
            b = budget(run, run.figure("pruned", "flops"))

            def weight_level(out):
                gap = (out[match] - target) / target
                return {**out, "match": match, "gap": gap, "epochs_formula": b["formula"],
                        "note": f"random mask keeping {100 * keep:.1f}% of every layer, {match} {100 * gap:+.2f}% "
                                f"vs pruned; non-zero counts"}
            return run.trained(stage, model, b["recipe"], masks=masks).after(weight_level)
        spec, factor, achieved, adjusted = self.structured(run, target)
        flops = spec_flops(spec, run.input_shape)
        b = budget(run, run.figure("pruned", "flops") if match == "flops" else flops)

        def structured(out):
            gap = (out[match] - target) / target
            note = f"width x{factor:.3f}" + (f", {adjusted} layers +-1 channel" if adjusted else "")
            note += f", {match} {100 * gap:+.2f}% vs pruned (matched by {match})"
            if abs(gap) > tol:
                note += f" (outside the {100 * tol:g}% tolerance)"
            return {**out, "width_factor": factor, "width_adjustments": adjusted, "match": match, "gap": gap,
                    "epochs_formula": b["formula"], "note": note}
        return run.trained(stage, run.fresh(spec, reinit=True), b["recipe"]).after(structured)
