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
from prunebench.pruning import prune, uniform_spec, widths
from prunebench.pruning.masks import apply_masks, density, select_weights, uniform_masks
from prunebench.pruning.selection import check_ratio
from prunebench.stages import Stage, settings
from prunebench.train import HookList, MaskHook, Recipe, TrainHooks, evaluate, train

log = logging.getLogger(__name__)

STRATEGIES = ("finetune", "scratch_e", "scratch_b", "uniform", "lottery")
REINIT_SEED_OFFSET = 1_000_003  # strategies re-initialise from seed + this


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
    k = cfg.strategy.lottery.rewind_epoch
    if "lottery" in cfg.strategies and not 0 <= k <= cfg.schedule.epochs:
        raise PrunebenchError(f"strategy.lottery.rewind_epoch must lie in [0, {cfg.schedule.epochs}] (the unpruned "
                              f"model's epochs; 0: its init), got {k}")


def iteration_config(cfg: DictConfig) -> DictConfig:
    """The method config of one of ``cfg.iterations`` pruning steps: each step removes
    1 - (1 - r)^(1/n) of what is left, so that n steps remove r in all."""
    n = cfg.iterations
    if n == 1:
        return cfg
    step = cfg.copy()
    step.pruning_ratio = 1 - (1 - cfg.pruning_ratio) ** (1 / n)
    for name, r in cfg.layer_ratios.items():
        step.layer_ratios[name] = 1 - (1 - r) ** (1 / n)
    return step


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

    def describe(self, model, stage: Stage, masks: Optional[Dict] = None) -> Dict:
        """Save the model and measure it: accuracy, params, FLOPs, latency, widths.
        With weight-level ``masks``, params and FLOPs are non-zero counts."""
        models.save(model, stage.dir)
        w = widths(model)
        (stage.dir / "widths.json").write_text(json.dumps(w, indent=1))
        extra = {}
        if masks:
            torch.save(masks, stage.dir / "mask.pt")
            extra = {"density": density(masks), "note": "params and FLOPs: non-zero weights only"}
            (stage.dir / "density.json").write_text(json.dumps(extra["density"], indent=1))
        m = self.cfg.measure
        return {**evaluate(model, self.data, self.cfg.schedule.eval_batch_size),
                "params": measure.count_params(model, masks),
                "flops": measure.count_flops(model, self.data.input_shape, masks),
                "latency_ms": round(measure.latency_ms(model, self.data.input_shape, m.latency_batch,
                                                       m.latency_repeats), 4),
                "widths": w, **extra}

    def trained(self, stage: Stage, model, recipe: Recipe, hooks: TrainHooks = None,
                masks: Optional[Dict] = None, snapshots: Optional[Dict] = None) -> Dict:
        hooks = HookList([h for h in (hooks, MaskHook(masks) if masks else None) if h is not None])
        if masks:
            apply_masks(model, masks)
        out = train(model, self.data, recipe, seed=self.cfg.seed, checkpoint=stage.checkpoint, hooks=hooks,
                    desc=stage.kind, progress=self.cfg.progress, snapshots=snapshots)
        return {**self.describe(model, stage, masks), "epochs": recipe.epochs, "seconds": round(out["seconds"], 2),
                "train_loss": out["loss"]}

    def fresh(self, spec: Dict, reinit: bool = False):
        """A newly initialised model. The unpruned model (and the sparse stage, and SNIP)
        start from the seed's init; re-initialisations of the strategies draw another one,
        so Scratch-E is never the lottery ticket's reset by accident."""
        torch.manual_seed(self.cfg.seed + (REINIT_SEED_OFFSET if reinit else 0))
        return models.build(spec).to(self.device)

    def load(self, row: str, attach: bool = False):
        """The model a finished stage saved; ``attach`` adds the method's training-time modules first."""
        folder = Path(self.results[row]["stage"])
        model = models.build(models.load_spec(folder))
        if attach:
            self.method.attach(model, self.data.input_shape)
        model.load_state_dict(torch.load(folder / "model.pt", map_location="cpu", weights_only=True))
        return model.to(self.device)

    def masks(self) -> Optional[Dict]:
        path = Path(self.results["pruned"]["stage"]) / "mask.pt"
        return torch.load(path, map_location=self.device, weights_only=True) if path.exists() else None

    def with_epochs(self, epochs: int) -> Recipe:
        return Recipe(**{**self.recipe.__dict__, "epochs": epochs})

    # -- the protocol ----------------------------------------------------

    def snapshots(self, stage: Stage) -> Dict[int, Path]:
        """Weights the unpruned stage keeps for the lottery strategy: its init, and epoch k to rewind to."""
        k = self.cfg.strategy.lottery.rewind_epoch
        return {0: stage.dir / "init.pt", **({k: stage.dir / f"epoch{k}.pt"} if k else {})}

    def execute(self) -> List[Dict]:
        cfg, method = self.cfg, self.method
        unpruned = {**self.common}
        self.stage("unpruned", "unpruned", unpruned,
                   lambda st: self.trained(st, self.fresh(self.base_spec), self.recipe, snapshots=self.snapshots(st)))
        source, source_values = "unpruned", unpruned
        if method.sparse:
            source, source_values = "sparse", {**self.common, "method": cfg.method.name,
                                               "sparse": {**method.sparse_settings(), **self.sparse_options()}}
            needs = ["unpruned"] if cfg.method.sparse_init == "unpruned" else []
            self.stage("sparse", "sparse", source_values, self.sparse_stage, needs=needs)
        pruned_values = {"source": Stage(self.cache, source, source_values).key, "method": settings(cfg.method)}
        if method.prune_at_init:  # the init depends on the model and seed, the scoring batch on the data
            pruned_values["source"] = {"init": {k: v for k, v in self.common.items() if k != "schedule"}}
        self.stage("pruned", "pruned", pruned_values, self.prune_stage(source), needs=[source])
        retrain = {"pruned": Stage(self.cache, "pruned", pruned_values).key, "seed": cfg.seed,
                   "schedule": self.common["schedule"]}
        st_cfg = cfg.strategy
        for name in cfg.strategies:
            if name == "finetune":
                values, work = {**retrain, "finetune": settings(st_cfg.finetune)}, self.finetune_stage
            elif name == "scratch_e":
                values, work = retrain, self.scratch_stage(budget=False)
            elif name == "scratch_b":
                values = {**retrain, "scratch_b": settings(st_cfg.scratch_b)}
                work = self.scratch_stage(budget=True)
            elif name == "uniform":
                values = {**retrain, "scratch_b": settings(st_cfg.scratch_b), "uniform": settings(st_cfg.uniform)}
                work = self.uniform_stage
            elif method.kind == "weight":
                values = {**retrain, "lottery": settings(st_cfg.lottery)}
                work = self.lottery_stage
            else:
                log.info("lottery: applies to weight-level methods only; %s is structured", cfg.method.name)
                continue
            self.stage(name, name, values, work, needs=["unpruned", "pruned"])
        return self.rows()

    def sparse_options(self) -> Dict:
        defaults = {"sparse_init": "scratch", "sparse_epochs": None, "sparse_lr": None}
        return {k: self.cfg.method[k] for k, v in defaults.items() if self.cfg.method[k] != v}

    def sparse_stage(self, stage: Stage) -> Dict:
        m = self.cfg.method
        if m.sparse_init not in ("scratch", "unpruned"):
            raise PrunebenchError(f"method.sparse_init must be 'scratch' or 'unpruned', got {m.sparse_init!r}")
        model = self.load("unpruned") if m.sparse_init == "unpruned" else self.fresh(self.base_spec)
        self.method.attach(model, self.data.input_shape)
        model.to(self.device)
        recipe = Recipe(**{**self.recipe.__dict__, "epochs": m.sparse_epochs or self.recipe.epochs,
                           "lr": m.sparse_lr if m.sparse_lr is not None else self.recipe.lr})
        return self.trained(stage, model, recipe, self.method)

    def prune_stage(self, source: str):
        def work(stage: Stage) -> Dict:
            method, mcfg = self.method, self.cfg.method
            t0 = time.perf_counter()
            if method.prune_at_init:
                model = self.fresh(self.base_spec)  # the unpruned model's own init
            else:
                model = self.load(source, attach=source == "sparse")
            if method.kind == "weight":
                masks = select_weights(method.scores(model, self.data), mcfg)
                apply_masks(model, masks)
                return {**self.describe(model, stage, masks), "epochs": 0,
                        "seconds": round(time.perf_counter() - t0, 2)}
            if mcfg.iterations < 1:
                raise PrunebenchError(f"method.iterations must be >= 1, got {mcfg.iterations}")
            step_cfg = iteration_config(mcfg)
            tuned = 0
            for i in range(mcfg.iterations):
                scores = method.scores(model, self.data)
                method.detach(model)
                keep = method.select(model, scores, step_cfg)
                pruned = prune(model, keep)
                method.reconstruct(model, pruned, keep, self.data)
                model = pruned
                if i + 1 < mcfg.iterations and mcfg.iteration_epochs > 0:
                    recipe = Recipe(**{**self.recipe.__dict__, "epochs": mcfg.iteration_epochs,
                                       "lr": self.cfg.strategy.finetune.lr, "milestones": []})
                    stage.checkpoint.unlink(missing_ok=True)
                    train(model, self.data, recipe, seed=self.cfg.seed + i, checkpoint=stage.checkpoint,
                          desc=f"prune {i + 1}/{mcfg.iterations}", progress=self.cfg.progress)
                    tuned += mcfg.iteration_epochs
            return {**self.describe(model, stage), "epochs": tuned, "seconds": round(time.perf_counter() - t0, 2)}
        return work

    def finetune_stage(self, stage: Stage) -> Dict:
        ft = self.cfg.strategy.finetune
        recipe = Recipe(**{**self.recipe.__dict__, "epochs": ft.epochs, "lr": ft.lr, "milestones": []})
        return self.trained(stage, self.load("pruned"), recipe, masks=self.masks())

    def budget(self, flops_pruned: int) -> Dict:
        return scratch_b_epochs(self.recipe.epochs, self.results["unpruned"]["flops"], flops_pruned,
                                self.cfg.strategy.scratch_b.max_factor)

    def scratch_stage(self, budget: bool):
        def work(stage: Stage) -> Dict:
            model = self.fresh(models.load_spec(self.results["pruned"]["stage"]), reinit=True)
            if not budget:
                return self.trained(stage, model, self.recipe, masks=self.masks())
            b = self.budget(self.results["pruned"]["flops"])
            return {**self.trained(stage, model, self.with_epochs(b["epochs"]), masks=self.masks()),
                    "epochs_formula": b["formula"]}
        return work

    def uniform_stage(self, stage: Stage) -> Dict:
        target = self.results["pruned"]["flops"]
        b = self.budget(target)
        if self.method.kind == "weight":
            keep = target / self.results["unpruned"]["flops"]
            model = self.fresh(self.base_spec, reinit=True)
            masks = uniform_masks(model, keep, self.cfg.seed)
            out = self.trained(stage, model, self.with_epochs(b["epochs"]), masks=masks)
            gap = (out["flops"] - target) / target
            return {**out, "flops_gap": gap, "epochs_formula": b["formula"],
                    "note": f"random mask keeping {100 * keep:.1f}% of every layer, FLOPs {100 * gap:+.2f}% vs "
                            f"pruned; non-zero counts"}
        base = models.build(self.base_spec)
        tol = self.cfg.strategy.uniform.tolerance
        spec, factor, flops, adjusted = uniform_spec(base, target, self.data.input_shape,
                                                     self.cfg.method.min_channels, tol)
        gap = (flops - target) / target
        out = self.trained(stage, self.fresh(spec, reinit=True), self.with_epochs(b["epochs"]))
        note = f"width x{factor:.3f}" + (f", {adjusted} layers +-1 channel" if adjusted else "")
        note += f", FLOPs {100 * gap:+.2f}% vs pruned"
        if abs(gap) > tol:
            note += f" (outside the {100 * tol:g}% tolerance)"
        return {**out, "width_factor": factor, "width_adjustments": adjusted, "flops_gap": gap,
                "epochs_formula": b["formula"], "note": note}

    def lottery_stage(self, stage: Stage) -> Dict:
        k = self.cfg.strategy.lottery.rewind_epoch
        unpruned = Stage(self.cache, "unpruned", self.common)
        path = self.snapshots(unpruned)[k]
        if not path.exists():
            raise PrunebenchError(f"the lottery strategy rewinds to epoch {k} of the unpruned model, but {path} "
                                  f"was not saved when that stage trained; delete {unpruned.dir} to retrain it "
                                  f"with strategy.lottery.rewind_epoch={k}")
        model = models.build(self.base_spec)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        out = self.trained(stage, model.to(self.device), self.recipe, masks=self.masks())
        return {**out, "note": f"kept weights reset to the unpruned model's {'init' if k == 0 else f'epoch {k}'}; "
                               "non-zero counts"}

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
