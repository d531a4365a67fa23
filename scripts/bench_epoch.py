#!/usr/bin/env python
"""Seconds per training epoch: the reference recipe against prunebench's trainer.

Times, in one run on the same model, batch size and device:
- reference: torchvision-style DataLoader with PIL transforms (pad 4 + random crop,
  flip, ToTensor, Normalize), fp32, with 1 and with N workers;
- prunebench: data held on the device as uint8, augmentation on the device in
  whole batches, the training step of prunebench.train.step: eager fp32, and the
  fast path (bf16 autocast, channels_last, torch.compile, on CUDA the whole step
  in one CUDA graph), each over the same batches (``--loops`` picks the rows);
- ``--seeds`` seeds trained together (``train.batch_seeds``), eager fp32 and on the fast
  path, both ways ``train.seed_batching`` offers: ``stacked`` (one vmap model: rows
  seeds, seeds_fast) and ``interleaved`` (each seed its own step, taking turns, a CUDA
  stream each: rows streams, streams_fast); the summary gives each as a multiple of one
  seed's time on the same path (the target: five seeds at most twice one).

Each loop runs `--steps` steps (after `--warmup` untimed ones) and the time is
scaled to one epoch of the training set. Prints one table and a summary line.

    python scripts/bench_epoch.py --device cpu --steps 10 --loops reference,eager   # a CPU machine
    python scripts/bench_epoch.py --root /data --steps 200                            # CIFAR-10 on the GPU
"""
import argparse
import dataclasses
import math
import time
from contextlib import nullcontext

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
from prunebench.pipeline import resolve_device
from prunebench.train import Recipe, TrainHooks
from prunebench.train.step import Speed, Step, optimizer

FAST = Speed(precision="bf16", channels_last=True, compile="on")


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


def timed(lanes, args, device):
    """Warm-up steps (compilation and CUDA-graph capture happen there), then ``args.steps`` timed
    steps. ``lanes`` is a list of (step, next_batch, stream): every lane takes one step in turn,
    on its own CUDA stream when it has one. The loss (the mean over models and lanes) is read
    once at the end."""
    def one_round():
        for step, next_batch, stream in lanes:
            with torch.cuda.stream(stream) if stream is not None else nullcontext():
                step(*next_batch())

    def join():
        for _, _, stream in lanes:
            if stream is not None:
                torch.cuda.current_stream(device).wait_stream(stream)
        sync(device)

    for _, _, stream in lanes:
        if stream is not None:
            stream.wait_stream(torch.cuda.current_stream(device))  # the models' init is done
    for _ in range(args.warmup):
        one_round()
    join()
    for step, _, _ in lanes:
        step.loss_sum.zero_()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        one_round()
    join()
    seconds = time.perf_counter() - t0
    loss = sum(step.loss_sum.mean().item() for step, _, _ in lanes) / len(lanes) / args.steps
    return seconds, loss


def lane(model, d, args, device, speed, seed, stream=None):
    """One model's (step, next_batch, stream) for :func:`timed`: the inner loop of
    prunebench.train.train with ``speed``, its batches drawn from ``seed``."""
    recipe = Recipe(epochs=1, lr=0.1, batch_size=args.batch)
    if speed.channels_last:
        model.to(memory_format=torch.channels_last)
    step = Step(model, optimizer(model, recipe, device, speed), TrainHooks(), speed, device)
    model.train()
    batches = d.train_batches(args.batch, torch.Generator(device=device).manual_seed(seed))
    return step, lambda: next(batches), stream


def step_loop(model, d, args, device, speed):
    """The inner loop of prunebench.train.train with ``speed``."""
    return timed([lane(model, d, args, device, speed, 0)], args, device)


def seeds_loop(spec, d, args, device, speed):
    """``--seeds`` models of one architecture trained as one batched model (``train.batch_seeds``):
    the step of prunebench.train.batched, each seed on its own batch, ``speed`` as in the other rows
    (channels_last aside: batches of seeds are 5-D)."""
    from prunebench.train.batched import SeedStack, per_seed_cross_entropy
    seeds = list(range(args.seeds))
    models_ = []
    for s in seeds:
        torch.manual_seed(s)
        models_.append(models.build(spec).to(device))
    stack = SeedStack(models_).train()
    recipe = Recipe(epochs=1, lr=0.1, batch_size=args.batch)
    speed = dataclasses.replace(speed, channels_last=False)
    step = Step(stack.tree, optimizer(stack.tree, recipe, device, speed), TrainHooks(), speed, device, net=stack,
                criterion=per_seed_cross_entropy, models=len(seeds))
    streams = [d.train_batches(args.batch, torch.Generator(device=device).manual_seed(s)) for s in seeds]

    def next_batch():
        batches = [next(b) for b in streams]
        return torch.stack([b[0] for b in batches]), torch.stack([b[1] for b in batches])
    return timed([(step, next_batch, None)], args, device)


