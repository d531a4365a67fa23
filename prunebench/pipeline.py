"""The protocol of "Rethinking the Value of Network Pruning" (Liu et al., ICLR 2019):

    unpruned -> [sparse] -> prune -> finetune | scratch_e | scratch_b | uniform | lottery

Nothing here is specific to a method, a model or a strategy: methods score
channels, the pruning package selects and cuts, strategies (``prunebench.strategies``)
retrain the pruned model, the training loop trains every stage."""
import dataclasses
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from omegaconf import DictConfig

from prunebench import data as datasets
from prunebench import atomic, distributed, loggers, measure, methods, models, strategies, validate
from prunebench.errors import Diverged, PrunebenchError
from prunebench.pruning import prune, widths
from prunebench.pruning.masks import apply_masks, density, select_weights, sparse_init
from prunebench.pruning.selection import iteration_config
from prunebench.stages import Stage, StageBusy, UnreadableStage, settings
from prunebench.strategies import scratch_b_epochs
from prunebench.train import Recipe, TrainHooks, evaluate, train
from prunebench.train.job import TrainJob, train_job
from prunebench.train.loop import write_history
from prunebench.train.step import speed_from_config

log = logging.getLogger(__name__)

REINIT_SEED_OFFSET = 1_000_003  # strategies re-initialise from seed + this
LOCK_POLL_S = 5.0  # seconds between looks at a stage another job is writing


