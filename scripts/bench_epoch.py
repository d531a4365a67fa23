#!/usr/bin/env python
"""Seconds per training epoch: the reference recipe against prunebench's trainer.

Times, in one run on the same model, batch size and device:
- reference: torchvision-style DataLoader with PIL transforms (pad 4 + random crop,
  flip, ToTensor, Normalize), fp32, with 1 and with N workers;
- prunebench: data held on the device as uint8, augmentation on the device in
  whole batches, the training step of prunebench.train.step: eager fp32, the
  fast path (bf16 autocast, channels_last, torch.compile, on CUDA the whole step
  in one CUDA graph) and ``graph`` (the same without compilation: the eager step
  captured), each over the same batches (``--loops`` picks the rows); the warm-up's
  seconds (compilation, capture) of the fast and graph rows give the epochs of a stage
  after which compiling pays off;
- ``alone`` and ``scheduled``: one whole training (prunebench.train.loop: its epochs, loss
  readouts, checkpoint) on the fast path, trained alone and through the scheduler
  (prunebench.scheduler): the scheduler's cost per step (the target: within 2%);
- ``flight``: N trainings in flight through the scheduler, a step each in turn, a CUDA
  stream each, for each N of ``--in-flight`` (default 1, 2, 4, 6): the seconds of one epoch
  of all N, and the throughput against one training (the concurrency curve of the device).

Each loop runs `--steps` steps (after `--warmup` untimed ones; the training rows: an
untimed first epoch of that many steps, where compilation and capture happen) and the time is
scaled to one epoch of the training set. Prints one table and summary lines.

    python scripts/bench_epoch.py --device cpu --steps 10 --loops reference,eager   # a CPU machine
    python scripts/bench_epoch.py --root /data --steps 200                            # CIFAR-10 on the GPU
"""
import argparse
import math
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from PIL import Image
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader, Dataset

from prunebench import data as datasets
from prunebench import models
from prunebench.config import DatasetConfig, ModelConfig, SyntheticDatasetConfig
from prunebench.bench import resolve_device
from prunebench.scheduler import train_together
from prunebench.train import Recipe, TrainHooks
from prunebench.train.job import TrainJob, train_job
from prunebench.train.step import Speed, Step, optimizer

FAST = Speed(precision="bf16", channels_last=True, compile="on")
GRAPH = Speed(precision="bf16", channels_last=True, compile="graph")  # captured, not compiled


