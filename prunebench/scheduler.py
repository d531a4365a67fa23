"""One scheduler for every training, in one thread (DESIGN "Stages as data, one scheduler").

The stages of every run handed to it (one run per seed) are the nodes of one graph
(:class:`prunebench.protocol.StagePlan`). A stage starts as soon as the rows it needs have
finished; every training in flight advances one step in turn (the generators of
:func:`prunebench.train.loop.training`), on CUDA each on a stream of its own, so the GPU
runs the small kernels of several trainings side by side; a training that becomes ready
joins the ones in flight at once. ``max_concurrent`` bounds the trainings in flight (None:
every one that is ready; 1: one after another, in the order of the stages). Each stage seeds
its own initialisation when it starts and each training draws its data from generators of
its own, so the order in which they start changes no number.

What becomes of each stage:

- cached: its result is read, not trained. Another process writing it (its lock): it is
  looked at again every ``LOCK_POLL_S`` seconds while the other trainings go on, up to
  ``lock_timeout``, then its row fails and the rest goes on.
- a training that diverges fails its own row (the rows that need it say so); the rest goes on.
- a training that fails otherwise beside others (out of memory, say) trains again alone,
  from its checkpoint or the weights it started from; one that fails on its input or its
  files (a :class:`~prunebench.errors.PrunebenchError`: a full disk, an unreadable image) would
  fail alone too, and does not. An error it raises alone, or an error of
  host work (pruning, measuring), stops its run's stages that have not started (the other
  runs and the trainings in flight go on) and is raised when the rest has finished.
- an interrupt (Ctrl-C, SIGTERM) stops every training at its last checkpoint (a rerun resumes
  each), releases the locks and logs where every stage stood, with a projection of the time
  it still needed.

Under torchrun every rank runs the same schedule, one training at a time, and waits for a
locked stage in step with rank 0."""
import logging
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Dict, Generator, List, Optional, Sequence

import torch
from tqdm import tqdm

from prunebench import distributed, stages
from prunebench.errors import Diverged, PrunebenchError
from prunebench.protocol import Run, StagePlan
from prunebench.stages import Stage, StageBusy
from prunebench.strategies.base import Outcome
from prunebench.train import job as jobs
from prunebench.train.job import Training
from prunebench.train.loop import Status

log = logging.getLogger(__name__)

LOCK_POLL_S = 5.0  # seconds between looks at a stage another job is writing
STATUS_EVERY_S = 60.0  # seconds between log lines on the trainings in flight
BAR_EVERY_S = 0.5  # seconds between redraws of the progress bar

WAITING, LOCKED, RUNNING, DONE = "waiting", "locked", "running", "done"


def _raise(error: BaseException):
    raise error


class SharedClock:
    """Time shared by the trainings in flight: each interval of wall time is split evenly
    among the trainings live in it, so their ``seconds`` add up to the wall time."""

    def __init__(self):
        self.value, self.last, self.live = 0.0, time.perf_counter(), 1

    def tick(self, live: int) -> None:
        now = time.perf_counter()
        self.value += (now - self.last) / max(self.live, 1)
        self.last, self.live = now, live

    def __call__(self) -> float:
        self.tick(self.live)
        return self.value


class Node:
    """A stage of one run in the schedule, and what became of it."""

    def __init__(self, run: Run, plan: StagePlan, label: str):
        self.run, self.plan, self.label = run, plan, label
        self.stage = Stage(run.cache, plan.kind, plan.values)
        self.state = WAITING
        self.looked = False  # its cache looked at once
        self.holds = False  # holds its stage's lock
        self.deadline: Optional[float] = None  # of its wait for another job's lock
        self.next_look = 0.0
        self.result: Optional[Dict] = None
        self.began: Optional[float] = None  # wall time its work started
        self.ended: Optional[float] = None
        self.epochs = 0.0  # trained in this process
        self.train_wall = 0.0  # seconds of its trainings in this process
        self.compile_seconds = 0.0


