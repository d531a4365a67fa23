"""The table in the layout of Liu et al., ICLR 2019 (Tables 1-4): one line per data
set, model, method and pruning ratio (and whatever else sets runs apart, see
``runs.py``), with columns Unpruned | Fine-tuned | Scratch-E | Scratch-B | Uniform
(| Lottery | Guided where present), each the mean ± std of top-1 over seeds with n;
parameters and FLOPs of the pruned architecture with their reduction against the
unpruned model; the paper's figure beside ours where the preset carries it
(``paper_acc1``); and the verdict of Scratch-B against fine-tuning (``stats.py``).

Written as ``paper.md``, ``paper.csv`` and ``paper.tex``.
"""
import csv
import logging
from pathlib import Path
from typing import Dict, List, Optional

from prunebench.errors import PrunebenchError
from prunebench.report import stats
from prunebench.report.runs import Line

log = logging.getLogger(__name__)

# (row, column title); the optional ones are shown when some line has them
COLUMNS = [("unpruned", "Unpruned"), ("finetune", "Fine-tuned"), ("scratch_e", "Scratch-E"),
           ("scratch_b", "Scratch-B"), ("uniform", "Uniform"), ("lottery", "Lottery"), ("guided", "Guided")]
OPTIONAL = ("lottery", "guided")
ARCH_ROWS = ("pruned", "finetune", "scratch_e", "scratch_b")  # rows that share the pruned architecture
METRICS = {"acc1": "top-1 (%) after the last epoch (acc1)",
           "acc1_best": "top-1 (%) of the best epoch (acc1_best; the authors' CIFAR code reports this "
                        "best_prec1, e.g. cifar/network-slimming/main_B.py)",
           "acc1_val_selected": "test top-1 (%) at the epoch best on held-out training images (acc1_val_selected, "
                                "dataset.val_split: a selection the test set never saw)"}


