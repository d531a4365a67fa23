"""Guided pruning (Liu et al. 2019, Section 5 and Fig. 6): pruning as architecture
search. The pruned architectures say how much of each *stage* (the layers that work
at one feature-map size) is worth keeping; a new architecture takes the unpruned
model and scales every layer of stage s by the average kept ratio r_s of that stage,

    r_s = mean over pruned architectures of  sum_{l in s} kept_l / sum_{l in s} full_l,
    width_l = max(min_channels, round(r_s x full_l)),

and is trained from scratch with Scratch-B's budget (ceil(E x FLOPs_full / FLOPs_guided)).

``strategy.guided.source``: null takes the pattern from this run's pruned model; a
run or sweep folder takes it from every ``pruned`` row of the ``results.csv`` files
under it (the seeds of a sweep), and may come from another model or data set with
the same number of stages: the paper's transfer of VGG-16 / CIFAR-10 patterns to
VGG-19 / CIFAR-100. The ratios used are part of the stage's cache key."""
import csv
import logging
from pathlib import Path
from typing import Dict, List, Sequence

import torch

from prunebench import models
from prunebench.config import GuidedConfig
from prunebench.errors import PrunebenchError
from prunebench.measure import spec_flops
from prunebench.strategies.base import Strategy
from prunebench.strategies.scratch_b import budget, budget_values, check as check_scratch_b

log = logging.getLogger(__name__)


def group_stages(model, input_shape: Sequence[int], family: str = "channels") -> Dict[str, int]:
    """Stage index (0, 1, ...) of every channel group of ``family``: groups whose BatchNorm
    output (the first that reads them, inside a concatenation) has the same spatial size share
    a stage, numbered from the largest size down. Found by one forward pass (on the meta
    device for a meta model), so it holds for any model that lists its groups."""
    sizes: Dict[str, int] = {}
    handles = []
    for g in models.family_groups(model, family):
        def record(module, inputs, output, name=g.name):
            sizes[name] = output.shape[-1] * output.shape[-2] if output.dim() == 4 else 1
        places = g.normalized()
        handles.append(model.get_submodule(places[0][0] if places else g.bn).register_forward_hook(record))
    device = next(model.parameters()).device  # the meta device costs nothing
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *input_shape, device=device))
    model.train(was_training)
    for h in handles:
        h.remove()
    order = {s: i for i, s in enumerate(sorted(set(sizes.values()), reverse=True))}
    return {name: order[s] for name, s in sizes.items()}


def stage_ratios(full: Dict[str, int], kept: Dict[str, int], stages: Dict[str, int]) -> List[float]:
    """Kept fraction of each stage's channels (a group absent from ``kept`` was removed whole)."""
    n = max(stages.values()) + 1
    total, left = [0] * n, [0] * n
    for g, width in full.items():
        total[stages[g]] += width
        left[stages[g]] += kept.get(g, 0)
    return [left[s] / total[s] if total[s] else 1.0 for s in range(n)]


def _meta(spec: Dict):
    with torch.device("meta"):
        return models.build(spec)


def finished_pairs(folder: Path) -> List[tuple]:
    """(unpruned stage folder, pruned stage folder) of every run under ``folder`` whose results.csv
    has an ok ``pruned`` row; a results.csv that cannot be read is skipped with a warning naming it."""
    pairs = []
    for path in sorted(folder.rglob("results.csv")):
        try:
            with open(path, newline="") as f:
                rows = {r["row"]: r for r in csv.DictReader(f)}
            if rows.get("pruned", {}).get("status") == "ok" and "unpruned" in rows:
                pairs.append((Path(rows["unpruned"]["stage"]), Path(rows["pruned"]["stage"])))
        except (OSError, UnicodeDecodeError, csv.Error, KeyError, TypeError) as e:
            log.warning("%s skipped: not a prunebench results table (%s: %s)", path, type(e).__name__, e)
    return pairs


