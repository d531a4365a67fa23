"""Fake results folders for the report tests, written as ``prunebench`` writes them: a run folder
with ``config.yaml`` and ``results.csv`` (a ``stage`` column per row), and stage folders with
``widths.json``, ``arch.json``, ``model.pt``, ``metrics.json`` (``history``) and ``history.csv``."""
import csv
import json
from pathlib import Path
from typing import Dict, Optional

import torch
from omegaconf import OmegaConf

from prunebench import measure, models
from prunebench.models import vgg
from prunebench.report.table import COLUMNS

INPUT = (1, 16, 16)  # small images (VGG-11 pools four times), tiny models
ROWS = ["unpruned", "pruned", "finetune", "scratch_e", "scratch_b", "uniform"]


def config(seed: int, ratio: float = 0.5, width: float = 0.125, method: str = "l1_norm", **extra) -> Dict:
    cfg = {"model": {"name": "vgg11", "arch": "vgg", "depth": 11, "width": width},
           "dataset": {"name": "digits", "root": "/somewhere", "num_classes": 10},
           "method": {"name": method, "pruning_ratio": ratio, "min_channels": 4},
           "schedule": {"name": "quick", "epochs": 3, "lr": 0.1},
           "strategies": ["finetune", "scratch_e", "scratch_b", "uniform"],
           "seed": seed, "device": "cpu", "cache_dir": "outputs/stages", "progress": False}
    for dotted, value in extra.items():
        node = cfg
        *path, last = dotted.split(".")
        for k in path:
            node = node.setdefault(k, {})
        node[last] = value
    return cfg


def pruned_widths(spec: Dict, ratio: float, seed: int, vary: bool) -> Dict[str, int]:
    """Widths keeping (1 - ratio) of every conv; ``vary`` changes conv1 with the seed (an automatic method)."""
    convs = [w for w in spec["widths"] if w != "M"]
    out = {f"conv{k + 1}": max(1, int(w * (1 - ratio))) for k, w in enumerate(convs)}
    if vary:
        out["conv1"] = max(1, out["conv1"] - seed)
    return out


def save_stage(folder: Path, spec: Dict, seed: int, acc_end: float, epochs: int = 3) -> Dict:
    torch.manual_seed(seed)
    model = models.build(spec)
    models.save(model, folder)
    w = {g.name: model.get_submodule(g.conv).out_channels for g in model.channel_groups()}
    (folder / "widths.json").write_text(json.dumps(w))
    hist = [{"epoch": e, "lr": 0.1, "loss": 2.3 / e, "acc1": None if e == 2 else acc_end - 5 * (epochs - e)}
            for e in range(1, epochs + 1)]
    (folder / "metrics.json").write_text(json.dumps({"acc1": acc_end, "history": hist}))
    with open(folder / "history.csv", "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=["epoch", "lr", "loss", "acc1"])
        wr.writeheader()
        wr.writerows([{k: "" if v is None else v for k, v in h.items()} for h in hist])
    return {"params": measure.count_params(model), "flops": measure.count_flops(model, INPUT)}


def write_run(folder: Path, seed: int, acc: Dict[str, float], cfg: Optional[Dict] = None,
              paper: Optional[Dict[str, float]] = None, best: bool = True, vary_arch: bool = False,
              stages: bool = True) -> Path:
    """One run folder; ``acc`` gives acc1 per row (acc1_best = acc1 + 0.5 when ``best``)."""
    folder = Path(folder)
    folder.mkdir(parents=True)
    cfg = cfg or config(seed)
    OmegaConf.save(OmegaConf.create(cfg), folder / "config.yaml")
    m = cfg["model"]
    base = vgg.spec_for(m["depth"], m["width"], INPUT[0], 10)
    ratio = cfg["method"]["pruning_ratio"]
    probe = models.build(base)
    pruned = probe.spec_with_widths(pruned_widths(base, ratio, seed, vary_arch))
    uniform = probe.spec_with_widths(pruned_widths(base, ratio * 0.9, 0, False))
    specs = {"unpruned": base, "uniform": uniform}
    rows = []
    for row in ROWS:
        if row not in acc:
            continue
        st = folder.parent / "stages" / f"{folder.name}-{row}"
        st.mkdir(parents=True)
        cost = save_stage(st, specs.get(row, pruned), seed, acc[row]) if stages else {"params": 1, "flops": 1}
        rows.append({"row": row, "method": cfg["method"]["name"], "model": m["name"],
                     "dataset": cfg["dataset"]["name"], "pruning_ratio": ratio, "seed": seed, "acc1": acc[row],
                     "acc1_best": acc[row] + 0.5 if best else None, "paper_acc1": (paper or {}).get(row),
                     **cost, "latency_ms": 1.0, "epochs": 3, "status": "ok", "note": "", "stage": str(st)})
    with open(folder / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS if best else [c for c in COLUMNS if c != "acc1_best"],
                           extrasaction="ignore")
        w.writeheader()
        w.writerows([{k: "" if r.get(k) is None else r[k] for k in w.fieldnames} for r in rows])
    return folder


def accs(finetune: float, scratch_b: float, base: float = 95.0) -> Dict[str, float]:
    return {"unpruned": base, "pruned": 20.0, "finetune": finetune, "scratch_e": scratch_b - 0.5,
            "scratch_b": scratch_b, "uniform": scratch_b - 1.0}
