"""The protocol of "Rethinking the Value of Network Pruning" (Liu et al., ICLR 2019):

    unpruned -> [sparse] -> prune -> finetune | scratch_e | scratch_b | uniform

Nothing here is specific to a method or a model: methods score channels, the
pruning package selects and cuts, the training loop trains every stage."""
import json
import logging
import math
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
from omegaconf import DictConfig

from prunebench import data as datasets
from prunebench import measure, methods, models
from prunebench.errors import Diverged, PrunebenchError
from prunebench.pruning import prune, select, uniform_spec, widths
from prunebench.pruning.selection import check_ratio
from prunebench.stages import Stage, settings
from prunebench.train import Recipe, TrainHooks, evaluate, train

log = logging.getLogger(__name__)

STRATEGIES = ("finetune", "scratch_e", "scratch_b", "uniform")


def scratch_b_epochs(epochs: int, flops_full: int, flops_pruned: int,
                     max_factor: Optional[float] = None) -> Dict:
    """Scratch-B: as many epochs as give the pruned model the unpruned model's
    training budget, ceil(E x F_full / F_pruned), optionally capped at max_factor x E."""
    n = -(-epochs * int(flops_full) // int(flops_pruned))  # exact integer ceiling
    formula = f"ceil({epochs} x {flops_full} / {flops_pruned}) = {n}"
    if max_factor is not None and n > math.ceil(max_factor * epochs):
        n = math.ceil(max_factor * epochs)
        formula += f", capped at {max_factor:g} x {epochs} = {n}"
    return {"epochs": n, "formula": formula, "flops_full": int(flops_full), "flops_pruned": int(flops_pruned)}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PrunebenchError(f"device={name} but no CUDA device is available; use device=cpu or device=auto")
    return device


def validate(cfg: DictConfig) -> None:
    check_ratio("method.pruning_ratio", cfg.method.pruning_ratio)
    unknown = [s for s in cfg.strategies if s not in STRATEGIES]
    if unknown:
        raise PrunebenchError(f"unknown strategies {unknown}; known: {', '.join(STRATEGIES)}")
    if cfg.method.name not in methods.METHODS:
        raise PrunebenchError(f"unknown method {cfg.method.name!r}; known: {', '.join(sorted(methods.METHODS))}")


def base_settings(cfg: DictConfig) -> Dict:
    """What every stage's result depends on: the unpruned stage's cache key."""
    return {"model": settings(cfg.model), "seed": cfg.seed,
            "dataset": settings(cfg.dataset, exclude=("root", "download")),
            "schedule": settings(cfg.schedule, exclude=("name", "eval_batch_size"))}


class Run:
    """One run of the protocol; ``rows()`` gives its result table."""

    def __init__(self, cfg: DictConfig):
        validate(cfg)
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.cache = Path(cfg.cache_dir).expanduser().resolve()
        self.data = datasets.load(cfg.dataset).to(self.device)
        self.method = methods.create(cfg.method, cfg.seed)
        self.base_spec = models.spec_from_config(cfg.model, self.data.input_shape[0], self.data.num_classes)
        s = cfg.schedule
        self.recipe = Recipe(epochs=s.epochs, lr=s.lr, batch_size=s.batch_size, momentum=s.momentum,
                             weight_decay=s.weight_decay, milestones=list(s.milestones), gamma=s.gamma,
                             steps_per_epoch=s.steps_per_epoch)
        self.common = base_settings(cfg)
        self.results: Dict[str, Dict] = {}

    # -- stage mechanics -------------------------------------------------

    def stage(self, row: str, kind: str, values: Dict, work: Callable[[Stage], Dict],
              needs: List[str] = ()) -> Dict:
        """Run ``work`` unless the stage is cached; record its metrics under ``row``."""
        stage = Stage(self.cache, kind, values)
        failed = [n for n in needs if self.results[n]["status"] != "ok"]
        if failed:
            result = {"status": "failed", "note": f"not run: {', '.join(failed)} failed"}
        else:
            result = stage.result()
            if result is not None and result["status"] == "failed" and self.cfg.retry_failed:
                stage.reset()
                result = None
            if result is None:
                with stage.lock():
                    log.info("%s: %s", row, stage.dir)
                    try:
                        result = {"status": "ok", **work(stage)}
                    except Diverged as e:
                        result = {"status": "failed", "note": str(e)}
                    stage.finish(result)
                    stage.checkpoint.unlink(missing_ok=True)
            else:
                log.info("%s: cached %s", row, stage.dir)
        result["stage"] = str(stage.dir)
        self.results[row] = result
        return result

    def describe(self, model, stage: Stage) -> Dict:
        """Save the model and measure it: accuracy, params, FLOPs, latency, widths."""
        models.save(model, stage.dir)
        w = widths(model)
        (stage.dir / "widths.json").write_text(json.dumps(w, indent=1))
        m = self.cfg.measure
        return {**evaluate(model, self.data, self.cfg.schedule.eval_batch_size),
                "params": measure.count_params(model),
                "flops": measure.count_flops(model, self.data.input_shape),
                "latency_ms": round(measure.latency_ms(model, self.data.input_shape, m.latency_batch,
                                                       m.latency_repeats), 4),
                "widths": w}

    def trained(self, stage: Stage, model, recipe: Recipe, hooks: TrainHooks = TrainHooks()) -> Dict:
        out = train(model, self.data, recipe, seed=self.cfg.seed, checkpoint=stage.checkpoint, hooks=hooks,
                    desc=stage.kind, progress=self.cfg.progress)
        return {**self.describe(model, stage), "epochs": recipe.epochs, "seconds": round(out["seconds"], 2),
                "train_loss": out["loss"]}

    def fresh(self, spec: Dict):
        torch.manual_seed(self.cfg.seed)
        return models.build(spec).to(self.device)

    def load(self, row: str):
        return models.load(self.results[row]["stage"], map_location=self.device).to(self.device)

    def with_epochs(self, epochs: int) -> Recipe:
        return Recipe(**{**self.recipe.__dict__, "epochs": epochs})

    # -- the protocol ----------------------------------------------------

    def execute(self) -> List[Dict]:
        cfg, method = self.cfg, self.method
        unpruned = {**self.common}
        self.stage("unpruned", "unpruned", unpruned,
                   lambda st: self.trained(st, self.fresh(self.base_spec), self.recipe))
        source = "unpruned"
        if method.sparse:
            sparse = {**self.common, "method": cfg.method.name, "sparse": method.sparse_settings()}
            self.stage("sparse", "sparse", sparse,
                       lambda st: self.trained(st, self.fresh(self.base_spec), self.recipe, method))
            source = "sparse"
        pruned_values = {"source": Stage(self.cache, source, sparse if method.sparse else unpruned).key,
                         "method": settings(cfg.method)}
        self.stage("pruned", "pruned", pruned_values, self.prune_stage(source), needs=[source])
        retrain = {"pruned": Stage(self.cache, "pruned", pruned_values).key, "seed": cfg.seed,
                   "schedule": self.common["schedule"]}
        st_cfg = cfg.strategy
        for name in cfg.strategies:
            if name == "finetune":
                values = {**retrain, "finetune": settings(st_cfg.finetune)}
                work = self.finetune_stage
            elif name == "scratch_e":
                values, work = retrain, self.scratch_stage(budget=False)
            elif name == "scratch_b":
                values = {**retrain, "scratch_b": settings(st_cfg.scratch_b)}
                work = self.scratch_stage(budget=True)
            else:
                values = {**retrain, "scratch_b": settings(st_cfg.scratch_b), "uniform": settings(st_cfg.uniform)}
                work = self.uniform_stage
            self.stage(name, name, values, work, needs=["unpruned", "pruned"])
        return self.rows()

    def prune_stage(self, source: str):
        def work(stage: Stage) -> Dict:
            model = self.load(source)
            t0 = time.perf_counter()
            keep = select(self.method.scores(model, self.data), self.cfg.method)
            pruned = prune(model, keep)
            return {**self.describe(pruned, stage), "epochs": 0, "seconds": round(time.perf_counter() - t0, 2)}
        return work

    def finetune_stage(self, stage: Stage) -> Dict:
        ft = self.cfg.strategy.finetune
        recipe = Recipe(**{**self.recipe.__dict__, "epochs": ft.epochs, "lr": ft.lr, "milestones": []})
        return self.trained(stage, self.load("pruned"), recipe)

    def budget(self, flops_pruned: int) -> Dict:
        return scratch_b_epochs(self.recipe.epochs, self.results["unpruned"]["flops"], flops_pruned,
                                self.cfg.strategy.scratch_b.max_factor)

    def scratch_stage(self, budget: bool):
        def work(stage: Stage) -> Dict:
            spec = models.load_spec(self.results["pruned"]["stage"])
            if not budget:
                return self.trained(stage, self.fresh(spec), self.recipe)
            b = self.budget(self.results["pruned"]["flops"])
            return {**self.trained(stage, self.fresh(spec), self.with_epochs(b["epochs"])),
                    "epochs_formula": b["formula"]}
        return work

    def uniform_stage(self, stage: Stage) -> Dict:
        target = self.results["pruned"]["flops"]
        base = models.build(self.base_spec)
        tol = self.cfg.strategy.uniform.tolerance
        spec, factor, flops, adjusted = uniform_spec(base, target, self.data.input_shape,
                                                     self.cfg.method.min_channels, tol)
        gap = (flops - target) / target
        b = self.budget(target)
        out = self.trained(stage, self.fresh(spec), self.with_epochs(b["epochs"]))
        note = f"width x{factor:.3f}" + (f", {adjusted} layers +-1 channel" if adjusted else "")
        note += f", FLOPs {100 * gap:+.2f}% vs pruned"
        if abs(gap) > tol:
            note += f" (outside the {100 * tol:g}% tolerance)"
        return {**out, "width_factor": factor, "width_adjustments": adjusted, "flops_gap": gap,
                "epochs_formula": b["formula"], "note": note}

    def rows(self) -> List[Dict]:
        cfg = self.cfg
        rows = []
        for row, r in self.results.items():
            rows.append({
                "row": row, "method": cfg.method.name, "model": cfg.model.name, "dataset": cfg.dataset.name,
                "pruning_ratio": cfg.method.pruning_ratio, "seed": cfg.seed,
                "acc1": r.get("acc1"), "acc5": r.get("acc5"), "params": r.get("params"), "flops": r.get("flops"),
                "latency_ms": r.get("latency_ms"), "epochs": r.get("epochs"), "seconds": r.get("seconds"),
                "status": r["status"], "paper_acc1": cfg.paper.get(row), "note": r.get("note", ""),
                "stage": r["stage"]})
        return rows


def run(cfg: DictConfig) -> List[Dict]:
    """Run the whole protocol for ``cfg``; return the rows of the result table."""
    return Run(cfg).execute()
