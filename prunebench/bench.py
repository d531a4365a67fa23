"""The workbench of one run: its data on the training device, fresh and finished models,
the files a finished stage holds, a stage's measurements, and the :class:`Training` a stage
hands the scheduler. Strategies see it through :class:`prunebench.strategies.base.RunBench`.
Nothing here knows which stages exist (:mod:`prunebench.protocol`) or when they run
(:mod:`prunebench.scheduler`)."""
from functools import cached_property
from pathlib import Path
from typing import Callable, Dict, Optional

import torch
from omegaconf import DictConfig

from prunebench import accounting, atomic, distributed, loggers, measure, methods, models
from prunebench import data as datasets
from prunebench.errors import PrunebenchError
from prunebench.pruning import widths
from prunebench.pruning.masks import apply_masks, density
from prunebench.stages import Stage
from prunebench.train import Recipe, TrainHooks
from prunebench.train.evaluate import evaluate
from prunebench.train.job import TrainJob, Training
from prunebench.train.loop import VAL_FIELD, write_history
from prunebench.train.step import speed_from_config

REINIT_SEED_OFFSET = 1_000_003  # strategies re-initialise from seed + this


def resolve_device(name: str) -> torch.device:
    if distributed.world_size() > 1:
        return distributed.device(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PrunebenchError(f"device={name} but no CUDA device is available; use device=cpu or device=auto")
    return device


def recipe_of(schedule) -> Recipe:
    s = schedule
    return Recipe(epochs=s.epochs, lr=s.lr, batch_size=s.batch_size, momentum=s.momentum, weight_decay=s.weight_decay,
                  milestones=list(s.milestones), gamma=s.gamma, steps_per_epoch=s.steps_per_epoch, nesterov=s.nesterov,
                  warmup_epochs=s.warmup_epochs, warmup_factor=s.warmup_factor, warmup=s.warmup,
                  lr_schedule=s.lr_schedule, optimizer=s.optimizer, label_smoothing=s.label_smoothing, augment=s.augment,
                  randaugment_ops=s.randaugment_ops, randaugment_magnitude=s.randaugment_magnitude,
                  mixup_alpha=s.mixup_alpha, cutmix_alpha=s.cutmix_alpha, ema_decay=s.ema_decay, ema_steps=s.ema_steps)


def shared_data(cfg: DictConfig, device: torch.device) -> Callable[[], datasets.Data]:
    """The data set of ``cfg`` on ``device``, loaded on the first call and the same object after
    (the seeds of one process share it; a dry run never calls it)."""
    box = {}

    def load() -> datasets.Data:
        if "data" not in box:
            with distributed.main_first():  # rank 0 downloads, if anything
                box["data"] = datasets.load(cfg.dataset).to(device)
        return box["data"]
    return load


class Bench:
    """Builds, loads, trains, measures and saves the models of one run (one seed). ``results``
    holds each finished row's metrics (with its ``stage`` folder); the scheduler fills it."""

    def __init__(self, cfg: DictConfig, data: Optional[Callable[[], datasets.Data]] = None):
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.method = methods.create(cfg.method, cfg.seed)
        self.kind = self.method.kind
        self.family = self.method.family  # the groups that describe the run's widths
        self.input_shape, self.num_classes = datasets.shape(cfg.dataset)
        self.base_spec = models.spec_from_config(cfg.model, self.input_shape[0], self.num_classes,
                                                 self.input_shape[-1])
        self.recipe = recipe_of(cfg.schedule)
        self.speed = speed_from_config(cfg.get("train"))
        self.results: Dict[str, Dict] = {}
        self._data = data or shared_data(cfg, self.device)

    @property
    def data(self) -> datasets.Data:
        return self._data()

    @cached_property
    def base_figures(self) -> Dict[str, int]:
        """Params and FLOPs of the unpruned architecture, from its spec (no weights allocated)."""
        return {"params": measure.spec_params(self.base_spec), "flops": measure.spec_flops(self.base_spec,
                                                                                            self.input_shape)}

    # -- what is known ---------------------------------------------------

    def folder(self, row: str) -> Path:
        """The stage folder of a finished row."""
        return Path(self.results[row]["stage"])

    def figure(self, row: str, what: str):
        """A metric of a finished row; of the unpruned model, its params and FLOPs before it has trained."""
        if row in self.results and self.results[row].get(what) is not None:
            return self.results[row][what]
        if row == "unpruned" and what in ("params", "flops"):
            return self.base_figures[what]
        return None

    def pruned_spec(self) -> Dict:
        return models.load_spec(self.folder("pruned"))

    # -- models ----------------------------------------------------------

    def fresh(self, spec: Dict, reinit: bool = False):
        """A newly initialised model. The unpruned model (and the sparse stage, and SNIP)
        start from the seed's init; re-initialisations of the strategies draw another one,
        so Scratch-E is never the lottery ticket's reset by accident."""
        torch.manual_seed(self.cfg.seed + (REINIT_SEED_OFFSET if reinit else 0))
        return models.build(spec).to(self.device)

    def load(self, row: str, attach: bool = False):
        """The model a finished stage saved; ``attach`` adds the method's training-time modules first."""
        folder = self.folder(row)
        model = models.build(models.load_spec(folder))
        if attach:
            self.method.attach(model, self.input_shape)
        model.load_state_dict(models.load_state(folder))
        return model.to(self.device)

    def masks(self) -> Optional[Dict]:
        """The pruned stage's weight-level masks; None for structured methods. A weight-level
        method whose mask.pt is missing is an error, never a dense model reported as pruned."""
        folder = self.folder("pruned")
        path = folder / "mask.pt"
        if not path.exists():
            if self.kind == "weight":
                raise PrunebenchError(f"{folder} holds no mask.pt, which the weight-level method "
                                      f"{self.cfg.method.name} needs; delete {folder} to prune again")
            return None
        return atomic.load(path, map_location=self.device)

    # -- measuring and training -----------------------------------------

    def describe(self, model, stage: Stage, masks: Optional[Dict] = None) -> Dict:
        """Save the model and measure it: accuracy, params, FLOPs, latency, widths.
        With weight-level ``masks``, params and FLOPs are non-zero counts. On CUDA the device
        is drained first, so that no other training's kernels share the timed forwards."""
        w = widths(model, self.family)
        extra = {"density": density(masks), "note": "params and FLOPs: non-zero weights only"} if masks else {}
        if distributed.is_main():  # every rank holds the same model; rank 0 writes it
            models.save(model, stage.dir)
            atomic.write_json(stage.dir / "widths.json", w)
            if masks:
                atomic.save(masks, stage.dir / "mask.pt")
                atomic.write_json(stage.dir / "density.json", extra["density"])
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return {**evaluate(model, self.data, self.cfg.schedule.eval_batch_size),
                "params": measure.count_params(model, masks),
                "flops": measure.count_flops(model, self.data.input_shape, masks),
                **measure.timings(model, self.data.input_shape, self.cfg.measure), "widths": w, **extra}

    def missing_timings(self, row: str) -> Dict:
        """The latency figures ``measure`` asks for that a finished row (cached before they were
        asked for) lacks, measured now on its saved model; {} when none is missing."""
        m, r = self.cfg.measure, self.results[row]
        wanted = (["latency_sat_ms"] if m.saturating_batch > 0 else []) + (
            ["onnx_ms"] + (["onnx_sat_ms"] if m.saturating_batch > 0 else []) if m.onnx else [])
        if all(r.get(k) is not None for k in wanted) or not (self.folder(row) / "arch.json").exists():
            return {}
        model = models.load(self.folder(row), map_location=self.device).eval()
        return {k: v for k, v in measure.timings(model, self.input_shape, m).items() if k in wanted}

    def job(self, stage: Stage, model, recipe: Recipe, hooks: Optional[TrainHooks] = None,
            masks: Optional[Dict] = None, snapshots: Optional[Dict] = None, on_epoch=None, kind: str = "") -> TrainJob:
        s = self.cfg.schedule
        return TrainJob(kind=kind or stage.kind, model=model, data=self.data, recipe=recipe, seed=self.cfg.seed,
                        checkpoint=stage.checkpoint, hooks=hooks, masks=masks, snapshots=snapshots or {},
                        on_epoch=on_epoch, eval_every=s.eval_every, eval_batch_size=s.eval_batch_size, progress=False,
                        speed=self.speed, checkpoint_every=self.cfg.train.checkpoint_every)

    def trained(self, stage: Stage, model, recipe: Recipe, hooks: Optional[TrainHooks] = None,
                masks: Optional[Dict] = None, snapshots: Optional[Dict] = None) -> Training:
        """The training of ``model`` with ``recipe`` in ``stage``, then its description. The metrics
        carry the per-epoch ``history``, ``acc1`` (the last epoch) and ``acc1_best`` (the best
        evaluated epoch, what the authors' scripts print as "Best acc")."""
        if masks:
            apply_masks(model, masks)
        logger = loggers.create(self.cfg.logger, stage.dir, stage.kind, {"stage": stage.kind, **stage.values})
        job = self.job(stage, model, recipe, hooks, masks, snapshots, on_epoch=logger.log)
        return Training(job, then=lambda out: self.after_training(stage, model, out, masks, recipe), close=logger.close)

    def after_training(self, stage: Stage, model, out: Dict, masks: Optional[Dict] = None,
                       recipe: Optional[Recipe] = None) -> Dict:
        """The metrics of a trained stage from its training's output."""
        metrics = self.describe(model, stage, masks)
        history = out["history"]
        if self.data.val_size and history and history[-1].get(VAL_FIELD) is None:  # eval_every: 0
            history[-1][VAL_FIELD] = evaluate(model, self.data, self.cfg.schedule.eval_batch_size, split="val")["acc1"]
        best = best_of(history, metrics["acc1"])
        if distributed.is_main():
            write_history(history, stage.dir / "history.csv")
        recipe = recipe or self.recipe
        images = accounting.images_per_epoch(self.data.train_size, recipe.batch_size, recipe.steps_per_epoch)
        return {**metrics, **best, "epochs": out["epochs"], "seconds": round(out["seconds"], 2),
                "wall_seconds": round(out["wall_seconds"], 2), "compile_seconds": round(out["compile_seconds"], 2),
                "train_images": images, "train_flops": accounting.train_flops(out["epochs"], images, metrics["flops"]),
                "train_loss": out["loss"], "history": history}


def best_of(history, final_acc1: float) -> Dict:
    """``acc1_best`` and ``best_epoch`` over a history whose last epoch scored ``final_acc1``; with
    held-out images (``val_acc1`` in the history), ``val_epoch``, the epoch best on them (the earliest
    of ties), and ``acc1_val_selected``, the test top-1 at that epoch: a selection the test set never saw."""
    if history and history[-1].get("acc1") is None:
        history[-1]["acc1"] = final_acc1  # the final model was evaluated by describe()
    scored = [(h["acc1"], h["epoch"]) for h in history if h.get("acc1") is not None]
    if not scored:
        return {"acc1_best": final_acc1, "best_epoch": 0}
    best, epoch = max(scored, key=lambda t: (t[0], -t[1]))
    out = {"acc1_best": best, "best_epoch": epoch}
    held = [h for h in history if h.get(VAL_FIELD) is not None and h.get("acc1") is not None]
    if held:
        chosen = max(held, key=lambda h: (h[VAL_FIELD], -h["epoch"]))
        out.update(acc1_val_selected=chosen["acc1"], val_epoch=chosen["epoch"], val_acc1=chosen[VAL_FIELD])
    return out
