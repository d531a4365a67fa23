"""Does pruning beat shrinking every layer alike? For every line with a uniform row (the uniformly
narrowed model at the pruned model's FLOPs, trained from scratch with Scratch-B's epochs), the
pruned architecture against it over seeds (Welch's t-test, :func:`prunebench.report.stats.compare`):

- architecture: Scratch-B (the pruned architecture from scratch, the same budget) against uniform,
  the question Liu et al. (ICLR 2019, Section 6) leave open on modern networks;
- pipeline: the fine-tuned pruned model against uniform (what a user of the pruning method gets).

Written as ``uniform.md`` / ``uniform.csv``, the verdicts also per model ("pruned beats uniform in k
of n lines"), and one figure per model, ``plots/pruned_vs_uniform_<model>.png``: mean ± std of each
row per line (method and recipe). experiment=figures/modern_uniform is the sweep it reads."""
import csv
from collections import defaultdict
from pathlib import Path
from typing import Dict, List

from prunebench.report import stats
from prunebench.report.runs import Line, slugify

ROWS = ("finetune", "scratch_b", "uniform")
FIELDS = ["model", "line", "method", "seeds", "finetune_mean", "finetune_std", "scratch_b_mean", "scratch_b_std",
          "uniform_mean", "uniform_std", "flops_pruned", "flops_uniform", "architecture", "architecture_p",
          "pipeline", "pipeline_p", "pruned_beats_uniform"]


def _ok(line: Line, row: str, key: str) -> List[float]:
    return [r[key] for r in line.rows(row) if r.get("status", "ok") == "ok" and r.get(key) is not None]


def answer(better) -> str:
    """"yes" where the pruned side was found better, "no" where uniform was, "undecided" otherwise."""
    return {"pruned": "yes", "uniform": "no"}.get(better, "undecided")


def line_record(line: Line, metric: str) -> Dict:
    rec = {"model": line.model, "line": line.label, "method": line.method,
           "seeds": " ".join(str(s) for s in sorted({run.seed for run in line.runs if run.seed is not None}))}
    for row in ROWS:
        s = stats.summary(_ok(line, row, metric))
        rec[f"{row}_mean"] = None if s is None else round(s["mean"], 4)
        rec[f"{row}_std"] = None if s is None or s["std"] is None else round(s["std"], 4)
    for key, row in (("flops_pruned", "scratch_b"), ("flops_uniform", "uniform")):
        s = stats.summary(_ok(line, row, "flops"))
        rec[key] = None if s is None else s["mean"]
    arch = stats.compare(_ok(line, "scratch_b", metric), _ok(line, "uniform", metric), "pruned", "uniform")
    pipe = stats.compare(_ok(line, "finetune", metric), _ok(line, "uniform", metric), "pruned", "uniform")
    rec["architecture"], rec["architecture_p"] = arch["verdict"], arch["p"]
    rec["pipeline"], rec["pipeline_p"] = pipe["verdict"], pipe["p"]
    rec["pruned_beats_uniform"] = answer(arch["better"])
    return rec


def records(lines: List[Line], metric: str) -> List[Dict]:
    """One record per line that has a uniform row."""
    return [line_record(line, metric) for line in lines if line.rows("uniform")]


def per_model(recs: List[Dict]) -> Dict[str, str]:
    """model -> "pruned beats uniform in k of n lines (uniform better in j)"."""
    by: Dict[str, List[Dict]] = defaultdict(list)
    for r in recs:
        by[r["model"]].append(r)
    out = {}
    for model, rs in by.items():
        yes = sum(r["pruned_beats_uniform"] == "yes" for r in rs)
        no = sum(r["pruned_beats_uniform"] == "no" for r in rs)
        verdict = "yes" if yes and not no else "no" if no and not yes else "mixed" if yes and no else "undecided"
        out[model] = f"{verdict}: pruned better in {yes} of {len(rs)} lines, uniform better in {no}"
    return out