class PILImages(Dataset):
    """The reference input path: one PIL image at a time through torchvision transforms."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, mean, std, pad: int):
        from torchvision import transforms

        self.x, self.y = x.permute(0, 2, 3, 1).numpy(), y.numpy()
        self.t = transforms.Compose([transforms.RandomCrop(x.shape[-1], padding=pad),
                                     transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                                     transforms.Normalize(mean, std)])

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.t(Image.fromarray(self.x[i])), int(self.y[i])


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reference_loop(model, d, args, device, workers):
    loader = DataLoader(PILImages(d.train_x, d.train_y, d.mean, d.std, d.pad), batch_size=args.batch, shuffle=True,
                        num_workers=workers, drop_last=True, persistent_workers=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    model.train()
    it = iter(loader)
    loss = None
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            sync(device)
            t0 = time.perf_counter()
        x, y = next(it)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(device)
    return time.perf_counter() - t0, loss.item()


def step_loop(model, d, args, device, speed):
    """The inner loop of prunebench.train.train with ``speed``: ``args.warmup`` untimed steps
    (compilation and CUDA-graph capture happen there), then ``args.steps`` timed ones; the loss
    is read once at the end."""
    recipe = Recipe(epochs=1, lr=0.1, batch_size=args.batch)
    if speed.channels_last:
        model.to(memory_format=torch.channels_last)
    step = Step(model, optimizer(model, recipe, device, speed), TrainHooks(), speed, device)
    model.train()
    batches = d.train_batches(args.batch, torch.Generator(device=device).manual_seed(0))
    t0 = time.perf_counter()
    for _ in range(args.warmup):
        step(*next(batches))
    sync(device)
    step_loop.warmup_seconds = time.perf_counter() - t0  # compilation and capture included
    step.loss_sum.zero_()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step(*next(batches))
    sync(device)
    return time.perf_counter() - t0, step.loss_sum.item() / args.steps


class EpochClock(TrainHooks):
    """Records when each epoch of a training ends, the device drained first."""

    def __init__(self, device, ends):
        self.device, self.ends = device, ends

    def on_epoch_end(self, model, epoch):
        sync(self.device)
        self.ends.append((epoch, time.perf_counter()))


def training_jobs(spec, d, args, device, speed, n, folder: Path, ends):
    """``n`` trainings of two epochs of ``args.steps`` steps each (the first untimed), seeds 0..n-1."""
    out = []
    for s in range(n):
        torch.manual_seed(s)
        (folder / f"t{s}").mkdir(parents=True, exist_ok=True)
        out.append(TrainJob(kind=f"t{s}", model=models.build(spec).to(device), data=d, seed=s,
                            recipe=Recipe(epochs=2, lr=0.1, batch_size=args.batch, steps_per_epoch=args.steps),
                            checkpoint=folder / f"t{s}" / "checkpoint.pt", hooks=EpochClock(device, ends),
                            progress=False, speed=speed, checkpoint_every=3600))
    return out


def overhead_loop(spec, d, args, device, speed):
    """What an epoch of the training loop adds to its steps: one evaluation of the test set (the
    paper's schedules evaluate every epoch) and one checkpoint (model, SGD state; written every
    ``train.checkpoint_every`` seconds), each timed ``args.repeats`` times, the device drained."""
    from prunebench import atomic
    from prunebench.train.evaluate import hits

    model = models.build(spec).to(device)
    if speed.channels_last:
        model.to(memory_format=torch.channels_last)
    opt = optimizer(model, Recipe(epochs=1, lr=0.1), device, speed)
    step = Step(model, opt, TrainHooks(), speed, device)
    batches = d.train_batches(args.batch, torch.Generator(device=device).manual_seed(0))
    for _ in range(args.warmup):  # momentum buffers exist, the fast path is compiled
        step(*next(batches))
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, work in (("evaluation", lambda: hits(model, d, 1000)),
                           ("checkpoint", lambda: atomic.save({"model": model.state_dict(),
                                                               "optimizer": opt.state_dict()}, Path(tmp) / "c.pt"))):
            work()
            sync(device)
            t0 = time.perf_counter()
            for _ in range(args.repeats):
                work()
            sync(device)
            out[name] = (time.perf_counter() - t0) / args.repeats
    return out


def timed_epoch(ends, n):
    """Seconds from the first training's end of epoch 1 to the last one's end of epoch 2."""
    first = min(t for e, t in ends if e == 0)
    last = max(t for e, t in ends if e == 1)
    assert sum(1 for e, _ in ends if e == 1) == n, ends
    return last - first


def alone_loop(spec, d, args, device, speed):
    ends = []
    with tempfile.TemporaryDirectory() as tmp:
        [job] = training_jobs(spec, d, args, device, speed, 1, Path(tmp), ends)
        out = train_job(job)
    return timed_epoch(ends, 1), out["loss"]


def flight_loop(spec, d, args, device, speed, n):
    """``n`` trainings through the scheduler, all in flight."""
    ends = []
    with tempfile.TemporaryDirectory() as tmp:
        outs = train_together(training_jobs(spec, d, args, device, speed, n, Path(tmp) / "jobs", ends),
                              Path(tmp) / "stages")
    bad = [o for o in outs if o["status"] != "ok"]
    if bad:
        raise RuntimeError(f"a training failed: {bad[0].get('note')}")
    return timed_epoch(ends, n), sum(o["loss"] for o in outs) / n


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--model", default="vgg19", help="vgg11..vgg19, resnet20..resnet110")
    p.add_argument("--width", type=float, default=1.0, help="width multiplier of the model (a small one on a CPU "
                                                            "shows the per-step cost of the loop and the scheduler)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=100, help="timed steps per loop")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (the fast path: at least 4)")
    p.add_argument("--loops", default="reference,eager,fast,graph,overhead,alone,scheduled,flight",
                   help="rows: reference (DataLoader), eager, fast (the step alone), graph (the step captured, not "
                        "compiled), overhead (an epoch's "
                        "evaluation and checkpoint, against the fast step's epoch), alone and scheduled (one whole "
                        "training on the fast path, alone and through the scheduler), flight (--in-flight "
                        "trainings through the scheduler)")
    p.add_argument("--in-flight", default="1,2,4,6", help="numbers of trainings in flight of the flight rows")
    p.add_argument("--repeats", type=int, default=3, help="timed evaluations and checkpoints of the overhead row")
    p.add_argument("--workers", default="1,8", help="DataLoader workers of the reference loops")
    p.add_argument("--root", default=None, help="folder holding cifar-10-batches-py (default: synthetic 32x32)")
    args = p.parse_args()
    device = resolve_device(args.device)
    if args.root:
        dcfg = DatasetConfig(name="cifar10", root=args.root, download=False)
    else:
        dcfg = SyntheticDatasetConfig(name="synthetic", pad=4, flip=True, image_size=32, train_size=50_000, test_size=10)
    d = datasets.load(OmegaConf.structured(dcfg))
    arch, depth = ("vgg", int(args.model[3:])) if args.model.startswith("vgg") else ("resnet", int(args.model[6:]))
    spec = models.spec_from_config(OmegaConf.structured(ModelConfig(name=args.model, arch=arch, depth=depth,
                                                                    width=args.width)), 3, d.num_classes)
    rows = []
    per_loop = {}

    def record(name, seconds, loss):
        rows.append((name, seconds / args.steps * steps_per_epoch, loss))
        per_loop[name] = rows[-1][1]
        print(f"row: {name}: {rows[-1][1]:.2f} s/epoch", flush=True)  # as it comes, should the run be cut short

    loops = set(args.loops.split(","))
    if loops & {"fast", "graph", "alone", "scheduled", "flight"} and args.warmup < 4:
        p.error("the fast path captures its CUDA graph at step 4: use --warmup 4 or more")
    steps_per_epoch = len(d.train_y) // args.batch
    if args.warmup + args.steps > steps_per_epoch:
        p.error(f"--warmup + --steps must fit in one epoch ({steps_per_epoch} steps)")
    for w in [int(w) for w in args.workers.split(",") if w and "reference" in loops]:
        torch.manual_seed(0)
        record(f"reference: DataLoader, {w} worker{'s' if w > 1 else ''}, fp32",
               *reference_loop(models.build(spec).to(device), d, args, device, w))
    on_device = d.to(device) if loops - {"reference"} else None
    graph = " + one CUDA graph" if device.type == "cuda" else ""
    warmups = {}
    for name, speed, label in (("eager", Speed(), "eager fp32"), ("fast", FAST, f"bf16, channels_last, compiled{graph}"),
                               ("graph", GRAPH, f"bf16, channels_last, not compiled{graph}")):
        if name in loops:
            torch.manual_seed(0)
            record(f"prunebench: data on device, {label}", *step_loop(models.build(spec).to(device), on_device,
                                                                      args, device, speed))
            warmups[name] = (step_loop.warmup_seconds, rows[-1][1])
            print(f"row: {name}: {args.warmup} warm-up steps (compilation, capture) took {warmups[name][0]:.1f} s",
                  flush=True)
    summary = []
    if "fast" in warmups and "graph" in warmups:
        (wf, ef), (wg, eg) = warmups["fast"], warmups["graph"]
        verdict = (f"compiling pays off after {(wf - wg) / (eg - ef):.0f} epochs of a stage" if eg > ef else
                   "the captured step is as fast as the compiled one: compiling never pays off")
        summary.append(f"summary: a stage's warm-up takes {wf:.1f} s compiled and {wg:.1f} s captured; an epoch "
                       f"{ef:.2f} s against {eg:.2f} s: {verdict}")
    if "overhead" in loops:
        shares = overhead_loop(spec, on_device, args, device, FAST)
        path = next((k for k in ("fast", "graph") if k in warmups), None)  # the step-only epoch to compare with
        for name, seconds in shares.items():
            print(f"row: one {name}: {seconds:.3f} s", flush=True)
            if path:
                epoch = warmups[path][1]
                summary.append(f"summary: one {name} takes {seconds:.3f} s, {100 * seconds / epoch:.1f}% of an epoch "
                               f"of the {path} step ({epoch:.2f} s)")
    if "alone" in loops:
        record("one training (loop, readouts), fast path, alone", *alone_loop(spec, on_device, args, device, FAST))
    if "scheduled" in loops:
        record("one training, fast path, through the scheduler",
               *flight_loop(spec, on_device, args, device, FAST, 1))
        if "alone" in loops:
            a, b = per_loop[rows[-2][0]], per_loop[rows[-1][0]]
            summary.append(f"summary: the scheduler costs {100 * (b - a) / a:+.1f}% per epoch of one training "
                           f"({b:.2f} against {a:.2f} s/epoch alone)")
    streams = "a CUDA stream each" if device.type == "cuda" else "in turn"
    one = None
    for n in [int(k) for k in args.in_flight.split(",") if k and "flight" in loops]:
        name = f"{n} training{'s' if n > 1 else ''} in flight, {streams}, fast path (s for one epoch of all {n})"
        record(name, *flight_loop(spec, on_device, args, device, FAST, n))
        one = per_loop[name] if n == 1 else one
        if one:
            summary.append(f"summary: {n} in flight: {per_loop[name]:.2f} s for an epoch of each, "
                           f"{per_loop[name] / n:.2f} s per training-epoch, {n * one / per_loop[name]:.2f}x the "
                           f"throughput of one")
    base = rows[0][1]
    table = Table(title=f"{args.model}{f' x{args.width:g}' if args.width != 1 else ''}, batch {args.batch}, {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
                        f"{args.steps} timed steps scaled to {steps_per_epoch} steps an epoch")
    for c in ["loop", "s/epoch", "speed-up vs first", "last loss"]:
        table.add_column(c, justify="left" if c == "loop" else "right")
    for name, s, loss in rows:
        table.add_row(name, f"{s:.2f}", f"{base / s:.2f}x", f"{loss:.3f}" if math.isfinite(loss) else "nan")
    Console().print(table)
    best = min(rows, key=lambda r: r[1])
    print(f"summary: {best[0]} is fastest at {best[1]:.2f} s/epoch, {base / best[1]:.2f}x the first row "
          f"({base:.2f} s/epoch)")
    for line in summary:
        print(line)


if __name__ == "__main__":
    main()
