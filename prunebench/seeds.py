"""Several seeds in one process (``seeds=[0,1,2,3,4]``): one :class:`Run` per seed, each
with its own stage folders and rows (the ``seed`` column tells them apart, so the
table and ``prunebench-report`` see ordinary per-seed runs). Liu et al. 2019 report
the mean of 5 runs.

With ``train.batch_seeds=true`` the runs go forward together. The :class:`SeedBatcher`
runs one thread per seed, one at a time (each holds the turn until it asks for training
or finishes, so the global RNG, the files and the logs see what sequential runs see);
when every seed still running is waiting for training, the waiting trainings go
together, as ``train.seed_batching`` says:

- ``interleaved`` (the default): every waiting training at once, each taking one step
  in turn, on CUDA each on a stream of its own
  (:func:`prunebench.train.interleaved.train_interleaved`): any architecture, method or
  recipe, each seed's arithmetic that of its single-seed run (models that draw from the
  global RNG while training, dropout, aside);
- ``stacked``: the waiting trainings of one kind and architecture as one batched model
  (:func:`prunebench.train.batched.train_batched`: the unpruned models, the sparse
  stages of methods whose hooks are batchable (slimming), and the retrainings of
  predefined architectures); a training that cannot be batched trains alone, and with
  ``train.parallel_stages=N`` these trainings run N at a time (threads, a CUDA stream each).

Every seed still writes and caches its own stage folder."""
import copy
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional

import torch
from omegaconf import DictConfig

from prunebench import distributed
from prunebench.errors import Diverged, PrunebenchError
from prunebench.pipeline import Run, on_own_stream
from prunebench.train.batched import CannotBatch, train_batched
from prunebench.train.interleaved import train_interleaved
from prunebench.train.job import TrainJob, train_job
from prunebench.validate import SEED_BATCHING, one_of

log = logging.getLogger(__name__)


def with_seed(cfg: DictConfig, seed: int) -> DictConfig:
    out = copy.deepcopy(cfg)
    out.seed = int(seed)
    out.seeds = None
    return out


class Waiting:
    """A seed's job waiting for the batcher, and what became of it."""

    def __init__(self, job: TrainJob):
        self.job = job
        self.out: Optional[Dict] = None
        self.error: Optional[BaseException] = None
        self.done = False

    def finish(self, result) -> None:
        """The job's end: its result, or the error its seed's run raises."""
        if isinstance(result, BaseException):
            self.error = result
        else:
            self.out = result
        self.done = True

    def key(self, mode: str):
        j = self.job
        if mode == "interleaved":
            return mode  # every waiting training in one group
        if not j.batchable():
            return id(self)
        return (j.kind, repr(getattr(j.model, "spec", None)), repr(j.recipe), j.masks is None)