def _cell(r: Dict, row: str) -> str:
    if r[f"{row}_mean"] is None:
        return "-"
    return f"{r[f'{row}_mean']:.2f}" + ("" if r[f"{row}_std"] is None else f" ± {r[f'{row}_std']:.2f}")


def markdown(recs: List[Dict], metric: str) -> str:
    lines = ["# Pruned beats uniform?", "",
             f"Test {metric} (%), mean ± std over seeds. architecture: Scratch-B (the pruned architecture trained "
             "from scratch) against uniform (every layer narrowed alike to the same FLOPs, Scratch-B's epochs); "
             "pipeline: the fine-tuned pruned model against uniform; Welch's t-test at "
             f"p < {stats.ALPHA}.", "", "## Per model", ""]
    lines += [f"- **{model}**: {text}" for model, text in per_model(recs).items()]
    lines += ["", "## Per line", "", "| line | fine-tuned | Scratch-B | uniform | FLOPs pruned / uniform (M) | "
              "architecture | pipeline | pruned beats uniform? |", "|---|---|---|---|---|---|---|---|"]
    for r in recs:
        flops = "-" if r["flops_pruned"] is None or r["flops_uniform"] is None else \
            f"{r['flops_pruned'] / 1e6:.1f} / {r['flops_uniform'] / 1e6:.1f}"
        lines.append(f"| {r['line']} | {_cell(r, 'finetune')} | {_cell(r, 'scratch_b')} | {_cell(r, 'uniform')} | "
                     f"{flops} | {r['architecture']} | {r['pipeline']} | {r['pruned_beats_uniform']} |")
    return "\n".join(lines) + "\n"


def plot(lines: List[Line], recs: List[Dict], folder: Path, metric: str) -> List[Path]:
    """One bar chart per model: each line's rows side by side, mean ± std over seeds, the verdict on top."""
    from prunebench.report.plots import _pyplot, _save

    by: Dict[str, List[Line]] = defaultdict(list)
    for line in lines:
        if line.rows("uniform"):
            by[line.model].append(line)
    verdicts = {r["line"]: r["pruned_beats_uniform"] for r in recs}
    paths = []
    for model, members in by.items():
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(max(5, 1.8 * len(members)), 4))
        width = 0.8 / len(ROWS)
        for i, row in enumerate(ROWS):
            means, errs = [], []
            for line in members:
                s = stats.summary(_ok(line, row, metric))
                means.append(s["mean"] if s else 0.0)
                errs.append((s["std"] or 0.0) if s else 0.0)
            ax.bar([k + (i - 1) * width for k in range(len(members))], means, width, yerr=errs, capsize=3,
                   label=row)
        ax.set_xticks(range(len(members)))
        ax.set_xticklabels([f"{ln.method}\n{ln.name}\npruned beats uniform: {verdicts.get(ln.label, '-')}"
                            for ln in members], fontsize=7)
        ax.set_ylabel(f"test {metric} (%)")
        ax.set_title(f"{model}: pruned against uniform at matched FLOPs (mean ± std over seeds)")
        ax.legend(fontsize=8)
        values = [v for ln in members for row in ROWS for v in _ok(ln, row, metric)]
        if values:
            ax.set_ylim(max(0.0, min(values) - 5), min(100.0, max(values) + 3))
        paths += _save(fig, folder, "pruned_vs_uniform_" + slugify(model))
    return paths


def write(lines: List[Line], folder: Path, metric: str, plots: bool = True) -> Dict:
    """``uniform.md``, ``uniform.csv`` (and the figures) when some line has a uniform row; else nothing."""
    recs = records(lines, metric)
    if not recs:
        return {"records": [], "plots": []}
    folder = Path(folder)
    (folder / "uniform.md").write_text(markdown(recs, metric))
    with open(folder / "uniform.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows({k: ("" if r.get(k) is None else r[k]) for k in FIELDS} for r in recs)
    return {"records": recs, "plots": plot(lines, recs, folder / "plots", metric) if plots else []}
