"""The table of a sweep: every ``results.csv`` under a folder, grouped by method,
model, data set, ratio and row, with top-1 as mean ± std over seeds.

    prunebench-report outputs/multirun/2026-11-25_10-00-00
"""
import argparse
import csv
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Dict, List

from rich.console import Console
from rich.table import Table

KEY = ("method", "model", "dataset", "pruning_ratio", "row")
ROW_ORDER = ["unpruned", "sparse", "pruned", "finetune", "scratch_e", "scratch_b", "uniform", "lottery"]


def collect(folder: Path) -> List[Dict[str, str]]:
    rows = []
    for path in sorted(Path(folder).rglob("results.csv")):
        with open(path) as f:
            rows += list(csv.DictReader(f))
    return rows


def aggregate(rows: List[Dict[str, str]]) -> List[Dict]:
    groups: Dict[tuple, List[Dict[str, str]]] = defaultdict(list)
    for r in rows:
        groups[tuple(r[k] for k in KEY)].append(r)
    out = []
    for key, members in groups.items():
        ok = [float(m["acc1"]) for m in members if m["status"] == "ok" and m["acc1"]]
        out.append({**dict(zip(KEY, key)), "runs": len(members), "failed": len(members) - len(ok),
                    "acc1_mean": statistics.mean(ok) if ok else None,
                    "acc1_std": statistics.stdev(ok) if len(ok) > 1 else 0.0 if ok else None,
                    "flops": members[0]["flops"], "params": members[0]["params"],
                    "seeds": " ".join(sorted({m["seed"] for m in members}))})
    rank = {r: i for i, r in enumerate(ROW_ORDER)}
    return sorted(out, key=lambda r: (r["method"], r["model"], r["dataset"], r["pruning_ratio"],
                                      rank.get(r["row"], 99)))


def cell(r: Dict) -> str:
    if r["acc1_mean"] is None:
        return "failed"
    return f"{r['acc1_mean']:.2f} ± {r['acc1_std']:.2f}" + (f" ({r['failed']} failed)" if r["failed"] else "")


def write(summary: List[Dict], folder: Path) -> None:
    cols = list(KEY) + ["acc1_mean", "acc1_std", "runs", "failed", "seeds", "params", "flops"]
    with open(folder / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(summary)
    lines = ["| method | model | dataset | ratio | row | top-1 (mean ± std) | runs |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['model']} | {r['dataset']} | {r['pruning_ratio']} | {r['row']} | {cell(r)} | "
              f"{r['runs']} |" for r in summary]
    (folder / "summary.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="a sweep (or any) folder holding results.csv files")
    args = parser.parse_args(argv)
    rows = collect(args.folder)
    if not rows:
        raise SystemExit(f"no results.csv under {args.folder}")
    summary = aggregate(rows)
    write(summary, args.folder)
    table = Table(title=f"{len(rows)} rows from {args.folder}")
    for c in ["method", "model", "dataset", "ratio", "row", "top-1", "runs"]:
        table.add_column(c)
    for r in summary:
        table.add_row(r["method"], r["model"], r["dataset"], r["pruning_ratio"], r["row"], cell(r), str(r["runs"]))
    Console().print(table)
    print(f"wrote {args.folder / 'summary.csv'} and {args.folder / 'summary.md'}")


if __name__ == "__main__":
    main()