class SeedBatcher:
    """Runs the seeds' runs side by side, taking turns, and trains their jobs together
    (``mode``: interleaved or stacked)."""

    def __init__(self, parallel: int = 1, mode: str = "interleaved"):
        one_of("train.seed_batching", mode, SEED_BATCHING)
        self.parallel = parallel  # stacked groups trained side by side (train.parallel_stages), a CUDA stream each
        self.mode = mode
        self.turn = threading.Condition(threading.RLock())
        self.live = 0
        self.waiting: List[Waiting] = []

    def execute(self, runs: List[Run]) -> List[List[Dict]]:
        """Every run's rows, in the order of ``runs``; a run's error is raised here after the
        other runs have finished (what they trained is cached)."""
        rows: List[Optional[List[Dict]]] = [None] * len(runs)
        errors: List[BaseException] = []

        def body(i: int, r: Run) -> None:
            with self.turn:
                try:
                    rows[i] = r.execute()
                except BaseException as e:  # noqa: BLE001 - handed to the main thread
                    errors.append(e)
                finally:
                    self.live -= 1
                    self.progress()

        for r in runs:
            r.trainer, r.idle = self.train, self.idle
        self.live = len(runs)
        threads = [threading.Thread(target=body, args=(i, r), name=f"seed{r.cfg.seed}", daemon=True)
                   for i, r in enumerate(runs)]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.5)  # short joins: Ctrl-C reaches the main thread; finished stages stay cached
        if errors:
            raise errors[0]
        return rows

    def idle(self, seconds: float) -> None:
        """A run's wait for a stage that another process is writing: the other seeds go on meanwhile
        (this seed counts as not live, so nobody waits for its training), then it takes its turn back."""
        self.live -= 1
        try:
            self.progress()
            self.turn.wait(seconds)
        finally:
            self.live += 1

    def train(self, job: TrainJob) -> Dict:
        """A run's trainer: wait until every live seed waits or has finished, then train."""
        w = Waiting(job)
        self.waiting.append(w)
        self.progress()
        while not w.done:
            self.turn.wait()
        if w.error is not None:
            raise w.error
        return w.out

    def progress(self) -> None:
        """When every live seed waits for training: train every waiting job, in groups
        (interleaved: all in one; stacked: those of one kind and architecture), ``parallel``
        groups side by side."""
        if not self.waiting or len(self.waiting) != self.live:
            return
        waiting, self.waiting = self.waiting, []
        try:
            groups: Dict[object, List[Waiting]] = {}
            for w in waiting:
                groups.setdefault(w.key(self.mode), []).append(w)
            work = [lambda g=sorted(g, key=lambda w: w.job.seed): self.train_group(g) for g in groups.values()]
            if self.parallel <= 1 or len(work) == 1:
                for w in work:
                    w()
            else:
                log.info("%d trainings of the seeds side by side, %d at a time", len(work), self.parallel)
                with ThreadPoolExecutor(max_workers=self.parallel, thread_name_prefix="seeds") as pool:
                    for f in [pool.submit(on_own_stream, w, waiting[0].job.data.device) for w in work]:
                        f.result()  # train_group keeps each job's error for its own seed
        except BaseException as e:  # noqa: BLE001 - no seed may wait for a training that will not come
            for w in waiting:
                if not w.done:
                    w.finish(e)
        finally:
            self.turn.notify_all()

    def train_group(self, group: List[Waiting]) -> None:
        if len(group) > 1 and self.mode == "interleaved":
            self.interleave(group)
            return
        if len(group) > 1:
            seeds = [w.job.seed for w in group]
            try:
                log.info("%s: seeds %s batched", group[0].job.kind, seeds)
                for w, out in zip(group, train_batched([w.job for w in group])):
                    w.finish(out)
                return
            except CannotBatch as e:
                log.info("%s: seeds %s one by one: %s", group[0].job.kind, seeds, e)
            except Diverged as e:  # the seeds that did not diverge go on alone, from their checkpoints
                log.warning("%s; the seeds %s go on one by one", e, seeds)
            except Exception as e:  # noqa: BLE001 - what fails batched may train alone: each seed tries
                log.warning("%s: seeds %s could not train batched (%s: %s); they go on one by one",
                            group[0].job.kind, seeds, type(e).__name__, e)
            except BaseException as e:  # noqa: BLE001 - an interrupt: each seed's run gets it
                for w in group:
                    w.finish(e)
                return
        for w in group:
            w.finish(train_alone(w.job))

    def interleave(self, group: List[Waiting]) -> None:
        """The group's jobs a step each in turn. A job that fails for another reason than
        divergence (memory, say, with every model on the device at once) trains again alone,
        from its checkpoint or from the weights it started from."""
        log.info("seeds %s: %s side by side, a step each in turn", [w.job.seed for w in group],
                 ", ".join(w.job.kind for w in group))
        starts = [None if w.job.checkpoint.exists() else
                  {k: v.detach().to("cpu", copy=True) for k, v in w.job.model.state_dict().items()} for w in group]
        try:
            outs = train_interleaved([w.job for w in group])
        except BaseException as e:  # noqa: BLE001 - an interrupt: each seed's run gets it
            for w in group:
                w.finish(e)
            return
        for w, out, start in zip(group, outs, starts):
            if isinstance(out, Exception) and not isinstance(out, Diverged):
                log.warning("%s of seed %d failed beside the other seeds (%s: %s); it trains again alone",
                            w.job.kind, w.job.seed, type(out).__name__, out)
                if start is not None and not w.job.checkpoint.exists():
                    w.job.model.load_state_dict(start)
                if w.job.data.device.type == "cuda":
                    torch.cuda.empty_cache()
                out = train_alone(w.job)
            w.finish(out)


def train_alone(job: TrainJob):
    """What training ``job`` alone gives: its result, or the error that ended it (raised later
    in the seed's own thread)."""
    try:
        return train_job(job)
    except BaseException as e:  # noqa: BLE001 - handed to the seed's thread
        return e


def run(cfg: DictConfig) -> List[Dict]:
    if len(set(cfg.seeds)) != len(cfg.seeds):
        raise PrunebenchError(f"seeds must differ from each other, got {list(cfg.seeds)}")
    runs = [Run(with_seed(cfg, s)) for s in cfg.seeds]
    batch = cfg.get("train") is not None and cfg.train.batch_seeds
    if batch and distributed.world_size() > 1:
        log.info("train.batch_seeds: under torchrun the seeds train one by one, each across the ranks")
        batch = False
    if not batch:
        return [row for r in runs for row in r.execute()]
    for r in runs[1:]:
        r.__dict__["data"] = runs[0].data  # one copy of the data set for every seed
    parallel = cfg.train.parallel_stages
    for r in runs:  # the batcher trains side by side what the seeds wait for; each seed's stages go in turn
        r.cfg.train.parallel_stages = 1
    batcher = SeedBatcher(parallel, cfg.train.get("seed_batching", "interleaved"))
    if batcher.mode == "interleaved" and parallel > 1:
        log.info("train.parallel_stages=%d: with train.seed_batching=interleaved the waiting trainings of the seeds "
                 "all go side by side already", parallel)
    return [row for rows in batcher.execute(runs) for row in rows]