def interleaved_loop(spec, d, args, device, speed):
    """``--seeds`` models, each with its own step (its own CUDA graph on the fast path) and its
    own data, taking steps in turn, each seed on a CUDA stream of its own so that the GPU runs
    the seeds' kernels side by side."""
    lanes = []
    for s in range(args.seeds):
        torch.manual_seed(s)
        lanes.append(lane(models.build(spec).to(device), d, args, device, speed, s,
                          torch.cuda.Stream(device) if device.type == "cuda" else None))
    return timed(lanes, args, device)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--model", default="vgg19", help="vgg11..vgg19, resnet20..resnet110")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=100, help="timed steps per loop")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (the fast path: at least 4)")
    p.add_argument("--loops", default="reference,eager,fast,seeds,seeds_fast,streams,streams_fast",
                   help="rows: reference (DataLoader), eager, fast, seeds and seeds_fast (--seeds models batched, "
                        "eager and fast), streams and streams_fast (--seeds models taking steps in turn, a CUDA "
                        "stream each)")
    p.add_argument("--seeds", type=int, default=5, help="models of the seeds and streams rows, trained together")
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
    spec = models.spec_from_config(OmegaConf.structured(ModelConfig(name=args.model, arch=arch, depth=depth)),
                                   3, d.num_classes)
    rows = []
    per_loop = {}
    one, together = {}, {}  # path (eager | fast) -> one seed's s/epoch; row -> (s/epoch of all the seeds, path)

    def record(name, seconds, loss):
        rows.append((name, seconds / args.steps * steps_per_epoch, loss))
        per_loop[name] = rows[-1][1]

    loops = set(args.loops.split(","))
    if loops & {"fast", "seeds_fast", "streams_fast"} and args.warmup < 4:
        p.error("the fast path captures its CUDA graph at step 4: use --warmup 4 or more")
    steps_per_epoch = len(d.train_y) // args.batch
    if args.warmup + args.steps > steps_per_epoch:
        p.error(f"--warmup + --steps must fit in one epoch ({steps_per_epoch} steps)")
    for w in [int(w) for w in args.workers.split(",") if w and "reference" in loops]:
        torch.manual_seed(0)
        record(f"reference: DataLoader, {w} worker{'s' if w > 1 else ''}, fp32",
               *reference_loop(models.build(spec).to(device), d, args, device, w))
    on_device = d.to(device) if loops - {"reference"} else None
    for name, speed, label in (("eager", Speed(), "eager fp32"),
                               ("fast", FAST, "bf16, channels_last, compiled" +
                                (" + one CUDA graph" if device.type == "cuda" else ""))):
        if name in loops:
            torch.manual_seed(0)
            record(f"prunebench: data on device, {label}", *step_loop(models.build(spec).to(device), on_device,
                                                                      args, device, speed))
            one[name] = per_loop[rows[-1][0]]
    fast_label = "bf16, compiled" + (" + one CUDA graph" if device.type == "cuda" else "")
    cl_label = "bf16, channels_last, compiled" + (" + a CUDA graph each" if device.type == "cuda" else "")
    for name, speed, label, path in (("seeds", Speed(), "eager fp32", "eager"),
                                     ("seeds_fast", FAST, fast_label, "fast")):
        if name in loops:
            record(f"prunebench: {args.seeds} seeds batched (vmap), {label}, all {args.seeds} together",
                   *seeds_loop(spec, on_device, args, device, speed))
            together[f"batched (vmap), {path}"] = (per_loop[rows[-1][0]], path)
    streams = "a CUDA stream each" if device.type == "cuda" else "in turn"
    for name, speed, label, path in (("streams", Speed(), "eager fp32", "eager"),
                                     ("streams_fast", FAST, cl_label, "fast")):
        if name in loops:
            record(f"prunebench: {args.seeds} seeds interleaved, {streams}, {label}, all {args.seeds} together",
                   *interleaved_loop(spec, on_device, args, device, speed))
            together[f"interleaved, {path}"] = (per_loop[rows[-1][0]], path)
    base = rows[0][1]
    table = Table(title=f"{args.model}, batch {args.batch}, {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
                        f"{args.steps} timed steps scaled to {steps_per_epoch} steps an epoch")
    for c in ["loop", "s/epoch", "speed-up vs first", "last loss"]:
        table.add_column(c, justify="left" if c == "loop" else "right")
    for name, s, loss in rows:
        table.add_row(name, f"{s:.2f}", f"{base / s:.2f}x", f"{loss:.3f}" if math.isfinite(loss) else "nan")
    Console().print(table)
    best = min(rows, key=lambda r: r[1])
    print(f"summary: {best[0]} is fastest at {best[1]:.2f} s/epoch, {base / best[1]:.2f}x the first row "
          f"({base:.2f} s/epoch)")
    for name, (t, path) in together.items():
        if path in one:
            print(f"summary: {args.seeds} seeds {name}: {t:.2f} s/epoch, {t / one[path]:.2f}x one seed's {one[path]:.2f}")

if __name__ == "__main__":
    main()