class Flight:
    """A training in flight: its generator, its stream, the weights it started from."""

    def __init__(self, node: Node, training: Training, steps: Generator[Status, None, Dict],
                 stream: Optional[torch.cuda.Stream], start: Optional[Dict[str, torch.Tensor]]):
        self.node, self.training, self.steps, self.stream, self.start = node, training, steps, stream, start
        self.status: Optional[Status] = None
        self.first: Optional[int] = None  # the epoch it started (or resumed) at
        self.began = time.perf_counter()

    def step(self) -> None:
        """One step (StopIteration with the training's result after its last)."""
        self.status = next(self.steps)
        if self.first is None:
            self.first = self.status.epoch

    def epochs(self) -> float:
        """Epochs trained since it started here."""
        return 0.0 if self.status is None else self.status.done - (self.first or 0)


class Scheduler:
    def __init__(self, runs: Sequence[Run], max_concurrent: Optional[int] = None, progress: bool = True):
        self.together = distributed.world_size() == 1  # under torchrun: one training at a time, ranks in step
        self.limit = max_concurrent if self.together else 1
        many = len(runs) > 1
        self.nodes = [Node(r, p, f"seed {r.cfg.seed} {p.row}" if many else p.row) for r in runs for p in r.stages()]
        self.index = {(id(n.run), n.plan.row): n for n in self.nodes}
        self.flights: List[Flight] = []
        self.errors: List[BaseException] = []
        self.stopped = set()  # ids of runs stopped by an error
        self.clock = SharedClock()
        self.device = runs[0].bench.device if runs else torch.device("cpu")
        self.streams = self.device.type == "cuda" and self.together
        self.dirty = True  # something finished since the last look for ready stages
        self.began = time.perf_counter()
        self.said = self.drawn = self.began
        self.bar = tqdm(total=0, unit="epoch", desc="training", dynamic_ncols=True, leave=True,
                        disable=not (progress and distributed.is_main()), bar_format="{l_bar}{bar}| {n:.1f}/{total} "
                        "epochs [{elapsed}<{remaining}]{postfix}")
        self.epochs_done = 0.0

    # -- the loop --------------------------------------------------------

    def run(self) -> None:
        """Run every stage; raise the first error of a run's stage once the rest has finished."""
        try:
            while True:
                started = self.start_ready()
                if self.flights:
                    self.advance()
                elif not started:
                    if all(n.state == DONE for n in self.nodes):
                        break
                    self.wait()
                self.tell()
        except BaseException:
            self.stop()
            raise
        finally:
            self.bar.close()
        log.info("schedule, %.1f s in all:\n%s", time.perf_counter() - self.began, self.report())
        if self.errors:
            raise self.errors[0]

    def start_ready(self) -> bool:
        """Start every stage whose needs are done, as far as ``max_concurrent`` allows; True when one
        started or finished (from its cache, or failed before it ran)."""
        now = time.monotonic()
        if not self.dirty and not any(n.state == LOCKED and n.next_look <= now for n in self.nodes):
            return False
        self.dirty = False
        moved = False
        for node in self.nodes:
            if node.state not in (WAITING, LOCKED) or node.state == LOCKED and node.next_look > now:
                continue
            needs = [self.index[(id(node.run), row)] for row in node.plan.needs]
            if any(n.state != DONE for n in needs):
                continue
            if id(node.run) in self.stopped:
                self.done(node, {"status": "failed", "note": "not run: its run stopped on an error"})
                moved = True
                continue
            failed = [n.plan.row for n in needs if n.result["status"] != "ok"]
            if failed:
                self.done(node, {"status": "failed", "note": f"not run: {', '.join(failed)} failed"})
                moved = True
                continue
            try:
                if not node.looked or node.state == LOCKED:  # a locked stage: finished by the other job yet?
                    node.looked = True
                    cached = stages.finished(node.stage, node.run.cfg.retry_failed)
                    if cached is not None:
                        log.info("%s: cached %s", node.label, node.stage.dir)
                        self.done(node, cached)
                        moved = True
                        continue
                if self.limit and len(self.flights) >= self.limit:
                    node.next_look = now + LOCK_POLL_S  # a locked one: looked at again later, not at every step
                    continue
                moved = self.open(node) or moved
            except Exception as e:  # noqa: BLE001 - an unreadable stage, say: this run's error, the others go on
                self.crash(node, e)
                moved = True
        return moved

    def open(self, node: Node) -> bool:
        """Take the node's lock and start its work; False when another job holds the lock (the
        node is looked at again later)."""
        timeout = node.run.cfg.lock_timeout
        if self.together:
            holder = node.stage.take()
            if holder is not None:
                now = time.monotonic()
                if node.deadline is None:
                    node.deadline = now + timeout
                    log.info("%s is being written by %s; looked at again every %g s, up to %g s", node.stage.dir,
                             holder, LOCK_POLL_S, timeout)
                if now >= node.deadline:
                    self.done(node, {"status": "failed", "note": str(node.stage.busy(holder, timeout))})
                    return True
                node.state, node.next_look = LOCKED, now + min(LOCK_POLL_S, node.deadline - now)
                return False
        else:
            try:
                self.wait_for_lock(node, timeout)
            except StageBusy as e:  # this row fails; the run goes on
                self.done(node, {"status": "failed", "note": str(e)})
                return True
        node.holds, node.state = True, RUNNING
        cached = stages.finished(node.stage, node.run.cfg.retry_failed)  # another job may have finished it meanwhile
        if cached is not None:
            log.info("%s: cached %s", node.label, node.stage.dir)
            self.release(node)
            self.done(node, cached)
            return True
        stages.begin(node.stage)
        log.info("%s: %s", node.label, node.stage.dir)
        node.began = time.perf_counter()
        self.carry_on(node, lambda: node.plan.work(node.stage))
        return True

    def wait_for_lock(self, node: Node, timeout: float) -> None:
        """Under torchrun: wait here for the lock, every rank in step with rank 0's looks."""
        deadline = time.monotonic() + timeout
        said = False
        while True:
            holder = node.stage.take()  # None on the other ranks
            late = time.monotonic() >= deadline
            word = distributed.broadcast(None if holder is None else str(node.stage.busy(holder, timeout)) if late
                                         else "wait")
            if word is None:
                return
            if word != "wait":
                raise StageBusy(word)
            if not said:
                log.info("%s is being written by another job; waiting up to %g s", node.stage.dir, timeout)
                said = True
            time.sleep(LOCK_POLL_S)

    def advance(self) -> None:
        """One step of every training in flight."""
        for flight in list(self.flights):
            try:
                if flight.stream is None:
                    flight.step()
                else:
                    with torch.cuda.stream(flight.stream):
                        flight.step()
            except StopIteration as end:
                self.land(flight)
                self.carry_on(flight.node, self.closing(flight, lambda out=end.value: flight.training.then(out)))
            except Diverged as e:
                self.land(flight)
                self.carry_on(flight.node, self.closing(flight, lambda e=e: _raise(e)))
            except Exception as e:  # noqa: BLE001 - this training's end; the others go on
                self.land(flight)
                if self.flights and not isinstance(e, PrunebenchError):  # a full disk or a bad image fails alone too
                    self.alone(flight, e)
                else:
                    self.carry_on(flight.node, self.closing(flight, lambda e=e: _raise(e)))

    # -- what starts, ends and follows a training ------------------------

    def carry_on(self, node: Node, work: Callable[[], Outcome]) -> None:
        """The next piece of a node's work (its start, or what follows its training): a
        :class:`Training` joins the flights; metrics finish the node."""
        try:
            try:
                outcome = work()
            except Diverged as e:
                self.conclude(node, {"status": "failed", "note": str(e)})
                return
            if isinstance(outcome, Training):
                self.launch(node, outcome)
            else:
                self.conclude(node, {"status": "ok", **outcome})
        except Exception as e:  # noqa: BLE001 - this run's error (a stage file that cannot be written, say)
            self.crash(node, e)

    @staticmethod
    def closing(flight: Flight, then: Callable[[], Outcome]) -> Callable[[], Outcome]:
        """What follows a training that ended: its ``close`` (a logger's files), then ``then``."""
        def work() -> Outcome:
            flight.training.close()
            return then()
        return work

    def launch(self, node: Node, training: Training) -> None:
        job = training.job
        jobs.place(job)  # on the current stream: a tensor freed on the flight's stream could be reused meanwhile
        start = None
        if self.limit != 1 and not job.checkpoint.exists():  # what a retry alone starts from
            start = {k: v.detach().to("cpu", copy=True) for k, v in job.model.state_dict().items()}
        stream = torch.cuda.Stream(self.device) if self.streams else None
        if stream is not None:
            stream.wait_stream(torch.cuda.current_stream(self.device))  # the model was built on this stream
        steps = jobs.training_of(job, clock=self.clock, progress=False)
        self.flights.append(Flight(node, training, steps, stream, start))
        self.clock.tick(len(self.flights))
        log.info("%s: trains %d epochs; in flight: %s", node.label, job.recipe.epochs,
                 ", ".join(f.node.label for f in self.flights))
        node.state = RUNNING
        self.bar.total += job.recipe.epochs

    def land(self, flight: Flight) -> None:
        """Take a training out of the flights (its kernels joined to the current stream)."""
        self.flights.remove(flight)
        self.clock.tick(len(self.flights))
        if flight.stream is not None:
            torch.cuda.current_stream(self.device).wait_stream(flight.stream)
        self.account(flight)

    def account(self, flight: Flight) -> None:
        node = flight.node
        node.epochs += flight.epochs()
        node.train_wall += time.perf_counter() - flight.began
        node.compile_seconds += flight.status.compile_seconds if flight.status else 0.0
        self.epochs_done += flight.epochs()
        self.dirty = True

    def alone(self, flight: Flight, error: Exception) -> None:
        """A training that failed beside others trains again alone, from its checkpoint or from
        the weights it started from (the others wait)."""
        node, job = flight.node, flight.training.job
        log.warning("%s failed beside %d other training%s (%s: %s); it trains again alone", node.label,
                    len(self.flights), "s" if len(self.flights) > 1 else "", type(error).__name__, error)
        def to_the_end() -> Outcome:
            if flight.start is not None and not job.checkpoint.exists():
                job.model.load_state_dict(flight.start)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            self.clock.tick(len(self.flights) + 1)
            retry = Flight(node, flight.training, jobs.training_of(job, clock=self.clock, progress=False), None, None)
            try:
                while True:
                    retry.step()
            except StopIteration as end:
                out = end.value
            finally:
                self.clock.tick(len(self.flights))
                self.account(retry)
                flight.training.close()
            return flight.training.then(out)
        self.carry_on(node, to_the_end)

    def release(self, node: Node) -> None:
        if node.holds:
            node.stage.release()
            node.holds = False

    def conclude(self, node: Node, result: Dict) -> None:
        """A node's end: its result written (it holds its lock) and the lock released."""
        if node.holds:
            origin = getattr(node.run, "provenance", None)  # what made it (prunebench.provenance)
            result = stages.conclude(node.stage, {**result, "provenance": origin} if origin else result)
        self.release(node)
        self.done(node, result)

    def crash(self, node: Node, error: Exception) -> None:
        """A node that raised: nothing written (a rerun trains it again), its run's other stages
        stop, and the error is raised once the rest has finished."""
        if isinstance(error, PrunebenchError):
            log.error("%s: %s", node.label, error)
        else:
            log.error("%s failed", node.label, exc_info=error)
        self.release(node)
        self.errors.append(error)
        self.stopped.add(id(node.run))
        self.done(node, {"status": "failed", "note": f"{type(error).__name__}: {error}"})

    def done(self, node: Node, result: Dict) -> None:
        node.result = {**result, "stage": str(node.stage.dir)}
        node.run.bench.results[node.plan.row] = node.result
        node.state = DONE
        node.ended = time.perf_counter()
        self.dirty = True

    def wait(self) -> None:
        """Nothing to train: sleep until the next look at a stage another job is writing."""
        looks = [n.next_look for n in self.nodes if n.state == LOCKED]
        if not looks:
            open_ = [n.label for n in self.nodes if n.state != DONE]
            raise RuntimeError(f"the schedule is stuck: {open_} wait for rows that never finish")
        time.sleep(max(0.0, min(looks) - time.monotonic()))
        self.dirty = True

    def stop(self) -> None:
        """After an interrupt: every training stops at its last checkpoint, every lock goes."""
        for flight in self.flights:
            for close in (flight.steps.close, flight.training.close):
                try:
                    close()
                except Exception:  # noqa: BLE001 - every other training must still stop and every lock go
                    log.exception("%s: while stopping", flight.node.label)
        for node in self.nodes:
            try:
                self.release(node)
            except OSError as e:
                log.error("%s: its lock could not be removed: %s", node.label, e)
        if distributed.is_main():
            log.warning("stopped after %.1f s; where each stage stood (a rerun resumes from the last checkpoints):\n%s",
                        time.perf_counter() - self.began, self.report())

    # -- telling what goes on --------------------------------------------

    def tell(self) -> None:
        """The progress bar (every BAR_EVERY_S) and a log line on the trainings in flight (every STATUS_EVERY_S)."""
        now = time.perf_counter()
        if now - self.drawn < BAR_EVERY_S:
            return
        self.drawn = now
        if not self.bar.disable:
            self.bar.n = self.epochs_done + sum(f.epochs() for f in self.flights)
            self.bar.set_postfix_str(", ".join(f"{f.node.label} {f.status.epoch}/{f.status.epochs}"
                                               for f in self.flights if f.status), refresh=True)
        if now - self.said >= STATUS_EVERY_S and self.flights:
            self.said = now
            log.info("in flight: %s", "; ".join(self.flight_line(f) for f in self.flights))

    @staticmethod
    def flight_line(f: Flight) -> str:
        if f.status is None:
            return f"{f.node.label} starting"
        done = f.epochs()
        rate = (time.perf_counter() - f.began - f.status.compile_seconds) / done if done > 0 else None
        return (f"{f.node.label} epoch {f.status.done:.1f}/{f.status.epochs}" +
                (f", {rate:.2f} s/epoch" if rate else "") +
                (f", {f.status.compile_seconds:.1f} s compiling" if f.status.compile_seconds else ""))

    def report(self) -> str:
        """One line per stage: what became of it, when it started and ended (seconds after the
        schedule began), its epochs here, s/epoch (compilation left out) and compile time; for a
        training cut short, where it stood and the seconds it still needed at its rate."""
        lines = []
        in_flight = {id(f.node): f for f in self.flights}
        now = time.perf_counter()
        for n in self.nodes:
            f = in_flight.get(id(n))
            status = n.result["status"] if n.result else n.state
            if n.result and n.began is None and status == "ok":
                status = "cached"
            line = f"  {n.label:<22} {status:<8}"
            if n.began is not None:
                end = n.ended if n.ended is not None else now
                line += f" start {n.began - self.began:7.1f} s  end {end - self.began:7.1f} s  wall {end - n.began:7.1f} s"
            epochs = n.epochs + (f.epochs() if f else 0.0)
            if epochs > 0:
                wall = n.train_wall + (now - f.began if f else 0.0)
                compiled = n.compile_seconds + (f.status.compile_seconds if f and f.status else 0.0)
                rate = max(wall - compiled, 0.0) / epochs
                line += f"  {epochs:6.1f} epochs  {rate:.3f} s/epoch  compile {compiled:.1f} s"
                if f is not None and f.status is not None:
                    left = f.status.epochs - f.status.done
                    line += f"  at epoch {f.status.done:.1f} of {f.status.epochs}, ~{left * rate:.0f} s left"
            if n.result and n.result.get("status") != "ok":
                line += f"  ({n.result.get('note', '')[:120]})"
            lines.append(line)
        return "\n".join(lines)