def pattern_of(folder: Path, input_shape_of=None) -> Dict:
    """The average per-stage kept ratios of the ``pruned`` rows of every results.csv under
    ``folder`` (or of a single stage folder), with the folders they came from. A run whose stage
    folders are gone or unreadable is skipped with a warning; none left is a PrunebenchError."""
    from prunebench import atomic
    from prunebench.pruning import widths

    folder = Path(folder).expanduser()
    pairs = finished_pairs(folder)
    if not pairs:
        raise PrunebenchError(f"strategy.guided.source={folder}: no results.csv with an ok 'pruned' row under it; "
                              f"give a run or sweep folder of a finished prunebench run")
    ratios = []
    for unpruned, pruned in pairs:
        try:
            spec = models.load_spec(unpruned)
            model = _meta(spec)
            shape = (spec.get("in_channels", 3), *input_shape_of(spec)) if input_shape_of else None
            kept = atomic.read_json(pruned / "widths.json")
            if not isinstance(kept, dict) or not all(isinstance(v, int) for v in kept.values()):
                raise atomic.UnreadableFile(pruned / "widths.json", ValueError("no {layer: width} object"))
            # the family the pruned row's widths describe: the first whose groups name them all
            family = next((f for f in models.FAMILIES if set(kept) <= set(widths(model, f))), "channels")
            stages = group_stages(model, shape or (spec.get("in_channels", 3), 32, 32), family)
        except (FileNotFoundError, atomic.UnreadableFile, KeyError, TypeError, ValueError) as e:
            what = f"{e.filename} is missing" if isinstance(e, FileNotFoundError) else str(e)
            log.warning("guided source: the run of %s skipped (%s)", pruned, what)
            continue
        ratios.append(stage_ratios(widths(model, family), kept, stages))
    if not ratios:
        raise PrunebenchError(f"strategy.guided.source={folder}: the stage folders of its finished runs are gone or "
                              f"unreadable (see the warnings); give a folder of runs whose cache_dir is still there")
    if len({len(r) for r in ratios}) != 1:
        raise PrunebenchError(f"the pruned models under {folder} have different numbers of stages")
    mean = [sum(r[s] for r in ratios) / len(ratios) for s in range(len(ratios[0]))]
    return {"ratios": [round(r, 6) for r in mean], "runs": len(ratios)}


class Guided(Strategy):
    name = "guided"
    Config = GuidedConfig
    pruned_model = False  # a model of its own
    keyed_by = ("guided",)

    def check(self, cfg):
        check_scratch_b(cfg)

    def applies(self, run):
        return run.kind == "structured" or run.cfg.strategy.guided.source is not None

    def cache_values(self, cfg):
        values = {**super().cache_values(cfg), "scratch_b": budget_values(cfg)}
        if cfg.strategy.guided.source is not None:  # the folder's content, not only its name
            try:
                values["pattern"] = pattern_of(Path(cfg.strategy.guided.source))["ratios"]
            except PrunebenchError:
                values["pattern"] = None  # not there yet: the stage's work says so when it runs
        return values

    def pattern(self, run) -> Dict:
        source = run.cfg.strategy.guided.source
        if source is not None:
            return {**pattern_of(Path(source)), "source": str(source)}
        from prunebench.pruning import widths

        base = _meta(run.base_spec)
        kept = widths(_meta(run.pruned_spec()), run.family)
        stages = group_stages(base, run.input_shape, run.family)
        return {"ratios": stage_ratios(widths(base, run.family), kept, stages), "runs": 1,
                "source": "this run's pruned model"}

    def spec(self, run, ratios: List[float]) -> Dict:
        from prunebench.pruning import widths

        base = _meta(run.base_spec)
        stages = group_stages(base, run.input_shape, run.family)
        if max(stages.values()) + 1 != len(ratios):
            raise PrunebenchError(f"the guiding pattern has {len(ratios)} stages, {run.cfg.model.name} has "
                                  f"{max(stages.values()) + 1}: guided pruning transfers between models with the "
                                  f"same number of stages (e.g. VGG-16 -> VGG-19)")
        floor = run.cfg.method.min_channels
        new = {g: max(min(floor, w), round(ratios[stages[g]] * w)) for g, w in widths(base, run.family).items()}
        return base.spec_with_widths(new)

    def plan(self, run):
        if run.cfg.strategy.guided.source is None and run.pruned_spec() is None:
            return {"spec": None, "epochs": None, "note": "per-stage ratios of the pruned model"}
        try:
            p = self.pattern(run)
        except PrunebenchError as e:
            return {"spec": None, "epochs": None, "note": str(e)}
        spec = self.spec(run, p["ratios"])
        return {"spec": spec, "epochs": budget(run, spec_flops(spec, run.input_shape))["epochs"],
                "note": f"stage ratios {', '.join(f'{r:.2f}' for r in p['ratios'])} from {p['source']}"}

    def train(self, run, stage):
        p = self.pattern(run)
        spec = self.spec(run, p["ratios"])
        b = budget(run, spec_flops(spec, run.input_shape))
        note = (f"stage ratios {', '.join(f'{r:.2f}' for r in p['ratios'])} (mean of {p['runs']} pruned "
                f"model{'s' if p['runs'] > 1 else ''}) from {p['source']}")
        return run.trained(stage, run.fresh(spec, reinit=True), b["recipe"]).after(
            lambda out: {**out, "stage_ratios": p["ratios"], "source": p["source"], "epochs_formula": b["formula"],
                         "note": note})
