"""Random architectures at the pruned model's cost (Li et al., "Revisiting Random Channel
Pruning for Neural Network Compression", CVPR 2022): is the architecture the method found any
better than a random one of the same size? ``strategy.random_arch.members`` (N) width
configurations, each drawn at random (every group's relative width uniform in [low, 1]) and
then scaled by one common factor to the pruned model's FLOPs or parameters (``match``) by the
search of the uniform row (:func:`prunebench.pruning.uniform_spec` with a ``shape``),
re-initialised and trained with Scratch-B's budget. The row reports the mean of the N (acc1,
acc1_best, params, FLOPs, epochs, training FLOPs), ``acc1_std`` over them and each member's
widths and top-1 (``members`` in its metrics.json). Structured methods only.

Each member trains in ``member<i>/`` of the row's stage folder and is done once its
``result.json`` is there, so an interrupted row resumes at its unfinished member; the stage
folder itself holds member 0's model."""
import shutil
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List

import torch

from prunebench import atomic, distributed, models
from prunebench.bounds import at_least, within
from prunebench.config import RandomArchConfig
from prunebench.errors import PrunebenchError
from prunebench.measure import spec_flops
from prunebench.pruning import uniform_spec, widths
from prunebench.strategies.base import Strategy
from prunebench.strategies.scratch_b import budget, budget_values, check as check_scratch_b

MATCHES = ("flops", "params")
MEMBER_KEYS = ("acc1", "acc1_best", "acc1_val_selected", "params", "flops", "latency_ms", "epochs", "train_images",
               "train_flops", "seconds", "wall_seconds", "epochs_formula", "widths", "width_factor", "gap")
MEAN_KEYS = ("acc1", "acc1_best", "acc1_val_selected", "params", "flops", "latency_ms", "epochs", "train_flops")


@dataclass
class MemberStage:
    """The folder one member trains in (what :meth:`prunebench.bench.Bench.trained` reads of a stage)."""
    dir: Path
    kind: str
    values: Dict[str, Any]

    @property
    def checkpoint(self) -> Path:
        return self.dir / "checkpoint.pt"


def random_shape(groups, seed: int, low: float) -> Dict[str, float]:
    """A relative width in [low, 1] per group, drawn uniformly from a generator seeded with ``seed``."""
    g = torch.Generator().manual_seed(seed)
    draws = low + (1 - low) * torch.rand(len(groups), generator=g, dtype=torch.float64)
    return {name: float(d) for name, d in zip(groups, draws)}


def member_seed(seed: int, i: int) -> int:
    return seed * 7919 + i  # distinct for every (seed, member)


class RandomArch(Strategy):
    name = "random_arch"
    Config = RandomArchConfig
    pruned_model = False
    keyed_by = ("random_arch",)
    columns = ("acc1_std", "members_n")

    def cache_values(self, cfg):
        return {**super().cache_values(cfg), "scratch_b": budget_values(cfg)}

    def check(self, cfg):
        check_scratch_b(cfg)
        node = cfg.strategy.random_arch
        at_least("strategy.random_arch.members", node.members, 1)
        within("strategy.random_arch.low", node.low, 0, 1, open_low=True)
        if node.match not in MATCHES:
            raise PrunebenchError(f"strategy.random_arch.match must be one of {', '.join(MATCHES)}, got "
                                  f"{node.match!r}")

    def applies(self, run):
        return run.kind != "weight"

    def members(self, run, target: int) -> List[Dict]:
        """Each member's {"spec", "factor", "achieved", "shape"} at ``target`` (FLOPs or params)."""
        node = run.cfg.strategy.random_arch
        with torch.device("meta"):
            base = models.build(run.base_spec)
        names = list(widths(base, run.family))
        out = []
        for i in range(int(node.members)):
            shape = random_shape(names, member_seed(run.cfg.seed, i), float(node.low))
            spec, factor, achieved, _ = uniform_spec(base, target, run.input_shape, run.cfg.method.min_channels,
                                                     float(node.tolerance), measure=node.match, family=run.family,
                                                     shape=shape)
            out.append({"spec": spec, "factor": factor, "achieved": achieved, "shape": shape})
        return out

    def budget(self, run, spec):
        match = run.cfg.strategy.random_arch.match
        return budget(run, run.figure("pruned", "flops") if match == "flops" else spec_flops(spec, run.input_shape))

    def plan(self, run):
        node = run.cfg.strategy.random_arch
        target = run.figure("pruned", node.match)
        if target is None:
            return {"spec": None, "epochs": None, "note": f"{node.members} random widths matched by {node.match}"}
        first = self.members(run, target)[0]
        return {"spec": first["spec"], "epochs": self.budget(run, first["spec"])["epochs"],
                "note": f"{node.members} random width configurations matched by {node.match} (member 0 shown)"}

    def train(self, run, stage):
        node = run.cfg.strategy.random_arch
        target = run.figure("pruned", node.match)
        members = self.members(run, target)

        def member(i: int, done: List[Dict]):
            if i == len(members):
                return self.aggregate(run, stage, done, target)
            sub = MemberStage(stage.dir / f"member{i}", stage.kind, {**stage.values, "member": i})
            saved = sub.dir / "result.json"
            if saved.exists():
                return member(i + 1, done + [atomic.read_json(saved)])
            if distributed.is_main():
                sub.dir.mkdir(parents=True, exist_ok=True)
            m = members[i]
            b = self.budget(run, m["spec"])

            def finished(out):
                rec = {k: out.get(k) for k in MEMBER_KEYS}
                rec.update(width_factor=m["factor"], gap=(out[node.match] - target) / target,
                           epochs_formula=b["formula"])
                if distributed.is_main():
                    atomic.write_json(saved, rec)
                    sub.checkpoint.unlink(missing_ok=True)  # the member is done: its result.json says so
                return member(i + 1, done + [rec])
            return run.trained(sub, run.fresh(m["spec"], reinit=True), b["recipe"]).after(finished)
        return member(0, [])

    def aggregate(self, run, stage, done: List[Dict], target: int) -> Dict:
        out: Dict[str, Any] = {}
        for key in MEAN_KEYS:
            vals = [d[key] for d in done if d.get(key) is not None]
            if vals:
                out[key] = statistics.mean(vals)
        for key in ("params", "flops", "epochs", "train_flops"):
            if key in out:
                out[key] = int(round(out[key]))
        accs = [d["acc1"] for d in done]
        out["acc1_std"] = statistics.stdev(accs) if len(accs) > 1 else None
        out["members_n"] = len(done)
        out["seconds"] = round(sum(d.get("seconds") or 0 for d in done), 2)
        out["wall_seconds"] = round(sum(d.get("wall_seconds") or 0 for d in done), 2)
        out["members"] = done
        if distributed.is_main():
            for name in ("arch.json", "model.pt", "widths.json"):
                src = stage.dir / "member0" / name
                if src.exists():
                    shutil.copyfile(src, stage.dir / name)
        std = f" ± {out['acc1_std']:.2f}" if out["acc1_std"] is not None else ""
        node = run.cfg.strategy.random_arch
        out["note"] = (f"mean of {len(done)} random width configurations ({out['acc1']:.2f}{std}), each matched by "
                       f"{node.match} to the pruned model and trained with Scratch-B's budget; widths per member in "
                       f"metrics.json")
        return out
