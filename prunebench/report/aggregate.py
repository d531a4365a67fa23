"""The report of a sweep (Liu et al., ICLR 2019 report means over runs): every run
under a folder, grouped into lines of runs that differ in the seed alone.

    prunebench-report outputs/multirun/2026-11-25_10-00-00 [--metric acc1|acc1_best|acc1_val_selected] [--layer conv8]
                      [--out DIR]

writes into that folder (or ``--out``) ``summary.csv`` / ``summary.md`` (every row of every line:
acc1 and acc1_best as mean ± std over seeds), ``paper.md`` / ``paper.csv`` /
``paper.tex`` (the paper's layout with the verdict), ``revisited.md`` / ``revisited.csv`` (the
verdict of each revisited strategy against fine-tuning and of the from-scratch rows against each
other, docs/revisited.md), ``widths.md`` / ``widths.csv``
(Table 7) and ``plots/`` (PNG and SVG). What it cannot read (a foreign ``results.csv``, a
damaged ``config.yaml``, ``widths.json`` or ``history.csv``) is skipped with a warning naming
it; a job of a sweep that left no ``results.csv``, and a line with fewer seeds than its sweep,
are warned about; a folder it cannot write is named in one line.
"""
import argparse
import csv
import logging
import sys
from pathlib import Path
from typing import Dict, List

from rich.console import Console
from rich.table import Table

from prunebench.errors import PrunebenchError, UnwritableFile, say_error
from prunebench.report import paper, revisited, stats
from prunebench.report import uniform as uniform_verdict
from prunebench.report import widths as widths_table
from prunebench.report.runs import Line, collect, group, missing_seeds

log = logging.getLogger(__name__)

SUMMARY_FIELDS = ["dataset", "model", "method", "pruning_ratio", "line", "row", "runs", "failed", "seeds",
                  "acc1_mean", "acc1_std", "acc1_best_mean", "acc1_best_std", "acc1_val_selected_mean",
                  "acc1_val_selected_std", "params", "flops", "latency_ms", "total_train_flops"]


def summarise(lines: List[Line]) -> List[Dict]:
    """One record per line and row: top-1 (last, best and held-out-selected epoch) over seeds, params, FLOPs,
    latency, pipeline training FLOPs."""
    out = []
    for line in lines:
        for row in line.row_names():
            members = line.rows(row)
            ok = [r for r in members if r.get("status", "ok") == "ok"]
            rec = {"dataset": line.dataset, "model": line.model, "method": line.method,
                   "pruning_ratio": line.ratio, "line": line.name, "row": row, "runs": len(members),
                   "failed": len(members) - len(ok),
                   "seeds": " ".join(str(r.get("seed")) for r in members)}
            for key in ("acc1", "acc1_best", "acc1_val_selected"):
                s = stats.summary([r.get(key) for r in ok])
                rec[f"{key}_mean"] = None if s is None else round(s["mean"], 4)
                rec[f"{key}_std"] = None if s is None or s["std"] is None else round(s["std"], 4)
            for key in ("params", "flops", "latency_ms", "total_train_flops"):
                s = stats.summary([r.get(key) for r in ok])
                rec[key] = None if s is None else (round(s["mean"], 4) if key == "latency_ms" else s["mean"])
            out.append(rec)
    return out


def acc(rec: Dict, key: str = "acc1") -> str:
    if rec[f"{key}_mean"] is None:
        return "failed" if rec["failed"] else "-"
    s = {"mean": rec[f"{key}_mean"], "std": rec[f"{key}_std"], "n": rec["runs"] - rec["failed"]}
    return stats.cell(s) + (f", {rec['failed']} failed" if rec["failed"] else "")


