"""The figures of Liu et al., ICLR 2019, from results folders, as PNG and SVG:

- ``accuracy_<line>``: top-1 against parameters and against FLOPs for each strategy
  over the pruning ratios of a sweep, error bars over seeds (the paper's Fig. 3:
  the architectures a method finds, trained from scratch, against uniform pruning);
- ``widths_<line>``: kept channels per layer against the unpruned widths, mean ± std
  over seeds (Table 7 drawn);
- ``weights_<line>``: the distribution of one convolution's non-zero weights in the
  unpruned, fine-tuned and scratch-trained models (Fig. 8);
- ``curves_<line>``: test top-1 and training loss per epoch of every trained stage
  (from the stage's ``history.csv`` or its ``metrics.json`` ``history``).

matplotlib is imported inside the functions (Agg backend), so training never needs it.
"""
import csv
import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional

from prunebench.report import stats
from prunebench.report import widths as widths_table
from prunebench.report.runs import Line, RunResult, load_run, slugify, stage_folder

log = logging.getLogger(__name__)

REVISITED_ROWS = ["finetune_large", "lr_rewind", "one_cycle", "distill", "random_arch", "shuffled", "reinit",
                  "small_model"]
STRATEGY_ROWS = ["finetune", "scratch_e", "scratch_b", "uniform", "lottery", "guided", *REVISITED_ROWS]
TRAINED_ROWS = ["unpruned", "sparse", "finetune", "scratch_e", "scratch_b", "uniform", "lottery", "guided",
                *REVISITED_ROWS]
WEIGHT_ROWS = [("unpruned", "unpruned"), ("finetune", "fine-tuned"), ("scratch_b", "scratch-B"),
               ("scratch_e", "scratch-E")]
FORMATS = ("png", "svg")


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, folder: Path, stem: str) -> List[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in FORMATS:
        path = folder / f"{stem}.{ext}"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        paths.append(path)
    _pyplot().close(fig)
    return paths


def _ok(line: Line, row: str, key: str) -> List[float]:
    return [r[key] for r in line.rows(row) if r.get("status", "ok") == "ok" and r.get(key) is not None]


def metric_of(lines: List[Line], metric: Optional[str]) -> str:
    if metric:
        return metric
    have_best = any(r.get("acc1_best") is not None for ln in lines for run in ln.runs for r in run.rows)
    return "acc1_best" if have_best else "acc1"


# -- accuracy against parameters and FLOPs ------------------------------------

def accuracy_vs_cost(lines: List[Line], folder: Path, metric: str) -> List[Path]:
    """One figure per curve (the lines that differ only in the pruning ratio)."""
    curves: Dict[tuple, List[Line]] = defaultdict(list)
    for line in lines:
        curves[(line.dataset, line.model, line.method, line.name)].append(line)
    paths = []
    for (dataset, model, method, name), members in curves.items():
        plt = _pyplot()
        fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
        drawn = False
        for ax, key, unit in zip(axes, ("params", "flops"), ("parameters (M)", "FLOPs (M)")):
            for row in STRATEGY_ROWS:
                pts = []
                for line in members:
                    acc, cost = stats.summary(_ok(line, row, metric)), stats.summary(_ok(line, row, key))
                    if acc and cost:
                        pts.append((cost["mean"] / 1e6, acc["mean"], acc["std"] or 0.0))
                if pts:
                    pts.sort()
                    ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o",
                                capsize=3, label=row)
                    drawn = True
            full_acc = stats.summary([v for ln in members for v in _ok(ln, "unpruned", metric)])
            full_cost = stats.summary([v for ln in members for v in _ok(ln, "unpruned", key)])
            if full_acc and full_cost:
                ax.errorbar([full_cost["mean"] / 1e6], [full_acc["mean"]], yerr=[full_acc["std"] or 0.0],
                            marker="*", markersize=12, color="black", linestyle="none", label="unpruned")
            ax.set_xlabel(unit)
            ax.grid(alpha=0.3)
        if not drawn:
            plt.close(fig)
            continue
        axes[0].set_ylabel(f"test {metric} (%)")
        axes[0].legend(fontsize=8)
        title = f"{method} on {model} / {dataset}" + (f" ({name})" if name else "")
        fig.suptitle(f"{title}: mean ± std over seeds, ratios "
                     f"{', '.join(str(ln.ratio) for ln in sorted(members, key=lambda ln: float(ln.ratio)))}")
        paths += _save(fig, folder, "accuracy_" + slugify(f"{method} {model} {dataset} {name}"))
    return paths