def schedule(runs: Sequence[Run], max_concurrent: Optional[int] = None, progress: bool = True) -> None:
    """Run every stage of ``runs`` (their rows then stand in each run's bench)."""
    Scheduler(runs, max_concurrent, progress).run()


class Trainings:
    """Plain training jobs as one run of the scheduler (benchmarks, tests): a stage each, named by
    the job's kind, none needing another, their folders under ``cache``."""

    def __init__(self, train_jobs: Sequence[jobs.TrainJob], cache: Path):
        self.jobs, self.cache = list(train_jobs), Path(cache)
        self.cfg = SimpleNamespace(seed=0, retry_failed=False, lock_timeout=0)
        self.bench = SimpleNamespace(results={}, device=self.jobs[0].data.device)

    def stages(self) -> List[StagePlan]:
        return [StagePlan(j.kind, "training", {"job": j.kind}, lambda stage, j=j: Training(j, then=lambda out: out))
                for j in self.jobs]

    def results(self) -> List[Dict]:
        """Each job's stage result: what its training returned, with ``status`` (and ``note`` when it failed)."""
        return [self.bench.results[j.kind] for j in self.jobs]


def train_together(train_jobs: Sequence[jobs.TrainJob], cache: Path, max_concurrent: Optional[int] = None,
                   progress: bool = False) -> List[Dict]:
    """Train ``train_jobs`` through the scheduler (every one in flight, a step each in turn); each
    job's result: what :func:`prunebench.train.job.train_job` returns, with ``status``."""
    run = Trainings(train_jobs, cache)
    Scheduler([run], max_concurrent, progress).run()
    return run.results()