def resolve_device(name: str) -> torch.device:
    if distributed.world_size() > 1:
        return distributed.device(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PrunebenchError(f"device={name} but no CUDA device is available; use device=cpu or device=auto")
    return device


def base_settings(cfg: DictConfig) -> Dict:
    """What every stage's result depends on: the unpruned stage's cache key. Under torchrun
    with BatchNorm statistics per shard, the number of shards too (``sync_bn`` trains the
    single-process model: same key)."""
    out = {"model": settings(cfg.model), "seed": cfg.seed,
           "dataset": settings(cfg.dataset, exclude=("root", "download", "workers")),
           "schedule": settings(cfg.schedule, exclude=("name", "eval_batch_size", "eval_every")),
           **precision_settings(cfg)}
    if distributed.world_size() > 1 and not cfg.distributed.sync_bn:
        out["bn_shards"] = distributed.world_size()
    return out


def precision_settings(cfg: DictConfig) -> Dict:
    """The one ``train`` setting that changes results, when not at its default (fp32)."""
    precision = cfg.train.precision if "train" in cfg else "fp32"
    return {} if precision == "fp32" else {"precision": precision}


class Run:
    """One run of the protocol; ``execute()`` trains it and gives its result table,
    ``plan()`` (``dry_run=true``) says what it would train without training anything."""

    def __init__(self, cfg: DictConfig):
        validate.check(cfg)  # every bad input a one-line error, before anything trains
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.cache = Path(cfg.cache_dir).expanduser().resolve()
        self.method = methods.create(cfg.method, cfg.seed)
        self.input_shape, self.num_classes = datasets.shape(cfg.dataset)
        self.base_spec = models.spec_from_config(cfg.model, self.input_shape[0], self.num_classes)
        s = cfg.schedule
        self.recipe = Recipe(epochs=s.epochs, lr=s.lr, batch_size=s.batch_size, momentum=s.momentum,
                             weight_decay=s.weight_decay, milestones=list(s.milestones), gamma=s.gamma,
                             steps_per_epoch=s.steps_per_epoch, nesterov=s.nesterov)
        self.common = base_settings(cfg)
        self.strategies = [strategies.create(name) for name in cfg.strategies]
        self.results: Dict[str, Dict] = {}
        self.speed = speed_from_config(cfg.get("train"))
        self.rng_lock = threading.RLock()  # held from seeding the global RNG to the last init draw
        self.trainer: Callable[[TrainJob], Dict] = train_job  # seeds.py batches the jobs of several seeds
        self.idle: Callable[[float], None] = time.sleep  # waiting for another job's stage lock (seeds.py: in turn)

    @cached_property
    def data(self) -> datasets.Data:
        """The data set on the training device, loaded on first use (``dry_run`` never loads it)."""
        with distributed.main_first():  # rank 0 downloads, if anything
            return datasets.load(self.cfg.dataset).to(self.device)

    # -- stage mechanics -------------------------------------------------

    def stage(self, row: str, kind: str, values: Dict, work: Callable[[Stage], Dict],
              needs: Sequence[str] = ()) -> Dict:
        """Run ``work`` unless the stage is cached; record its metrics under ``row``."""
        stage = Stage(self.cache, kind, values)
        failed = [n for n in needs if self.results[n]["status"] != "ok"]
        if failed:
            result = {"status": "failed", "note": f"not run: {', '.join(failed)} failed"}
        elif (result := self.main_cached(stage)) is not None:
            log.info("%s: cached %s", row, stage.dir)
        else:
            try:
                with stage.lock(self.cfg.lock_timeout, LOCK_POLL_S, sleep=self.idle):
                    result = self.main_cached(stage)  # another job may have finished it while we waited
                    if result is None:
                        if distributed.is_main() and (stage.dir / "metrics.json").exists():
                            stage.reset()  # retry_failed: a failed or unreadable stage is trained again
                        log.info("%s: %s", row, stage.dir)
                        try:
                            result = {"status": "ok", **work(stage)}
                        except Diverged as e:
                            result = {"status": "failed", "note": str(e)}
                        stage.finish(result)
                        if distributed.is_main():
                            stage.checkpoint.unlink(missing_ok=True)
                        result = distributed.broadcast(result)  # every rank holds rank 0's metrics
            except StageBusy as e:  # this job's row fails; the sweep goes on
                # under torchrun the other ranks wait in main_cached() for rank 0's word: this is it
                result = distributed.broadcast({"status": "failed", "note": str(e)})
        result["stage"] = str(stage.dir)
        self.results[row] = result
        return result

    def main_cached(self, stage: Stage) -> Optional[Dict]:
        """:meth:`cached` as rank 0 reads it, on every rank (under torchrun rank 0's reading decides)."""
        return distributed.broadcast(self.cached(stage) if distributed.is_main() else None)

    def cached(self, stage: Stage) -> Optional[Dict]:
        """The stage's finished result, or None when it must be trained: not there, or (with
        ``retry_failed``) failed or unreadable."""
        try:
            result = stage.result()
        except UnreadableStage as e:
            if not self.cfg.retry_failed:
                raise
            log.warning("%s; retrained (retry_failed=true)", e)
            return None
        if result is not None and result["status"] == "failed" and self.cfg.retry_failed:
            return None
        return result

    def describe(self, model, stage: Stage, masks: Optional[Dict] = None) -> Dict:
        """Save the model and measure it: accuracy, params, FLOPs, latency, widths.
        With weight-level ``masks``, params and FLOPs are non-zero counts."""
        w = widths(model)
        extra = {"density": density(masks), "note": "params and FLOPs: non-zero weights only"} if masks else {}
        if distributed.is_main():  # every rank holds the same model; rank 0 writes it
            models.save(model, stage.dir)
            atomic.write_json(stage.dir / "widths.json", w)
            if masks:
                atomic.save(masks, stage.dir / "mask.pt")
                atomic.write_json(stage.dir / "density.json", extra["density"])
        m = self.cfg.measure
        timing = measure.latency(model, self.data.input_shape, m.latency_batch,
                                 m.latency_repeats * measure.LATENCY_BLOCK)
        return {**evaluate(model, self.data, self.cfg.schedule.eval_batch_size),
                "params": measure.count_params(model, masks),
                "flops": measure.count_flops(model, self.data.input_shape, masks),
                "latency_ms": round(timing["median_ms"], 4), "latency_iqr_ms": round(timing["iqr_ms"], 4),
                "widths": w, **extra}

    def trained(self, stage: Stage, model, recipe: Recipe, hooks: TrainHooks = None,
                masks: Optional[Dict] = None, snapshots: Optional[Dict] = None) -> Dict:
        """Train ``model`` with ``recipe`` in ``stage``, then describe it. The metrics carry the
        per-epoch ``history``, ``acc1`` (the last epoch) and ``acc1_best`` (the best evaluated
        epoch, what the authors' scripts print as "Best acc"). The training itself is a
        :class:`TrainJob` handed to ``self.trainer`` (alone, or with other seeds' jobs batched)."""
        if masks:
            apply_masks(model, masks)
        s = self.cfg.schedule
        logger = loggers.create(self.cfg.logger, stage.dir, stage.kind, {"stage": stage.kind, **stage.values})
        job = TrainJob(kind=stage.kind, model=model, data=self.data, recipe=recipe, seed=self.cfg.seed,
                       checkpoint=stage.checkpoint, hooks=hooks, masks=masks, snapshots=snapshots or {},
                       on_epoch=logger.log, eval_every=s.eval_every, eval_batch_size=s.eval_batch_size,
                       progress=self.cfg.progress, speed=self.speed)
        try:
            out = self.trainer(job)
        finally:
            logger.close()
        return self.after_training(stage, model, out, masks)

    def after_training(self, stage: Stage, model, out: Dict, masks: Optional[Dict] = None) -> Dict:
        """The metrics of a trained stage from its trainer's output."""
        metrics = self.describe(model, stage, masks)
        best = best_of(out["history"], metrics["acc1"])
        if distributed.is_main():
            write_history(out["history"], stage.dir / "history.csv")
        return {**metrics, **best, "epochs": out["epochs"],
                "seconds": round(out["seconds"], 2), "train_loss": out["loss"], "history": out["history"]}

    def fresh(self, spec: Dict, reinit: bool = False):
        """A newly initialised model. The unpruned model (and the sparse stage, and SNIP)
        start from the seed's init; re-initialisations of the strategies draw another one,
        so Scratch-E is never the lottery ticket's reset by accident. Stages trained side by side
        (``train.parallel_stages``) draw their inits one at a time under ``rng_lock``."""
        with self.rng_lock:
            torch.manual_seed(self.cfg.seed + (REINIT_SEED_OFFSET if reinit else 0))
            return models.build(spec).to(self.device)

    def from_scratch(self) -> Tuple[torch.nn.Module, Optional[Dict]]:
        """The pruned architecture re-initialised, with its weight-level masks (None for
        structured methods); masked kept weights re-drawn at the density-corrected scale."""
        masks = self.masks()
        with self.rng_lock:  # sparse_init draws on from fresh()'s seed
            model = self.fresh(models.load_spec(self.results["pruned"]["stage"]), reinit=True)
            if masks:
                sparse_init(model, masks)
        return model, masks

    def load(self, row: str, attach: bool = False):
        """The model a finished stage saved; ``attach`` adds the method's training-time modules first."""
        folder = Path(self.results[row]["stage"])
        with self.rng_lock:  # building draws a (discarded) init from the global RNG: not amid another's
            model = models.build(models.load_spec(folder))
        if attach:
            self.method.attach(model, self.input_shape)
        model.load_state_dict(models.load_state(folder))
        return model.to(self.device)

    def masks(self) -> Optional[Dict]:
        """The pruned stage's weight-level masks; None for structured methods. A weight-level
        method whose mask.pt is missing is an error, never a dense model reported as pruned."""
        folder = Path(self.results["pruned"]["stage"])
        path = folder / "mask.pt"
        if not path.exists():
            if self.method.kind == "weight":
                raise PrunebenchError(f"{folder} holds no mask.pt, which the weight-level method "
                                      f"{self.cfg.method.name} needs; delete {folder} to prune again")
            return None
        return atomic.load(path, map_location=self.device)

    def with_recipe(self, **changes) -> Recipe:
        """The run's recipe with some fields changed (epochs, lr, milestones)."""
        return dataclasses.replace(self.recipe, **changes)

    def budget(self, flops_pruned: int) -> Dict:
        """Scratch-B's epochs for a model of ``flops_pruned`` FLOPs."""
        full = self.results["unpruned"]["flops"] if "unpruned" in self.results else self.planned_flops("unpruned")
        return scratch_b_epochs(self.recipe.epochs, full, flops_pruned, self.cfg.strategy.scratch_b.max_factor)

    def snapshots(self, stage: Stage) -> Dict[int, Path]:
        """Weights the unpruned stage keeps for the lottery strategy: its init, and epoch k to rewind to."""
        k = self.cfg.strategy.lottery.rewind_epoch
        return {0: stage.dir / "init.pt", **({k: stage.dir / f"epoch{k}.pt"} if k else {})}

    # -- the protocol ----------------------------------------------------

    def stage_values(self) -> Dict[str, Tuple[str, Dict]]:
        """Each stage's row -> (kind, cache values): one description of what every stage reads."""
        cfg, method = self.cfg, self.method
        out = {"unpruned": ("unpruned", {**self.common})}
        source = "unpruned"
        if method.sparse:
            source = "sparse"
            out["sparse"] = ("sparse", {**self.common, "method": cfg.method.name,
                                        "sparse": {**method.sparse_settings(), **self.sparse_options()}})
        pruned = {"source": Stage(self.cache, *out[source]).key, "method": settings(cfg.method)}
        if method.prune_at_init:  # the init depends on the model and seed, the scoring batch on the data
            pruned["source"] = {"init": {k: v for k, v in self.common.items() if k != "schedule"}}
        if cfg.method.iterations > 1 and cfg.method.iteration_epochs > 0:  # fine-tuned between iterations
            pruned["iteration_lr"] = cfg.strategy.finetune.lr
        out["pruned"] = ("pruned", pruned)
        retrain = {"pruned": Stage(self.cache, "pruned", pruned).key, "seed": cfg.seed,
                   "schedule": self.common["schedule"], **precision_settings(cfg)}
        for strategy in self.strategies:
            out[strategy.name] = (strategy.name, {**retrain, **strategy.cache_values(cfg)})
        return out

    def execute(self) -> List[Dict]:
        values = self.stage_values()
        self.stage("unpruned", *values["unpruned"], self.unpruned_stage)
        source = "unpruned"
        if self.method.sparse:
            source = "sparse"
            needs = ["unpruned"] if self.cfg.method.sparse_init == "unpruned" else []
            self.stage("sparse", *values["sparse"], self.sparse_stage, needs=needs)
        self.stage("pruned", *values["pruned"], self.prune_stage(source), needs=[source])
        tasks = []
        for strategy in self.strategies:
            if not strategy.applies(self):
                log.info("%s: does not apply to %s", strategy.name, self.cfg.method.name)
                continue
            tasks.append((strategy.name, lambda s=strategy: self.stage(
                s.name, *values[s.name], lambda st: s.train(self, st), needs=s.needs)))
        self.side_by_side(tasks)
        return self.rows()

    def unpruned_stage(self, stage: Stage) -> Dict:
        """Train the unpruned model; with ``model.pretrained`` it is torchvision's ImageNet model, trained 0 epochs."""
        model = self.fresh(self.base_spec)
        recipe = self.recipe
        if self.cfg.model.get("pretrained", False):
            models.load_pretrained(model)
            recipe = self.with_recipe(epochs=0)
        return self.trained(stage, model, recipe, snapshots=self.snapshots(stage))

    def side_by_side(self, tasks: List[Tuple[str, Callable[[], Dict]]]) -> None:
        """Run independent stages (row, work), ``train.parallel_stages`` at a time: threads, on CUDA
        a stream each; each stage's inits come from its own seed, so the results are the
        sequential ones. Rows keep the order of ``tasks``."""
        n = self.cfg.train.parallel_stages if "train" in self.cfg else 1
        if distributed.world_size() > 1:
            n = 1  # under torchrun every rank must meet the same collectives in the same order
        if n <= 1 or len(tasks) <= 1:
            for _, work in tasks:
                work()
            return
        before = list(self.results)
        with ThreadPoolExecutor(max_workers=n, thread_name_prefix="stage") as pool:
            futures = [pool.submit(on_own_stream, work, self.device) for _, work in tasks]
            for f in futures:
                f.result()  # re-raises a stage's error here
        order = before + [row for row, _ in tasks if row in self.results and row not in before]
        self.results = {row: self.results[row] for row in order}

    def sparse_options(self) -> Dict:
        defaults = {"sparse_init": "scratch", "sparse_epochs": None, "sparse_lr": None}
        return {k: self.cfg.method[k] for k, v in defaults.items() if self.cfg.method[k] != v}

    def sparse_recipe(self) -> Recipe:
        m = self.cfg.method
        return self.with_recipe(epochs=m.sparse_epochs or self.recipe.epochs,
                                lr=m.sparse_lr if m.sparse_lr is not None else self.recipe.lr)

    def sparse_stage(self, stage: Stage) -> Dict:
        m = self.cfg.method
        if m.sparse_init not in ("scratch", "unpruned"):
            raise PrunebenchError(f"method.sparse_init must be 'scratch' or 'unpruned', got {m.sparse_init!r}")
        model = self.load("unpruned") if m.sparse_init == "unpruned" else self.fresh(self.base_spec)
        self.method.attach(model, self.input_shape)
        model.to(self.device)
        return self.trained(stage, model, self.sparse_recipe(), self.method)

    def prune_stage(self, source: str):
        def work(stage: Stage) -> Dict:
            method, mcfg = self.method, self.cfg.method
            t0 = time.perf_counter()
            if method.prune_at_init:
                model = self.fresh(self.base_spec)  # the unpruned model's own init
            else:
                model = self.load(source, attach=source == "sparse")
            before = measure.spec_params(self.base_spec)  # the unpruned architecture, no training-time modules
            if method.kind == "weight":
                masks = distributed.broadcast(select_weights(method.scores(model, self.data), mcfg))
                apply_masks(model, masks)
                out = self.describe(model, stage, masks)
                validate.warn_if_unpruned(before, out["params"], self.cfg)
                return {**out, "epochs": 0, "seconds": round(time.perf_counter() - t0, 2)}
            step_cfg = iteration_config(mcfg)
            tuned = 0
            for i in range(mcfg.iterations):
                scores = method.scores(model, self.data)
                method.detach(model)
                keep = distributed.broadcast(method.select(model, scores, step_cfg))  # rank 0's choice for all
                pruned = prune(model, keep)
                method.reconstruct(model, pruned, keep, self.data)
                model = pruned
                if i + 1 < mcfg.iterations and mcfg.iteration_epochs > 0:
                    recipe = self.with_recipe(epochs=mcfg.iteration_epochs, lr=self.cfg.strategy.finetune.lr,
                                              milestones=[])
                    if distributed.is_main():
                        stage.checkpoint.unlink(missing_ok=True)
                    train(model, self.data, recipe, seed=self.cfg.seed + i, checkpoint=stage.checkpoint,
                          desc=f"prune {i + 1}/{mcfg.iterations}", progress=self.cfg.progress)
                    tuned += mcfg.iteration_epochs
            if distributed.is_main():
                (stage.dir / "history.csv").unlink(missing_ok=True)  # of the fine-tuning between iterations
            out = self.describe(model, stage)
            validate.warn_if_unpruned(before, out["params"], self.cfg)
            return {**out, "epochs": tuned, "seconds": round(time.perf_counter() - t0, 2)}
        return work

    # -- dry run ---------------------------------------------------------

    def pruned_spec(self) -> Optional[Dict]:
        """The pruned architecture: the cached one when the stage has run, else the one the
        method's configuration predetermines (per-layer ratios), else None."""
        if "pruned" in self.results and self.results["pruned"].get("status") == "ok":
            return models.load_spec(self.results["pruned"]["stage"])
        if self.method.kind == "weight":
            return self.base_spec
        with torch.device("meta"):
            base = models.build(self.base_spec)
        kept = self.method.predicted_widths(base)
        return None if kept is None else base.spec_with_widths(kept)

    def planned(self, what: str, row: str) -> Optional[int]:
        """FLOPs or params of a row's model, from its cached result or its predicted architecture."""
        if row in self.results and self.results[row].get(what) is not None:
            return self.results[row][what]
        if row == "unpruned":
            spec = self.base_spec
        elif self.method.kind == "weight":
            return None  # non-zero counts follow from the scores
        else:
            spec = self.pruned_spec()
        if spec is None:
            return None
        return measure.spec_flops(spec, self.input_shape) if what == "flops" else measure.spec_params(spec)

    def planned_flops(self, row: str) -> Optional[int]:
        return self.planned("flops", row)

    def plan(self) -> List[Dict]:
        """Every stage of the run with its model's params/FLOPs, epochs, whether it is cached
        and (when predetermined) the pruned widths; nothing is trained or loaded."""
        values = self.stage_values()
        for row, (kind, vals) in values.items():
            cached = Stage(self.cache, kind, vals).result()
            if cached is not None and cached.get("status") == "ok":
                self.results[row] = {**cached, "stage": str(Stage(self.cache, kind, vals).dir)}
        full = {"spec": self.base_spec, "epochs": self.recipe.epochs, "note": ""}
        pruned_spec = self.pruned_spec()
        specs = {"unpruned": full,
                 "sparse": {"spec": self.base_spec, "epochs": self.sparse_recipe().epochs,
                            "note": "the method's sparse training"},
                 "pruned": {"spec": pruned_spec, "epochs": self.cfg.method.iteration_epochs *
                            (self.cfg.method.iterations - 1),
                            "note": "" if pruned_spec else "widths follow from the trained scores"}}
        for strategy in self.strategies:
            if strategy.applies(self):
                specs[strategy.name] = strategy.plan(self)
        rows = []
        for row, (kind, vals) in values.items():
            if row not in specs:
                continue
            p = specs[row]
            stage = Stage(self.cache, kind, vals)
            spec = p["spec"]
            weight_level = self.method.kind == "weight" and row not in ("unpruned", "sparse")
            known = spec is not None and not weight_level
            rows.append({
                "row": row, "stage": str(stage.dir), "cached": stage.result() is not None,
                "params": self.results.get(row, {}).get("params") or
                (measure.spec_params(spec) if known else None),
                "flops": self.results.get(row, {}).get("flops") or
                (measure.spec_flops(spec, self.input_shape) if known else None),
                "epochs": p["epochs"], "widths": layer_widths_of(spec) if row == "pruned" and known else None,
                "note": p["note"]})
        return rows

    def rows(self) -> List[Dict]:
        cfg = self.cfg
        rows = []
        for row, r in self.results.items():
            rows.append({
                "row": row, "method": cfg.method.name, "model": cfg.model.name, "dataset": cfg.dataset.name,
                "pruning_ratio": cfg.method.pruning_ratio, "seed": cfg.seed,
                "acc1": r.get("acc1"), "acc1_best": r.get("acc1_best", r.get("acc1")), "acc5": r.get("acc5"),
                "paper_acc1": cfg.paper.get(row), "params": r.get("params"), "flops": r.get("flops"),
                "latency_ms": r.get("latency_ms"), "latency_iqr_ms": r.get("latency_iqr_ms"),
                "epochs": r.get("epochs"), "seconds": r.get("seconds"), "width_factor": r.get("width_factor"),
                "match": r.get("match"), "status": r["status"], "note": r.get("note", ""), "stage": r["stage"]})
        return rows


def on_own_stream(work: Callable[[], Dict], device: torch.device) -> Dict:
    """``work()`` on a CUDA stream of its own (on other devices: as it is)."""
    if device.type != "cuda":
        return work()
    stream = torch.cuda.Stream(device)
    with torch.cuda.stream(stream):
        out = work()
    stream.synchronize()
    return out


def best_of(history: List[Dict], final_acc1: float) -> Dict:
    """``acc1_best`` and ``best_epoch`` over a history whose last epoch scored ``final_acc1``."""
    if history and history[-1].get("acc1") is None:
        history[-1]["acc1"] = final_acc1  # the final model was evaluated by describe()
    scored = [(h["acc1"], h["epoch"]) for h in history if h.get("acc1") is not None]
    if not scored:
        return {"acc1_best": final_acc1, "best_epoch": 0}
    best, epoch = max(scored, key=lambda t: (t[0], -t[1]))
    return {"acc1_best": best, "best_epoch": epoch}


def layer_widths_of(spec: Dict) -> Dict[str, int]:
    with torch.device("meta"):
        return widths(models.build(spec))


def run(cfg: DictConfig) -> List[Dict]:
    """Run the whole protocol for ``cfg``; return the rows of the result table
    (``seeds=[...]``: every seed's rows, see :mod:`prunebench.seeds`)."""
    if cfg.get("seeds"):
        from prunebench import seeds
        return seeds.run(cfg)
    return Run(cfg).execute()


def plan(cfg: DictConfig) -> List[Dict]:
    """What ``run(cfg)`` would train (``dry_run=true``), without training or loading data."""
    return Run(cfg).plan()