# -- accuracy against training compute ----------------------------------------

def accuracy_vs_compute(lines: List[Line], folder: Path, metric: str) -> List[Path]:
    """One figure per line: each row's top-1 (mean ± std over seeds) against the training FLOPs of
    its whole pipeline (``total_train_flops``: a fine-tuned row carries the unpruned model's training)."""
    paths = []
    for line in lines:
        pts = []
        for row in ["unpruned"] + STRATEGY_ROWS:
            acc = stats.summary(_ok(line, row, metric))
            cost = stats.summary(_ok(line, row, "total_train_flops"))
            if acc and cost and cost["mean"] > 0:
                pts.append((row, cost["mean"], acc["mean"], acc["std"] or 0.0, cost["std"] or 0.0))
        if not pts:
            continue
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        for row, cost, acc, acc_std, cost_std in pts:
            ax.errorbar([cost], [acc], yerr=[acc_std], xerr=[cost_std], marker="*" if row == "unpruned" else "o",
                        markersize=10 if row == "unpruned" else 6, capsize=3, linestyle="none", label=row)
        ax.set_xscale("log")
        ax.set_xlabel("training FLOPs of the whole pipeline (epochs x images x 3 x forward FLOPs)")
        ax.set_ylabel(f"test {metric} (%)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, ncol=2)
        ax.set_title(f"accuracy against training compute: {line.label}", fontsize=9)
        paths += _save(fig, folder, f"compute_{line.slug}")
    return paths


# -- kept widths ----------------------------------------------------------------

def widths(line: Line, folder: Path) -> List[Path]:
    recs = widths_table.table(line)
    if not recs:
        return []
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(recs)), 4))
    xs = range(len(recs))
    ax.bar([x - 0.2 for x in xs], [r["unpruned"] or 0 for r in recs], width=0.4, label="unpruned", color="0.7")
    ax.bar([x + 0.2 for x in xs], [r["pruned_mean"] or 0 for r in recs], width=0.4,
           yerr=[r["pruned_std"] or 0 for r in recs], capsize=2, label=f"pruned (n={max(r['n'] for r in recs)})")
    ax.set_xticks(list(xs))
    ax.set_xticklabels([r["layer"] for r in recs], rotation=60, fontsize=8)
    ax.set_ylabel("channels")
    ax.legend()
    ax.set_title(f"kept width per layer: {line.label}")
    return _save(fig, folder, f"widths_{line.slug}")


# -- weight distribution ------------------------------------------------------