def choose_metric(lines: List[Line], metric: Optional[str]) -> str:
    """``metric`` if given, else ``acc1_best`` when the runs carry it, else ``acc1``."""
    have_best = any(r.get("acc1_best") is not None for ln in lines for run in ln.runs for r in run.rows)
    if metric is None:
        return "acc1_best" if have_best else "acc1"
    if metric not in METRICS:
        raise PrunebenchError(f"--metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if metric == "acc1_best" and not have_best:
        raise PrunebenchError("--metric acc1_best: no results.csv here has an acc1_best column (runs made "
                              "before per-epoch evaluation); use --metric acc1")
    if metric == "acc1_val_selected" and not any(r.get("acc1_val_selected") is not None
                                                 for ln in lines for run in ln.runs for r in run.rows):
        raise PrunebenchError("--metric acc1_val_selected: no row here has it (runs without dataset.val_split); "
                              "rerun with dataset.val_split=K, or use --metric acc1")
    return metric


def ok_values(line: Line, row: str, key: str) -> List[float]:
    return [r[key] for r in line.rows(row) if r.get("status", "ok") == "ok" and r.get(key) is not None]


def consistent(line: Line, rows, key: str) -> Dict:
    """Mean of ``key`` over the seeds of ``rows``, and a flag when the seeds disagree (automatic methods
    such as slimming's global threshold can find another architecture for every seed)."""
    vals = [v for row in rows for v in ok_values(line, row, key)]
    per_row = {row: sorted(set(ok_values(line, row, key))) for row in rows}
    varying = [row for row, v in per_row.items() if len(v) > 1]
    flag = ""
    if varying:
        lo, hi = min(vals), max(vals)
        flag = f"{key} differ over seeds ({', '.join(varying)}: {lo / 1e6:.3f}M-{hi / 1e6:.3f}M)"
        log.warning("%s: %s", line.label, flag)
    return {"value": sum(vals) / len(vals) if vals else None, "flag": flag}


def line_record(line: Line, metric: str) -> Dict:
    """One line of the table as a flat dict (the CSV row)."""
    seeds = sorted({run.seed for run in line.runs if run.seed is not None})
    rec = {"dataset": line.dataset, "model": line.model, "method": line.method, "pruning_ratio": line.ratio,
           "line": line.name, "metric": metric, "seeds": " ".join(str(s) for s in seeds)}
    flags = []
    for row, _ in COLUMNS:
        s = stats.summary(ok_values(line, row, metric))
        failed = sum(1 for r in line.rows(row) if r.get("status", "ok") != "ok")
        paper = next((r["paper_acc1"] for r in line.rows(row) if r.get("paper_acc1") is not None), None)
        rec[f"{row}_mean"] = None if s is None else round(s["mean"], 4)
        rec[f"{row}_std"] = None if s is None or s["std"] is None else round(s["std"], 4)
        rec[f"{row}_n"] = 0 if s is None else s["n"]
        rec[f"{row}_failed"] = failed
        rec[f"{row}_paper"] = paper
        rec[f"{row}_diff"] = None if s is None or paper is None else round(s["mean"] - paper, 4)
    for key in ("params", "flops"):
        full = consistent(line, ["unpruned"], key)
        pruned = consistent(line, ARCH_ROWS, key)
        uniform = consistent(line, ["uniform"], key)
        flags += [f for f in (full["flag"], pruned["flag"], uniform["flag"]) if f]
        rec[f"{key}_unpruned"] = full["value"]
        rec[f"{key}_pruned"] = pruned["value"]
        rec[f"{key}_reduction"] = (None if not full["value"] or pruned["value"] is None
                                   else round(1 - pruned["value"] / full["value"], 4))
        rec[f"{key}_uniform"] = uniform["value"]
    v = stats.verdict(ok_values(line, "scratch_b", metric), ok_values(line, "finetune", metric))
    rec["verdict"], rec["p"] = v["verdict"], v["p"]
    rec["flags"] = "; ".join(flags)
    return rec


def records(lines: List[Line], metric: str) -> List[Dict]:
    return [line_record(line, metric) for line in lines]


def shown_columns(recs: List[Dict]):
    return [(row, title) for row, title in COLUMNS if row not in OPTIONAL or any(r[f"{row}_n"] for r in recs)]


def acc_cell(rec: Dict, row: str) -> str:
    if not rec[f"{row}_n"]:
        return "failed" if rec[f"{row}_failed"] else "-"
    s = {"mean": rec[f"{row}_mean"], "std": rec[f"{row}_std"], "n": rec[f"{row}_n"]}
    text = stats.cell(s)
    if rec[f"{row}_failed"]:
        text += f", {rec[f'{row}_failed']} failed"
    if rec[f"{row}_paper"] is not None:
        text += f"; paper {rec[f'{row}_paper']:.2f} ({rec[f'{row}_diff']:+.2f})"
    return text


def cost_cell(rec: Dict, key: str) -> str:
    v, red = rec[f"{key}_pruned"], rec[f"{key}_reduction"]
    if v is None:
        return "-"
    return f"{v / 1e6:.2f}M" + ("" if red is None else f" ({100 * red:.1f}% less)")


def header(metric: str, chosen_by_default: bool) -> str:
    how = " (the default when the runs carry it; --metric acc1 for the last epoch)" if chosen_by_default else ""
    return (f"Shown: {METRICS[metric]}{how}. Cells: mean ± sample std over seeds (n runs; one run shows no "
            "spread); 'paper X (+d)': the paper's figure and ours minus it. Params / FLOPs: the pruned "
            "architecture (fine-tuned and scratch rows; FLOPs of one image, 2 x multiply-accumulates) and "
            "its reduction against the unpruned model. Verdict: Scratch-B against fine-tuned, Welch's t-test "
            f"over seeds at alpha {stats.ALPHA}.")


def markdown(recs: List[Dict], metric: str, chosen_by_default: bool) -> str:
    cols = shown_columns(recs)
    titles = ["Data set", "Model", "Method", "Ratio", "Line"] + [t for _, t in cols] + ["Params", "FLOPs",
                                                                                      "Verdict"]
    out = ["# Results in the layout of Liu et al. (ICLR 2019)", "", header(metric, chosen_by_default), "",
           "| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    for r in recs:
        cells = [r["dataset"], r["model"], r["method"], str(r["pruning_ratio"]), r["line"] or "-"]
        cells += [acc_cell(r, row) for row, _ in cols]
        cells += [cost_cell(r, "params"), cost_cell(r, "flops"), r["verdict"]]
        out.append("| " + " | ".join(cells) + " |")
    notes = [f"- {r['method']} {r['model']} {r['dataset']} r={r['pruning_ratio']}: {r['flags']}"
             for r in recs if r["flags"]]
    if notes:
        out += ["", "Warnings:", *notes]
    return "\n".join(out) + "\n"


def latex(recs: List[Dict], metric: str) -> str:
    cols = shown_columns(recs)
    esc = lambda s: str(s).replace("_", r"\_").replace("%", r"\%").replace("±", r"$\pm$")  # noqa: E731
    titles = ["Data set", "Model", "Method", "Ratio", "Line"] + [t for _, t in cols] + ["Params", "FLOPs",
                                                                                      "Verdict"]
    out = [f"% {METRICS[metric]}", r"\begin{tabular}{" + "l" * len(titles) + "}", r"\toprule",
           " & ".join(titles) + r" \\", r"\midrule"]
    for r in recs:
        cells = [r["dataset"], r["model"], r["method"], r["pruning_ratio"], r["line"] or "-"]
        cells += [acc_cell(r, row) for row, _ in cols]
        cells += [cost_cell(r, "params"), cost_cell(r, "flops"), r["verdict"]]
        out.append(" & ".join(esc(c) for c in cells) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(out) + "\n"


def write(lines: List[Line], folder: Path, metric: Optional[str] = None) -> List[Dict]:
    """Write ``paper.md``, ``paper.csv``, ``paper.tex`` into ``folder``; return the records."""
    chosen = choose_metric(lines, metric)
    recs = records(lines, chosen)
    folder = Path(folder)
    if recs:
        with open(folder / "paper.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(recs[0]))
            w.writeheader()
            w.writerows([{k: "" if v is None else v for k, v in r.items()} for r in recs])
    from prunebench.report.table import provenance_line

    rows = [r for line in lines for run in line.runs for r in run.rows]
    (folder / "paper.md").write_text(markdown(recs, chosen, metric is None) + "\n" + provenance_line(rows) + "\n")
    (folder / "paper.tex").write_text(latex(recs, chosen))
    return recs
