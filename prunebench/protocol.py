"""The protocol of "Rethinking the Value of Network Pruning" (Liu et al., ICLR 2019), as data:

    unpruned -> [sparse] -> prune -> finetune | scratch_e | scratch_b | uniform | lottery

:meth:`Run.stages` describes every stage of one run (one seed) as a :class:`StagePlan`:
its row, its kind, the values its cache key hashes, the rows it needs, and its work. The
work of a stage returns its metrics (host work: pruning) or a
:class:`~prunebench.train.job.Training` (what to train and what follows). When each stage
runs is the scheduler's business (:mod:`prunebench.scheduler`), how its models are built,
trained and measured the bench's (:mod:`prunebench.bench`), what each strategy trains
the strategy's (:mod:`prunebench.strategies`). Nothing here is specific to a method, a
model or a strategy."""
import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from omegaconf import DictConfig

from prunebench import accounting, atomic, distributed, measure, models, provenance, strategies, validate
from prunebench import data as datasets
from prunebench.bench import Bench
from prunebench.errors import PrunebenchError
from prunebench.pruning import prune
from prunebench.pruning.masks import apply_masks
from prunebench.pruning.selection import iteration_config
from prunebench.stages import Stage, settings
from prunebench.strategies.base import Outcome
from prunebench.strategies.lottery import rewind_state
from prunebench.train.job import Training
from prunebench.train.step import EAGER

log = logging.getLogger(__name__)


@dataclass
class StagePlan:
    """One stage of a run: ``work(stage)`` runs once every row in ``needs`` has finished ok, in
    the stage folder ``Stage(cache, kind, values)``, unless that folder holds its result."""
    row: str
    kind: str
    values: Dict[str, Any]
    work: Callable[[Stage], Outcome]
    needs: Tuple[str, ...] = ()


def base_settings(cfg: DictConfig, fingerprint: str) -> Dict:
    """What every stage's result depends on: the unpruned stage's cache key. The data set's
    settings and its ``fingerprint`` (``Data.fingerprint``: a hash of the data themselves), so
    a changed data set never reuses a stage trained on other data. Under torchrun with
    BatchNorm statistics per shard, the number of shards too (``sync_bn`` trains the
    single-process model: same key)."""
    out = {"model": settings(cfg.model), "seed": cfg.seed,
           "dataset": settings(cfg.dataset, exclude=("root", "download", "workers")), "data": fingerprint,
           "schedule": settings(cfg.schedule, exclude=("name", "eval_batch_size", "eval_every")),
           **precision_settings(cfg)}
    if distributed.world_size() > 1 and not cfg.distributed.sync_bn:
        out["bn_shards"] = distributed.world_size()
    return out


def precision_settings(cfg: DictConfig) -> Dict:
    """The one ``train`` setting that changes results, when not at its default (fp32)."""
    precision = cfg.train.precision if "train" in cfg else "fp32"
    return {} if precision == "fp32" else {"precision": precision}


def seed_configs(cfg: DictConfig) -> List[DictConfig]:
    """One config per seed of ``seeds=[...]`` (``seed`` set, ``seeds`` cleared), or ``[cfg]``."""
    if not cfg.get("seeds"):
        return [cfg]
    seeds = list(cfg.seeds)
    if len(set(seeds)) != len(seeds):
        raise PrunebenchError(f"seeds must differ from each other, got {seeds}")
    out = []
    for seed in seeds:
        one = copy.deepcopy(cfg)
        one.seed, one.seeds = int(seed), None
        out.append(one)
    return out