def conv_path(model, layer: Optional[str]) -> str:
    """The module path of ``layer`` (a channel-group name such as ``conv8``, or a module path); by
    default the producing convolution of the middle channel group."""
    from prunebench.errors import PrunebenchError
    from prunebench.models import FAMILIES, family_groups

    groups = {g.name: g.conv for f in FAMILIES for g in family_groups(model, f) if g.conv}
    if layer is None:
        names = list(groups)
        return groups[names[len(names) // 2]]
    if layer in groups:
        return groups[layer]
    if layer in dict(model.named_modules()):
        return layer
    raise PrunebenchError(f"--layer {layer!r} is neither a channel group ({', '.join(groups)}) nor a module "
                          f"of the model; pick one of those")


def weights(line: Line, folder: Path, layer: Optional[str] = None) -> List[Path]:
    """Histogram of the non-zero weights of one convolution, for the first seed's models."""
    from prunebench import models

    run = line.runs[0]
    found = []
    for row, label in WEIGHT_ROWS:
        r = next((r for r in run.rows if r["row"] == row and r.get("status", "ok") == "ok"), None)
        st = stage_folder(r, run) if r else None
        if st is not None and (st / "model.pt").exists() and (st / "arch.json").exists():
            found.append((label, st))
    loaded = []
    for label, st in found:
        try:
            loaded.append((label, models.load(st)))
        except Exception as e:  # noqa: BLE001 - an unreadable or foreign model is left out of the figure
            where = getattr(e, "path", None) or st
            log.warning("skipped %s: its model cannot be loaded (%s: %s)", where, type(e).__name__,
                        " ".join(str(e).split())[:300])
    if len(loaded) < 2:
        return []
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    name = None
    for label, model in loaded:
        path = conv_path(model, layer)
        name = name or layer or next((g.name for g in model.channel_groups() if g.conv == path), path)
        w = dict(model.named_modules())[path].weight.detach().flatten()
        w = w[w != 0].numpy()
        ax.hist(w, bins=80, histtype="step", density=True, linewidth=1.5, label=f"{label} ({w.size} weights)")
    ax.set_xlabel(f"weight value ({name}, non-zero weights)")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    ax.set_title(f"weights of {name}: {line.label}, seed {run.seed}")
    return _save(fig, folder, f"weights_{line.slug}")


# -- training curves ----------------------------------------------------------

def history(stage: Path) -> List[Dict]:
    """Per-epoch records ``{"epoch", "lr", "loss", "acc1"}`` of a stage (acc1 None where not evaluated);
    a ``history.csv`` or ``metrics.json`` that cannot be read is skipped with a warning naming it."""
    path = stage / "history.csv"
    try:
        if path.exists():
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                if not {"epoch", "loss"} <= set(reader.fieldnames or ()):
                    raise ValueError("no epoch and loss columns")
                out = [{k: (None if v in ("", "None", "null") else float(v)) for k, v in r.items()} for r in reader]
            if any(r.get("epoch") is None for r in out):
                raise ValueError("an epoch without its number")
            return out
        path = stage / "metrics.json"
        if path.exists():
            out = json.loads(path.read_text()).get("history") or []
            if not all(isinstance(h, dict) and isinstance(h.get("epoch"), (int, float)) for h in out):
                raise ValueError("a history entry without its epoch")
            return out
    except (OSError, ValueError, TypeError, AttributeError, csv.Error, UnicodeDecodeError) as e:
        log.warning("skipped %s: it cannot be read (%s: %s); its training curve is left out", path,
                    type(e).__name__, str(e)[:160])
    return []


def curves(line: Line, folder: Path) -> List[Path]:
    """Test top-1 and training loss per epoch of every trained stage, mean over seeds."""
    series = {}
    for row in TRAINED_ROWS:
        per_epoch: Dict[int, Dict[str, List[float]]] = defaultdict(lambda: {"acc1": [], "loss": []})
        for run in line.runs:
            for r in run.rows:
                st = stage_folder(r, run) if r["row"] == row else None
                for h in history(st) if st is not None else []:
                    for k in ("acc1", "loss"):
                        if h.get(k) is not None:
                            per_epoch[int(h["epoch"])][k].append(float(h[k]))
        if per_epoch:
            series[row] = dict(sorted(per_epoch.items()))
    if not series:
        return []
    plt = _pyplot()
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    for row, epochs in series.items():
        for ax, key in ((ax_acc, "acc1"), (ax_loss, "loss")):
            pts = [(e, sum(v[key]) / len(v[key])) for e, v in epochs.items() if v[key]]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if key == "acc1" else None,
                        label=row)
    ax_acc.set_ylabel("test top-1 (%)")
    ax_loss.set_ylabel("training loss")
    for ax in (ax_acc, ax_loss):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    ax_acc.legend(fontsize=8)
    fig.suptitle(f"training curves: {line.label} (mean over {len(line.runs)} seed(s))")
    return _save(fig, folder, f"curves_{line.slug}")


# -- entry points -------------------------------------------------------------

def for_lines(lines: List[Line], folder: Path, metric: Optional[str] = None,
              layer: Optional[str] = None) -> List[Path]:
    """Every figure for the report lines, into ``folder``; returns the files written."""
    folder = Path(folder)
    metric = metric_of(lines, metric)
    paths = accuracy_vs_cost(lines, folder, metric) + accuracy_vs_compute(lines, folder, metric)
    for line in lines:
        paths += widths(line, folder) + weights(line, folder, layer) + curves(line, folder)
    return paths


def for_run(run_dir: Path, rows: Optional[List[Dict]] = None, layer: Optional[str] = None,
            metric: Optional[str] = None) -> List[Path]:
    """The figures of one run into ``run_dir/plots``: accuracy against params and FLOPs for its one
    ratio, widths, weights and training curves. ``rows``: the run's rows (default: its results.csv)."""
    run_dir = Path(run_dir)
    if rows is None:
        run = load_run(run_dir)
    else:
        run = RunResult(run_dir, [dict(r) for r in rows],
                        load_run(run_dir).config if (run_dir / "results.csv").exists() else {})
    if not run.rows:
        return []
    first = run.rows[0]
    line = Line(str(first.get("dataset")), str(first.get("model")), str(first.get("method")),
                first.get("pruning_ratio"), "", [run])
    return for_lines([line], run_dir / "plots", metric, layer)


__all__ = ["accuracy_vs_cost", "accuracy_vs_compute", "widths", "weights", "curves", "for_lines", "for_run", "history"]
