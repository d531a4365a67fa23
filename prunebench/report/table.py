"""The result table of one run: ``results.csv``, ``results.md``, ``results.tex``
in the run folder, and a rich table on the terminal."""
import csv
from pathlib import Path
from typing import Dict, List

from rich.console import Console
from rich.table import Table

from prunebench.errors import UnwritableFile
from prunebench.provenance import FIELDS as PROVENANCE

COLUMNS = ["row", "method", "model", "dataset", "pruning_ratio", "seed", "acc1", "acc1_best", "acc5", "paper_acc1",
           "params", "flops", "latency_ms", "latency_iqr_ms", "latency_sat_ms", "onnx_ms", "onnx_sat_ms", "flops_speedup",
           "speedup", "speedup_sat", "onnx_speedup", "onnx_speedup_sat", "epochs", "seconds", "width_factor", "match", "status",
           "note", "stage", "acc1_val_selected", "val_epoch", "train_flops", "total_train_flops", "wall_seconds",
           "total_wall_seconds", "acc1_std", "members_n", *PROVENANCE]
SHOWN = ["row", "acc1", "acc1_best", "acc1_val_selected", "acc5", "paper_acc1", "params", "flops", "latency_ms",
         "latency_sat_ms", "onnx_ms", "onnx_sat_ms", "flops_speedup", "speedup", "speedup_sat", "onnx_speedup",
         "onnx_speedup_sat", "epochs", "total_train_flops", "status", "note"]


def fmt(key: str, value) -> str:
    if value is None or value == "":
        return "-"
    if key in ("params", "flops"):
        return f"{value / 1e6:.2f}M"
    if key in ("train_flops", "total_train_flops"):
        return f"{value:.3g}"
    if key in ("acc1", "acc1_best", "acc5", "paper_acc1", "acc1_val_selected"):
        return f"{value:.2f}"
    if key in ("latency_ms", "latency_sat_ms", "onnx_ms", "onnx_sat_ms"):
        return f"{value:.3f}"
    if key in ("flops_speedup", "speedup", "speedup_sat", "onnx_speedup", "onnx_speedup_sat"):
        return f"{value:.2f}x"
    return str(value)


def _shown(rows: List[Dict]) -> List[str]:
    """The columns with a value; the seed beside the row when the rows come from several seeds."""
    shown = [c for c in SHOWN if any(r.get(c) not in (None, "") for r in rows)]
    return shown[:1] + ["seed"] + shown[1:] if len({r.get("seed") for r in rows}) > 1 else shown


def write_csv(rows: List[Dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in COLUMNS})


def markdown(rows: List[Dict], title: str) -> str:
    cols = _shown(rows)
    lines = [f"# {title}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(c, r.get(c)) for c in cols) + " |" for r in rows]
    lines += ["", "acc1/acc5: top-1/top-5 test accuracy (%) of the last epoch; acc1_best: the best evaluated epoch "
              "(what the paper reports; optimistic, being chosen on the test set); paper_acc1: the paper's figure; "
              "params, FLOPs (2 x multiply-accumulates, one image) in millions; latency: median forward time (ms) on the run's device at measure.latency_batch (latency_sat_ms: at "
              "measure.saturating_batch; onnx_ms: ONNX Runtime on one CPU thread); flops_speedup: the unpruned model's "
              "FLOPs over the row's (the promise), speedup: its latency over the row's (what is achieved); epochs: training epochs of that row."]
    if any(r.get("acc1_val_selected") is not None for r in rows):
        lines += ["acc1_val_selected: test top-1 at the epoch best on the held-out training images (dataset.val_split)."]
    if any(r.get("total_train_flops") is not None for r in rows):
        lines += ["total_train_flops: training FLOPs of the row's whole pipeline (epochs x images x 3 x forward FLOPs "
                  "of each stage it stands on: fine-tuned = unpruned + sparse + pruning + fine-tuning)."]
    lines += ["", provenance_line(rows)]
    return "\n".join(lines) + "\n"


def provenance_line(rows: List[Dict]) -> str:
    """Where the table came from, in one line (the distinct values of each provenance field)."""
    parts = []
    for key in PROVENANCE:
        values = sorted({str(r[key]) for r in rows if r.get(key) not in (None, "")})
        if values:
            parts.append(f"{key} {', '.join(values)}")
    return "Provenance: " + ("; ".join(parts) if parts else "not recorded")


def latex(rows: List[Dict]) -> str:
    cols = _shown(rows)
    esc = lambda s: s.replace("_", r"\_").replace("%", r"\%")  # noqa: E731
    out = [r"\begin{tabular}{" + "l" * len(cols) + "}", r"\toprule", " & ".join(esc(c) for c in cols) + r" \\",
           r"\midrule"]
    out += [" & ".join(esc(fmt(c, r.get(c))) for c in cols) + r" \\" for r in rows]
    out += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(out) + "\n"


def write(rows: List[Dict], folder: Path, title: str) -> None:
    """``results.csv``, ``results.md`` and ``results.tex`` in ``folder``; UnwritableFile naming the
    one that could not be written."""
    folder = Path(folder)
    path = folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "results.csv"
        write_csv(rows, path)
        path = folder / "results.md"
        path.write_text(markdown(rows, title))
        path = folder / "results.tex"
        path.write_text(latex(rows))
    except OSError as e:
        raise UnwritableFile(path, e, "make the run folder writable or point hydra.run.dir= at a writable one; "
                                      "the stages are cached, so a rerun writes the table at once") from e


def show(rows: List[Dict], title: str, console: Console = None) -> None:
    console = console or Console()
    cols = _shown(rows)
    table = Table(title=title)
    for c in cols:
        if c == "note":
            table.add_column(c, overflow="fold", max_width=48)
        else:
            table.add_column(c, justify="left" if c in ("row", "status") else "right", no_wrap=True)
    for r in rows:
        style = None if r["status"] == "ok" else "red"
        table.add_row(*(fmt(c, r.get(c)) for c in cols), style=style)
    console.print(table)


def show_plan(rows: List[Dict], title: str, console: Console = None) -> None:
    """The dry run's table: each stage's model, epochs and cache state."""
    console = console or Console()
    seeds = len({r.get("seed") for r in rows}) > 1
    table = Table(title=f"dry run: {title}")
    for c in (("seed",) if seeds else ()) + ("row", "cached", "params", "flops", "epochs", "note"):
        table.add_column(c, overflow="fold")
    for r in rows:
        table.add_row(*((str(r["seed"]),) if seeds else ()), r["row"], "yes" if r["cached"] else "no",
                      fmt("params", r["params"]), fmt("flops", r["flops"]), fmt("epochs", r["epochs"]), r["note"])
    console.print(table)
    for r in rows:
        label = f"seed {r['seed']} {r['row']}" if seeds else r["row"]
        if r["widths"]:
            console.print(f"{label} pruned widths: {r['widths']}")
        console.print(f"{label}: {r['stage']}", style="dim")