def write_summary(summary: List[Dict], folder: Path) -> None:
    with open(folder / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=SUMMARY_FIELDS)
        w.writeheader()
        w.writerows([{k: "" if v is None else v for k, v in r.items()} for r in summary])
    best = any(r["acc1_best_mean"] is not None for r in summary)
    cols = ["method", "model", "dataset", "ratio", "line", "row", "top-1 (last epoch)"] + (
        ["top-1 (best epoch)"] if best else []) + ["runs"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in summary:
        cells = [r["method"], r["model"], r["dataset"], str(r["pruning_ratio"]), r["line"] or "-", r["row"],
                 acc(r)] + ([acc(r, "acc1_best")] if best else []) + [str(r["runs"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "top-1: test accuracy (%), mean ± sample std over seeds (n runs)."]
    (folder / "summary.md").write_text("\n".join(lines) + "\n")


def show(recs: List[Dict], metric: str, console: Console) -> None:
    cols = paper.shown_columns(recs)
    table = Table(title=f"{len(recs)} line(s); {paper.METRICS[metric]}")
    for c in ["data set", "model", "method", "ratio", "line"] + [t for _, t in cols] + ["params", "FLOPs",
                                                                                      "verdict"]:
        table.add_column(c, overflow="fold")
    for r in recs:
        table.add_row(r["dataset"], r["model"], r["method"], str(r["pruning_ratio"]), r["line"] or "-",
                      *(paper.acc_cell(r, row) for row, _ in cols), paper.cost_cell(r, "params"),
                      paper.cost_cell(r, "flops"), r["verdict"])
    console.print(table)


def report(folder: Path, metric: str = None, layer: str = None, plots: bool = True, out: Path = None) -> Dict:
    """Write every table (and the figures) of the runs under ``folder`` into ``out`` (default:
    ``folder``); return what was made. UnwritableFile names a file that could not be written."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PrunebenchError(f"{folder} is not a folder; point prunebench-report at a run or sweep folder "
                              f"(outputs/multirun/<time> or outputs/runs/<time>_...)")
    runs = collect(folder)
    if not runs:
        raise PrunebenchError(f"no readable results.csv under {folder}; point prunebench-report at a run or sweep "
                              f"folder (outputs/multirun/<time> or outputs/runs/<time>_...)")
    lines = group(runs)
    for warning in missing_seeds(folder, lines):
        log.warning("%s", warning)
    out = Path(out) if out is not None else folder
    summary = summarise(lines)
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_summary(summary, out)
        recs = paper.write(lines, out, metric)
        chosen = recs[0]["metric"] if recs else paper.choose_metric(lines, metric)
        verdicts = revisited.write(lines, out, chosen)
        tables = widths_table.write(lines, out)
        uniform = uniform_verdict.write(lines, out, chosen, plots)
        figures = []
        if plots:
            from prunebench.report import plots as figs
            figures = figs.for_lines(lines, out / "plots", metric, layer)
    except OSError as e:
        raise UnwritableFile(Path(e.filename) if e.filename else out, e,
                             "give prunebench-report --out DIR, a folder it can write") from e
    return {"runs": runs, "lines": lines, "summary": summary, "paper": recs, "revisited": verdicts, "widths": tables,
            "uniform": uniform["records"], "plots": figures + uniform["plots"],
            "metric": recs[0]["metric"] if recs else metric, "out": out}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="a sweep (or any) folder holding results.csv files")
    parser.add_argument("--metric", choices=sorted(paper.METRICS), default=None,
                        help="top-1 of the last epoch (acc1), of the best (acc1_best; the default when present) or at the "
                             "epoch best on held-out images (acc1_val_selected, runs with dataset.val_split)")
    parser.add_argument("--layer", default=None,
                        help="the convolution whose weights are drawn: a channel group (conv8, block5) or a "
                             "module path; default: the middle one")
    parser.add_argument("--no-plots", action="store_true", help="tables only")
    parser.add_argument("--out", type=Path, default=None,
                        help="the folder the tables and figures go to (default: FOLDER)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    console = Console()
    try:
        out = report(args.folder, args.metric, args.layer, plots=not args.no_plots, out=args.out)
    except PrunebenchError as e:
        say_error(str(e))
        sys.exit(2)
    show(out["paper"], out["metric"], console)
    made = ["summary.csv", "summary.md", "paper.md", "paper.csv", "paper.tex"]
    made += ["revisited.md", "revisited.csv"] if out["revisited"] else []
    made += ["widths.md", "widths.csv"] if out["widths"] else []
    made += ["uniform.md", "uniform.csv"] if out["uniform"] else []
    console.print(f"{len(out['runs'])} runs, {len(out['lines'])} lines; wrote {', '.join(made)} in {out['out']}"
                  + (f" and {len(out['plots'])} figure files in {out['out'] / 'plots'}" if out["plots"] else ""),
                  soft_wrap=True)


if __name__ == "__main__":
    main()
