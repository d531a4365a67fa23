"""Kept width per layer of the pruned architectures, against the unpruned widths
(Liu et al., ICLR 2019, Table 7: the channels network slimming keeps in each layer
of VGG, averaged over runs). Read from each stage folder's ``widths.json`` (channels
per channel group: ``conv1``.. on VGG, ``block1``.. on ResNets) of the ``unpruned``
and ``pruned`` rows; written as ``widths.md`` and ``widths.csv``.
"""
import csv
import json
import logging
import re
import statistics
from pathlib import Path
from typing import Dict, List, Optional

from prunebench.report.runs import Line, stage_folder

FIELDS = ["line", "layer", "unpruned", "pruned_mean", "pruned_std", "n", "kept"]
log = logging.getLogger(__name__)


def read_widths_file(path: Path) -> Optional[Dict[str, int]]:
    """The {channel group: width} of a ``widths.json``; None, with a warning naming it, when it
    cannot be read or holds something else."""
    try:
        widths = json.loads(Path(path).read_text())
        if not isinstance(widths, dict) or not all(isinstance(v, int) for v in widths.values()):
            raise ValueError("not a {layer: width} object")
        return widths
    except (OSError, ValueError, UnicodeDecodeError) as e:
        log.warning("skipped %s: it cannot be read (%s: %s)", path, type(e).__name__, str(e)[:160])
        return None


def read_widths(line: Line, row: str) -> List[Dict[str, int]]:
    """The ``widths.json`` of every seed's ``row`` stage (missing folders are skipped)."""
    out = []
    for run in line.runs:
        for r in run.rows:
            folder = stage_folder(r, run) if r["row"] == row else None
            if folder is not None and (folder / "widths.json").exists():
                widths = read_widths_file(folder / "widths.json")
                if widths is not None:
                    out.append(widths)
    return out


def _layer_order(name: str):
    m = re.match(r"(\D*)(\d+)$", name)
    return (m.group(1), int(m.group(2))) if m else (name, 0)


def table(line: Line) -> Optional[List[Dict]]:
    """One record per layer: the unpruned width, the pruned width's mean and std over seeds, the kept
    fraction; None when the line has no widths to compare."""
    full, pruned = read_widths(line, "unpruned"), read_widths(line, "pruned")
    if not full or not pruned:
        return None
    layers = sorted(set(full[0]) | {k for p in pruned for k in p}, key=_layer_order)
    recs = []
    for layer in layers:
        vals = [p[layer] for p in pruned if layer in p]
        base = full[0].get(layer)
        mean = statistics.mean(vals) if vals else None
        recs.append({"line": line.label, "layer": layer, "unpruned": base,
                     "pruned_mean": None if mean is None else round(mean, 2),
                     "pruned_std": round(statistics.stdev(vals), 2) if len(vals) > 1 else None,
                     "n": len(vals), "kept": None if mean is None or not base else round(mean / base, 4)})
    return recs


def write(lines: List[Line], folder: Path) -> Dict[str, List[Dict]]:
    """Write ``widths.csv`` and ``widths.md`` for every line with widths; return them by line label."""
    tables = {line.label: t for line in lines if (t := table(line))}
    if not tables:
        return tables
    folder = Path(folder)
    with open(folder / "widths.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        for recs in tables.values():
            w.writerows([{k: "" if v is None else v for k, v in r.items()} for r in recs])
    out = ["# Kept width per layer (Liu et al., ICLR 2019, Table 7)", "",
           "Channels of each layer in the unpruned model and in the pruned architectures (mean ± std over "
           "seeds, n runs); kept: pruned mean / unpruned.", ""]
    for label, recs in tables.items():
        out += [f"## {label}", "", "| layer | unpruned | pruned | kept |", "|---|---|---|---|"]
        for r in recs:
            p = "-" if r["pruned_mean"] is None else f"{r['pruned_mean']:.1f}"
            if r["pruned_std"] is not None:
                p += f" ± {r['pruned_std']:.1f}"
            kept = "-" if r["kept"] is None else f"{100 * r['kept']:.1f}%"
            out.append(f"| {r['layer']} | {r['unpruned']} | {p} (n={r['n']}) | {kept} |")
        out.append("")
    (folder / "widths.md").write_text("\n".join(out))
    return tables
