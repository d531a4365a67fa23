"""The verdicts of "Rethinking, revisited" (docs/revisited.md): for every report line, each
alternative against fine-tuning (a larger fine-tune lr, lr rewinding, 1-cycle, distillation,
the scratch rows) and the from-scratch rows against each other (Scratch-B, random
architectures, uniform, the smaller model), plus the mask controls (shuffled against Scratch-E/B,
reinit against the lottery ticket): mean ± std over seeds of each side, their difference, and
Welch's t-test at ``stats.ALPHA`` (:func:`prunebench.report.stats.compare`), with the training
FLOPs of each side's pipeline beside it. Written as ``revisited.md`` / ``revisited.csv`` where a
line has a row of the revisited strategies."""
import csv
from itertools import combinations
from pathlib import Path
from typing import Dict, List

from prunebench.report import stats
from prunebench.report.paper import METRICS, ok_values
from prunebench.report.runs import Line
from prunebench.report.table import provenance_line

REVISITED = ("finetune_large", "lr_rewind", "one_cycle", "distill", "random_arch", "shuffled", "reinit", "small_model")
FINETUNE_ALTERNATIVES = ("finetune_large", "lr_rewind", "one_cycle", "distill", "scratch_e", "scratch_b")
FROM_SCRATCH = ("scratch_b", "random_arch", "uniform", "small_model")
PAIRS = ([("finetune", alt) for alt in FINETUNE_ALTERNATIVES] + list(combinations(FROM_SCRATCH, 2)) +
         [("scratch_e", "shuffled"), ("scratch_b", "shuffled"), ("lottery", "reinit")])
FIELDS = ["dataset", "model", "method", "pruning_ratio", "line", "metric", "a", "b", "a_mean", "a_std", "a_n",
          "b_mean", "b_std", "b_n", "diff", "p", "verdict", "a_total_train_flops", "b_total_train_flops"]


def applies(lines: List[Line]) -> bool:
    return any(row in REVISITED for line in lines for row in line.row_names())


def records(lines: List[Line], metric: str) -> List[Dict]:
    """One record per line and pair of rows that the line has both of."""
    out = []
    for line in lines:
        names = set(line.row_names())
        for a, b in PAIRS:
            if a not in names or b not in names:
                continue
            va, vb = ok_values(line, a, metric), ok_values(line, b, metric)
            sa, sb = stats.summary(va), stats.summary(vb)
            v = stats.compare(va, vb, a, b)
            rec = {"dataset": line.dataset, "model": line.model, "method": line.method, "pruning_ratio": line.ratio,
                   "line": line.name, "metric": metric, "a": a, "b": b}
            for side, s in (("a", sa), ("b", sb)):
                rec[f"{side}_mean"] = None if s is None else round(s["mean"], 4)
                rec[f"{side}_std"] = None if s is None or s["std"] is None else round(s["std"], 4)
                rec[f"{side}_n"] = 0 if s is None else s["n"]
            rec.update(diff=None if v["diff"] is None else round(v["diff"], 4), p=v["p"], verdict=v["verdict"])
            for side, row in (("a", a), ("b", b)):
                cost = stats.summary(ok_values(line, row, "total_train_flops"))
                rec[f"{side}_total_train_flops"] = None if cost is None else cost["mean"]
            out.append(rec)
    return out


def _cell(rec: Dict, side: str) -> str:
    s = {"mean": rec[f"{side}_mean"], "std": rec[f"{side}_std"], "n": rec[f"{side}_n"]}
    return stats.cell(s) if s["mean"] is not None else "-"


def _flops(v) -> str:
    return "-" if v is None else f"{v:.3g}"


def markdown(recs: List[Dict], metric: str, provenance: str) -> str:
    titles = ["Data set", "Model", "Method", "Ratio", "Line", "A", "B", "A top-1", "B top-1", "A - B", "Verdict",
              "A pipeline FLOPs", "B pipeline FLOPs"]
    out = ["# Rethinking, revisited: each alternative against fine-tuning, the from-scratch rows against each other",
           "", f"Shown: {METRICS[metric]}. Cells: mean ± sample std over seeds (n runs). Verdict: Welch's t-test over "
           f"seeds at alpha {stats.ALPHA} (the better side named when p < alpha). Pipeline FLOPs: training FLOPs of "
           "everything the row stands on (fine-tuned rows include the unpruned training).", "",
           "| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    for r in recs:
        cells = [r["dataset"], r["model"], r["method"], str(r["pruning_ratio"]), r["line"] or "-", r["a"], r["b"],
                 _cell(r, "a"), _cell(r, "b"), "-" if r["diff"] is None else f"{r['diff']:+.2f}", r["verdict"],
                 _flops(r["a_total_train_flops"]), _flops(r["b_total_train_flops"])]
        out.append("| " + " | ".join(cells) + " |")
    out += ["", provenance]
    return "\n".join(out) + "\n"


def write(lines: List[Line], folder: Path, metric: str) -> List[Dict]:
    """``revisited.md`` and ``revisited.csv`` in ``folder`` (nothing when no line has a revisited row)."""
    if not applies(lines):
        return []
    recs = records(lines, metric)
    folder = Path(folder)
    with open(folder / "revisited.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows([{k: "" if r.get(k) is None else r[k] for k in FIELDS} for r in recs])
    rows = [r for line in lines for run in line.runs for r in run.rows]
    (folder / "revisited.md").write_text(markdown(recs, metric, provenance_line(rows)))
    return recs
