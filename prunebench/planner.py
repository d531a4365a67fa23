"""The dry run (``dry_run=true``): every stage of a run with its model's params and FLOPs,
its epochs, whether it is cached and, for methods whose configuration fixes the pruned
architecture (per-layer ratios), the pruned widths and Scratch-B's epochs. Nothing is
trained or downloaded; the data set is read for its fingerprint (part of every stage's key)
when it is there, and when it is not, no stage can be found cached. The strategies say what
they would train through the :class:`Planner`, a :class:`prunebench.strategies.base.RunView` of what is known before."""
import json
from typing import Dict, List, Optional, Tuple

import torch
from omegaconf import DictConfig

from prunebench import data as datasets
from prunebench import measure, models
from prunebench.errors import PrunebenchError
from prunebench.protocol import Run, seed_configs
from prunebench.pruning import widths
from prunebench.stages import Stage


class Planner:
    """What a run knows before it trains: the cached stages' results and the architectures
    that the configuration decides."""

    def __init__(self, run: Run):
        self.run, b = run, run.bench
        self.cfg, self.kind, self.family, self.base_spec, self.input_shape, self.recipe = (
            run.cfg, b.kind, b.family, b.base_spec, b.input_shape, b.recipe)
        self.results: Dict[str, Dict] = {}
        self._pruned: Optional[Tuple[Optional[Dict]]] = None
        self._counts: Dict[Tuple[str, str], int] = {}  # (spec as JSON, params | flops) -> count
        self.values = run.stage_values()
        self.known = run.fingerprint != NO_DATA
        for row, (kind, vals) in self.values.items() if self.known else ():
            stage = Stage(run.cache, kind, vals)
            cached = stage.result()
            if cached is not None and cached.get("status") == "ok":
                self.results[row] = {**cached, "stage": str(stage.dir)}

    def pruned_spec(self) -> Optional[Dict]:
        """The pruned architecture: the cached one when the stage has run, else the one the
        method's configuration predetermines (per-layer ratios), else None."""
        if self._pruned is None:  # worked out once: every strategy asks
            self._pruned = (self._pruned_spec(),)
        return self._pruned[0]

    def _pruned_spec(self) -> Optional[Dict]:
        if "pruned" in self.results:
            return models.load_spec(self.results["pruned"]["stage"])
        if self.kind == "weight":
            return self.base_spec
        with torch.device("meta"):
            base = models.build(self.base_spec)
        kept = self.run.method.predicted_widths(base)
        return None if kept is None else base.spec_with_widths(kept)

    def figure(self, row: str, what: str):
        """A row's metric from its cached result, or params / FLOPs of its predicted architecture."""
        if row in self.results and self.results[row].get(what) is not None:
            return self.results[row][what]
        if what not in ("params", "flops"):
            return None
        if row == "unpruned":
            spec = self.base_spec
        elif self.kind == "weight":
            return self.masked_figure(what)  # non-zero counts, where the configuration fixes them
        else:
            spec = self.pruned_spec()
        return None if spec is None else self.count(spec, what)

    def count(self, spec: Dict, what: str) -> int:
        """Params or FLOPs of ``spec`` (each counted once: a count builds the model)."""
        key = (json.dumps(spec, sort_keys=True), what)
        if key not in self._counts:
            self._counts[key] = (measure.spec_flops(spec, self.input_shape) if what == "flops"
                                 else measure.spec_params(spec))
        return self._counts[key]

    def masked_figure(self, what: str) -> Optional[int]:
        """Non-zero params or FLOPs of a weight-level pruned model whose counts the method's
        configuration fixes (:meth:`prunebench.methods.base.Method.predicted_masks`), else None."""
        with torch.device("meta"):
            base = models.build(self.base_spec)
        masks = self.run.method.predicted_masks(base)
        if masks is None:
            return None
        if what == "params":
            return measure.count_params(base, masks)
        return measure.spec_flops(self.base_spec, self.input_shape, masks)

    def rows(self) -> List[Dict]:
        run = self.run
        pruned_spec = self.pruned_spec()
        specs = {"unpruned": {"spec": self.base_spec, "epochs": self.recipe.epochs, "note": ""},
                 "sparse": {"spec": self.base_spec, "epochs": run.sparse_recipe().epochs,
                            "note": "the method's sparse training"},
                 "pruned": {"spec": pruned_spec, "epochs": (self.recipe.epochs if run.rewinds() else
                                                             self.cfg.method.iteration_epochs) *
                            (self.cfg.method.iterations - 1),
                            "note": "" if pruned_spec else "widths follow from the trained scores"}}
        for strategy in run.strategies:
            if strategy.applies(self):
                specs[strategy.name] = strategy.plan(self)
        same = {"pruned"} | {s.name for s in run.strategies if s.pruned_model}  # weight-level: the pruned mask
        rows = []
        for row, (kind, vals) in self.values.items():
            if row not in specs:
                continue
            p = specs[row]
            stage = Stage(run.cache, kind, vals)
            spec = p["spec"]
            masked = self.kind == "weight" and row not in ("unpruned", "sparse")
            known = spec is not None and not masked

            def figure(what, row=row, spec=spec, known=known, masked=masked):
                if self.results.get(row, {}).get(what):
                    return self.results[row][what]
                if known:
                    return self.count(spec, what)
                return self.figure("pruned", what) if masked and row in same else None
            rows.append({
                "row": row, "stage": str(stage.dir) if self.known else NO_DATA,
                "cached": self.known and stage.result() is not None,
                "params": figure("params"), "flops": figure("flops"),
                "epochs": p["epochs"],
                "widths": layer_widths_of(spec, self.family) if row == "pruned" and known else None,
                "note": "; ".join(n for n in (p["note"], self.cfg.notes.get(row)) if n)})
        return rows


def layer_widths_of(spec: Dict, family: str = "channels") -> Dict[str, int]:
    with torch.device("meta"):
        return widths(models.build(spec), family)


NO_DATA = "(not known: the data set is not there, and its fingerprint keys every stage)"


def plan(cfg: DictConfig) -> List[Dict]:
    """What a run of ``cfg`` would train, stage by stage (with ``seeds=[...]``, every seed's
    stages; each row names its ``seed``)."""
    import copy

    from prunebench import validate

    cfg = copy.deepcopy(cfg)
    cfg.dry_run = True  # what is checked: no cache folder written, a guided source's state shown as a note
    validate.check(cfg)  # a bad setting is refused before the data set is read
    try:
        fingerprint = datasets.fingerprint(cfg.dataset)
    except PrunebenchError:
        fingerprint = NO_DATA
    runs = [Run(c, fingerprint=fingerprint) for c in seed_configs(cfg)]
    return [{**row, "seed": run.cfg.seed} for run in runs for row in Planner(run).rows()]
