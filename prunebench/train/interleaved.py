"""Several trainings side by side in one thread: each takes one step in turn
(``train.seed_batching: interleaved``, the default way seeds train together).

Every job runs the one training of every stage, :func:`prunebench.train.loop.training`,
with its own model, optimizer, hooks, data order and files, so each job computes
exactly what it computes alone: the same kernels on the same tensors in the same
order (a model that draws from the global RNG while training, dropout, draws in the
interleaved order). On CUDA each job steps on a stream of its own: its step (on the
fast path one CUDA-graph replay) and its next batch are queued on that stream, and the
GPU runs the jobs' kernels side by side where one job's small kernels would leave it
idle. Unlike the stacked model of :mod:`prunebench.train.batched`, nothing asks the
jobs to share an architecture, a recipe or batchable hooks: every waiting training of
the seeds fits in.

A job that fails (diverges, say) ends with its error while the others go on; an
interrupt stops them all (each resumes from its last epoch's checkpoint)."""
import time
from contextlib import nullcontext
from typing import Dict, List, Union

import torch

from prunebench.train.job import TrainJob, training_of


class SharedClock:
    """Time shared by the trainings that run in turn: each interval of wall time is split
    evenly among the trainings live in it, so their ``seconds`` add up to the wall time."""

    def __init__(self):
        self.value, self.last, self.live = 0.0, time.perf_counter(), 1

    def tick(self, live: int) -> None:
        now = time.perf_counter()
        self.value += (now - self.last) / max(self.live, 1)
        self.last, self.live = now, live

    def __call__(self) -> float:
        self.tick(self.live)
        return self.value


def train_interleaved(jobs: List[TrainJob]) -> List[Union[Dict, Exception]]:
    """Train the jobs' models in place, one step each in turn; per job, what
    :func:`prunebench.train.job.train_job` returns, or the error that ended it. An
    interrupt (a ``BaseException`` that is no ``Exception``) ends every training and is raised."""
    device = jobs[0].data.device
    cuda = device.type == "cuda"
    clock = SharedClock()
    runs = [training_of(job, clock=clock, progress=job.progress and i == 0) for i, job in enumerate(jobs)]
    streams = [torch.cuda.Stream(device) if cuda else None for _ in jobs]
    for stream in streams:
        if stream is not None:
            stream.wait_stream(torch.cuda.current_stream(device))  # the models were built on this stream
    out: List[Union[Dict, Exception, None]] = [None] * len(jobs)
    live = list(range(len(jobs)))
    clock.tick(len(live))
    try:
        while live:
            for i in list(live):
                try:
                    with torch.cuda.stream(streams[i]) if cuda else nullcontext():
                        next(runs[i])
                    continue
                except StopIteration as done:
                    out[i] = done.value
                except Exception as e:  # noqa: BLE001 - this job's end; the others go on
                    out[i] = e
                live.remove(i)
                clock.tick(len(live))
    except BaseException:
        for run in runs:
            run.close()  # each stands at its last epoch's checkpoint
        raise
    for stream in streams:
        if stream is not None:
            torch.cuda.current_stream(device).wait_stream(stream)
    return out