class Run:
    """The protocol of one run (one seed): its stages (:meth:`stages`) and, once the scheduler
    has run them, its rows of the result table (:meth:`rows`)."""

    def __init__(self, cfg: DictConfig, data: Optional[Callable[[], datasets.Data]] = None,
                 fingerprint: Optional[str] = None):
        """``data`` loads the data set (default: the one of ``cfg``); the stages' keys need its
        fingerprint, so it is loaded (and checked) here, before anything trains, unless
        ``fingerprint`` is given (the dry run's)."""
        validate.check(cfg)  # every bad input a one-line error, before anything trains
        self.cfg = cfg
        self.cache = Path(cfg.cache_dir).expanduser().resolve()
        self.bench = Bench(cfg, data)
        self.method = self.bench.method
        self.strategies = [] if cfg.get("prune_only") else [strategies.create(name, cfg) for name in cfg.strategies]
        self.fingerprint = fingerprint if fingerprint is not None else self.bench.data.fingerprint
        self.common = base_settings(cfg, self.fingerprint)
        self.plans: List[StagePlan] = []
        self.provenance = provenance.record(cfg, self.bench.device)

    def stage_values(self) -> Dict[str, Tuple[str, Dict]]:
        """Each stage's row -> (kind, cache values): one description of what every stage reads."""
        cfg, method = self.cfg, self.method
        out = {"unpruned": ("unpruned", {**self.common})}
        # a model whose filters are groups of their own (DenseNet's concatenations): filter criteria score and
        # prune all of them, where they saw DenseNet-BC's bottlenecks alone before
        view = {"groups": "filters"} if method.family == "filters" and hasattr(
            models.ARCHS[self.bench.base_spec["arch"]].cls, "filter_groups") else {}
        source = "unpruned"
        if method.sparse:
            source = "sparse"
            own = {"target": cfg.method._target_} if cfg.method.get("_target_") else {}  # a class of your own
            out["sparse"] = ("sparse", {**self.common, "method": cfg.method.name, **own,
                                        "sparse": {**method.sparse_settings(), **self.sparse_options()}, **view})
        pruned = {"source": Stage(self.cache, *out[source]).key, "method": settings(cfg.method), **view}
        if method.prune_at_init:  # the init depends on the model and seed, the scoring batch on the data
            pruned["source"] = {"init": {k: v for k, v in self.common.items() if k != "schedule"}}
        if cfg.method.iterations > 1 and cfg.method.iteration_epochs > 0:  # fine-tuned between iterations
            pruned["iteration_lr"] = cfg.strategy.finetune.lr
        if self.rewinds():  # trained from the unpruned model's init (or epoch k) with the recipe between iterations
            pruned["rewind"] = {"epoch": cfg.strategy.lottery.rewind_epoch, "schedule": self.common["schedule"],
                                **precision_settings(cfg)}
        out["pruned"] = ("pruned", pruned)
        retrain = {"pruned": Stage(self.cache, "pruned", pruned).key, "seed": cfg.seed,
                   "schedule": self.common["schedule"], **precision_settings(cfg)}
        for strategy in self.strategies:
            out[strategy.name] = (strategy.name, {**retrain, **strategy.cache_values(cfg)})
        return out

    def rewinds(self) -> bool:
        """Whether the pruning iterations train from the unpruned model's weights (the lottery ticket's
        iterative pruning, ``method.iteration_training: rewind``)."""
        return self.cfg.method.iterations > 1 and self.cfg.method.iteration_training == "rewind"

    def source(self) -> str:
        """The row the pruned stage prunes: the sparse stage's model for methods that train one."""
        return "sparse" if self.method.sparse else "unpruned"

    def stages(self) -> List[StagePlan]:
        """Every stage of the run, in the order of the table's rows."""
        values = self.stage_values()
        plans = [StagePlan("unpruned", *values["unpruned"], self.unpruned)]
        if self.method.sparse:
            needs = ("unpruned",) if self.cfg.method.sparse_init == "unpruned" else ()
            plans.append(StagePlan("sparse", *values["sparse"], self.sparse, needs))
        needs = () if self.method.prune_at_init else (self.source(),)
        if self.rewinds() and "unpruned" not in needs:
            needs += ("unpruned",)  # its init (or epoch k) snapshot
        plans.append(StagePlan("pruned", *values["pruned"], self.pruned, needs))
        for strategy in self.strategies:
            if not strategy.applies(self.bench):
                log.info("%s: does not apply to %s", strategy.name, self.cfg.method.name)
                continue
            plans.append(StagePlan(strategy.name, *values[strategy.name],
                                   lambda stage, s=strategy: s.train(self.bench, stage), strategy.needs))
        self.plans = plans
        return plans

    # -- the stages' work ------------------------------------------------

    def snapshots(self, stage: Stage) -> Dict[int, Path]:
        """Weights the unpruned stage keeps for the strategies that read them (the lottery's init and rewind epoch)."""
        keep = {}
        for cls in strategies.STRATEGIES.values():
            keep.update(cls().keeps(self.cfg))
        return {epoch: stage.dir / name for epoch, name in keep.items()}

    def unpruned(self, stage: Stage) -> Training:
        """The unpruned model's training; with ``model.pretrained`` it is torchvision's ImageNet model, trained 0 epochs."""
        b = self.bench
        model = b.fresh(b.base_spec)
        recipe = b.recipe
        if self.cfg.model.get("pretrained", False):
            models.load_pretrained(model)
            recipe = recipe.replace(epochs=0)
        return b.trained(stage, model, recipe, snapshots=self.snapshots(stage))

    def sparse_options(self) -> Dict:
        defaults = {"sparse_init": "scratch", "sparse_epochs": None, "sparse_lr": None}
        return {k: self.cfg.method[k] for k, v in defaults.items() if self.cfg.method[k] != v}

    def sparse_recipe(self):
        m, recipe = self.cfg.method, self.bench.recipe
        return recipe.replace(epochs=m.sparse_epochs or recipe.epochs,
                              lr=m.sparse_lr if m.sparse_lr is not None else recipe.lr)

    def sparse(self, stage: Stage) -> Training:
        b, m = self.bench, self.cfg.method
        model = b.load("unpruned") if m.sparse_init == "unpruned" else b.fresh(b.base_spec)
        self.method.attach(model, b.input_shape)
        model.to(b.device)
        return b.trained(stage, model, self.sparse_recipe(), self.method)

    def pruned(self, stage: Stage) -> Outcome:
        """Score, select and cut (``method.iterations`` times, fine-tuning between them), then measure."""
        b, method = self.bench, self.method
        t0 = time.perf_counter()
        model = b.fresh(b.base_spec) if method.prune_at_init else b.load(self.source(), attach=method.sparse)
        if method.kind == "weight":
            return self.prune_weights_from(stage, model, None, 0, 0, t0)
        return self.prune_from(stage, model, 0, 0, t0, [])

    def iteration_recipe(self):
        """The fine-tuning between two pruning iterations: ``iteration_epochs`` at ``strategy.finetune.lr``."""
        return self.bench.recipe.replace(epochs=self.cfg.method.iteration_epochs, lr=self.cfg.strategy.finetune.lr,
                                         milestones=[], warmup_epochs=0)

    def prune_from(self, stage: Stage, model, iteration: int, tuned: int, t0: float, keeps: List[Dict]) -> Outcome:
        """Pruning iterations ``iteration``, ... of a structured method; the fine-tuning between
        two of them is a training of this stage, after which pruning goes on from there. The
        channels each iteration kept (``keeps``) are saved as ``keep.pt``: the lottery row cuts
        the unpruned model's init with them."""
        b, method, mcfg = self.bench, self.method, self.cfg.method
        step_cfg = iteration_config(mcfg)
        for i in range(iteration, mcfg.iterations):
            scores = method.scores(model, b.data)
            method.detach(model)
            keep = distributed.broadcast(method.select(model, scores, step_cfg))  # rank 0's choice for all
            keeps = keeps + [{g: idx.cpu() for g, idx in keep.items()}]
            pruned = prune(model, keep)
            method.reconstruct(model, pruned, keep, b.data)
            model = pruned
            if i + 1 < mcfg.iterations and mcfg.iteration_epochs > 0:
                if distributed.is_main():
                    stage.checkpoint.unlink(missing_ok=True)  # a resumed stage prunes again from its source
                job = b.job(stage, model, self.iteration_recipe(), kind=f"prune {i + 1}/{mcfg.iterations}")
                job.seed, job.speed, job.eval_every, job.checkpoint_every = self.cfg.seed + i, EAGER, 0, 0.0
                return Training(job, then=lambda out, i=i, model=model, keeps=keeps: self.prune_from(
                    stage, model, i + 1, tuned + mcfg.iteration_epochs, t0, keeps))
        if distributed.is_main():
            (stage.dir / "history.csv").unlink(missing_ok=True)  # of the fine-tuning between iterations
            atomic.save(keeps, stage.dir / "keep.pt")
        final = models.pruned_form(model, b.fresh)
        out = b.describe(final, stage)
        if final is not model:
            out["note"] = "layers new to the pruned architecture start untrained (its head: model.pruned_head)"
        validate.warn_if_unpruned(measure.spec_params(b.base_spec), out["params"], self.cfg)
        return {**out, "epochs": tuned, "seconds": round(time.perf_counter() - t0, 2), **self.tuning_flops(tuned)}

    def prune_weights_from(self, stage: Stage, model, masks: Optional[Dict], iteration: int, tuned: int,
                           t0: float) -> Outcome:
        """Weight-level pruning iterations ``iteration``, ...: each removes its step's ratio of the
        weights still kept (:func:`prunebench.pruning.masks.select_weights`). Between two, the
        masked model fine-tunes (``iteration_epochs`` at ``strategy.finetune.lr``) or, with
        ``iteration_training: rewind``, its kept weights go back to the unpruned model's init (or
        its epoch ``strategy.lottery.rewind_epoch``) and train with the recipe: the lottery ticket's
        iterative pruning (Frankle & Carbin; rethinking-network-pruning cifar/lottery-ticket/
        weight-level: cifar_prune_iterative.py prunes, lottery_ticket.py retrains from the init).
        Each of those trainings checkpoints to ``round<i>.pt``, so a resumed stage redoes only the
        (deterministic) selections."""
        b, method, mcfg = self.bench, self.method, self.cfg.method
        step_cfg = iteration_config(mcfg)
        for i in range(iteration, mcfg.iterations):
            masks = distributed.broadcast(method.weight_masks(model, b.data, step_cfg, masks))
            apply_masks(model, masks)
            if i + 1 == mcfg.iterations:
                break
            if self.rewinds():
                model = b.fresh(b.base_spec)
                model.load_state_dict(rewind_state(b))
                apply_masks(model, masks)
                recipe = b.recipe
            elif mcfg.iteration_epochs > 0:
                recipe = self.iteration_recipe()
            else:
                continue
            job = b.job(stage, model, recipe, masks=masks, kind=f"prune {i + 1}/{mcfg.iterations}")
            job.seed, job.checkpoint, job.eval_every = self.cfg.seed + i, stage.dir / f"round{i + 1}.pt", 0
            return Training(job, then=lambda out, i=i, model=model, masks=masks, n=recipe.epochs: (
                self.prune_weights_from(stage, model, masks, i + 1, tuned + n, t0)))
        if distributed.is_main():
            for f in [*stage.dir.glob("round*.pt"), stage.dir / "history.csv"]:  # of the trainings between
                f.unlink(missing_ok=True)
        out = b.describe(model, stage, masks)
        validate.warn_if_unpruned(measure.spec_params(b.base_spec), out["params"], self.cfg)
        return {**out, "epochs": tuned, "seconds": round(time.perf_counter() - t0, 2), **self.tuning_flops(tuned)}

    def tuning_flops(self, epochs: int) -> Dict:
        """The training FLOPs of the pruned stage's trainings between iterations, counted at the unpruned
        model's FLOPs (an upper bound: the model shrinks over the iterations)."""
        recipe = self.iteration_recipe() if not self.rewinds() else self.bench.recipe
        images = accounting.images_per_epoch(self.bench.data.train_size, recipe.batch_size, recipe.steps_per_epoch)
        return {"train_images": images,
                "train_flops": accounting.train_flops(epochs, images, self.bench.figure("unpruned", "flops"))}

    # -- the table -------------------------------------------------------

    def speedups(self, r: Dict) -> Dict:
        """The row's speed-up over the unpruned model: promised by its FLOPs (``flops_speedup``) and
        achieved in latency on the run's device (``speedup``, ``speedup_sat``) and in ONNX Runtime
        (``onnx_speedup``, ``onnx_speedup_sat``); None where a figure is missing."""
        base = self.bench.results.get("unpruned") or {}

        def ratio(key):
            a, b = base.get(key), r.get(key)
            return round(a / b, 3) if a and b else None
        return {"flops_speedup": ratio("flops"), **{name: ratio(key) for name, key in measure.SPEEDUPS.items()}}

    def pipeline(self, row: str) -> Tuple[str, ...]:
        """The rows whose training ``row``'s result stands on (:mod:`prunebench.accounting`)."""
        if row == "sparse":
            return ("unpruned",) if self.cfg.method.sparse_init == "unpruned" else ()
        if row == "pruned":
            return ("unpruned", "sparse")
        strategy = next((s for s in self.strategies if s.name == row), None)
        return strategy.pipeline if strategy is not None else ()

    def accounting(self, row: str, r: Dict) -> Dict:
        """The row's training FLOPs, its pipeline total, its wall seconds and the pipeline's."""
        results = self.bench.results
        rows = self.pipeline(row)
        own = r.get("train_flops")
        wall = r.get("wall_seconds", r.get("seconds"))
        walls = {k: {"wall": v.get("wall_seconds", v.get("seconds"))} for k, v in results.items()}
        total_wall = accounting.pipeline_total(wall, walls, rows, "wall")
        return {"train_flops": own, "total_train_flops": accounting.pipeline_total(own, results, rows),
                "wall_seconds": wall, "total_wall_seconds": None if total_wall is None else round(total_wall, 2)}

    def rows(self) -> List[Dict]:
        """One row per finished stage, in the order of the stages; a strategy's ``columns`` included,
        with its compute (:meth:`accounting`) and the run's provenance."""
        cfg = self.cfg
        columns = [c for s in self.strategies for c in s.columns]
        rows = []
        for plan in self.plans:
            r = self.bench.results.get(plan.row)
            if r is None:
                continue
            if r.get("status") == "ok":
                r.update(self.bench.missing_timings(plan.row))
            rows.append({
                "row": plan.row, "method": cfg.method.name, "model": cfg.model.name, "dataset": cfg.dataset.name,
                "pruning_ratio": cfg.method.pruning_ratio, "seed": cfg.seed,
                "acc1": r.get("acc1"), "acc1_best": r.get("acc1_best", r.get("acc1")), "acc5": r.get("acc5"),
                "paper_acc1": cfg.paper.get(plan.row), "params": r.get("params"), "flops": r.get("flops"),
                "latency_ms": r.get("latency_ms"), "latency_iqr_ms": r.get("latency_iqr_ms"),
                **{k: r.get(k) for k in measure.LATENCY_EXTRAS}, **self.speedups(r),
                "epochs": r.get("epochs"), "seconds": r.get("seconds"), **{c: r.get(c) for c in columns},
                "acc1_val_selected": r.get("acc1_val_selected"), "val_epoch": r.get("val_epoch"),
                **self.accounting(plan.row, r),
                "status": r["status"], "note": "; ".join(n for n in (r.get("note"), cfg.notes.get(plan.row)) if n),
                "stage": r["stage"], **self.provenance})
        return rows
