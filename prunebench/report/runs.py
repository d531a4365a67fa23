"""The runs under a results folder, and the report lines they form.

A run is a folder holding ``results.csv`` (one row per stage of the protocol of
Liu et al., ICLR 2019) and, when written by ``prunebench``, its composed
``config.yaml``. A report *line* is a set of runs that differ in the seed alone:
their configs are equal once ``seed`` and the settings that cannot change a
result (``IGNORED``: output paths, progress bars, the device) are removed. The
paper reports the mean over such runs (5 seeds in Liu et al.); a line that mixes
two values of anything else (two ``model.width``, two schedules) would average
different experiments, so those are two lines, each named by what differs.
"""
import csv
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from omegaconf import OmegaConf

log = logging.getLogger(__name__)

# dotted config keys (and everything below them) that do not define an experiment
IGNORED = ("seed", "hydra", "cache_dir", "progress", "device", "retry_failed", "dataset.root", "dataset.download")
# settings already shown as columns of every table: never part of a line's name
SHOWN = ("dataset.name", "model.name", "method.name", "method.pruning_ratio")
ROW_ORDER = ["unpruned", "sparse", "pruned", "finetune", "scratch_e", "scratch_b", "uniform", "lottery", "guided"]
NUMERIC = ("acc1", "acc1_best", "acc5", "paper_acc1", "params", "flops", "latency_ms", "epochs", "seconds",
           "pruning_ratio", "width_factor")


@dataclass
class RunResult:
    """One run folder: its rows (numbers parsed) and its flattened config (empty when absent)."""
    folder: Path
    rows: List[Dict[str, Any]]
    config: Dict[str, Any] = field(default_factory=dict)

    @property
    def seed(self):
        return self.config.get("seed", self.rows[0].get("seed") if self.rows else None)


@dataclass
class Line:
    """Runs that differ in the seed alone; ``name`` says what sets it apart from the other lines."""
    dataset: str
    model: str
    method: str
    ratio: Any
    name: str
    runs: List[RunResult]

    @property
    def label(self) -> str:
        base = f"{self.method} {self.model} {self.dataset} r={self.ratio}"
        return f"{base} ({self.name})" if self.name else base

    @property
    def slug(self) -> str:
        return slugify(f"{self.method} {self.model} {self.dataset} r{self.ratio} {self.name}")

    def rows(self, row: str) -> List[Dict[str, Any]]:
        """Every run's row named ``row`` (one per seed), in seed order."""
        return [r for run in self.runs for r in run.rows if r["row"] == row]

    def row_names(self) -> List[str]:
        names = {r["row"] for run in self.runs for r in run.rows}
        rank = {n: i for i, n in enumerate(ROW_ORDER)}
        return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


def slugify(text: str) -> str:
    """A file-name-safe form of ``text``: ``l1_norm vgg19 cifar10 r0.5 model.width=0.5`` ->
    ``l1_norm_vgg19_cifar10_r0.5_model.width-0.5``."""
    out = "".join(c if c.isalnum() or c in "._-" else "_" if c.isspace() else "-" for c in text.strip())
    while "__" in out:
        out = out.replace("__", "_")
    return out.strip("_-")


def parse_value(key: str, value: str):
    if value is None or value == "":
        return None
    if key in NUMERIC or key == "seed":
        try:
            f = float(value)
        except ValueError:
            return value
        return int(f) if key in ("params", "flops", "epochs", "seed") else f
    return value


def read_rows(path: Path) -> List[Dict[str, Any]]:
    with open(path) as f:
        return [{k: parse_value(k, v) for k, v in r.items()} for r in csv.DictReader(f)]


def flatten(tree: Any, prefix: str = "") -> Dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists become tuples (hashable)."""
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out if out or not prefix else {prefix[:-1]: ()}
    if isinstance(tree, list):
        return {prefix[:-1]: tuple(repr(v) for v in tree)}
    return {prefix[:-1]: tree}


def ignored(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in IGNORED)


def load_run(folder: Path) -> RunResult:
    folder = Path(folder)
    config = {}
    if (folder / "config.yaml").exists():
        config = flatten(OmegaConf.to_container(OmegaConf.load(folder / "config.yaml")) or {})
    return RunResult(folder, read_rows(folder / "results.csv"), config)


def collect(folder: Path) -> List[RunResult]:
    """Every run under ``folder`` (the folder itself included), in path order."""
    return [load_run(p.parent) for p in sorted(Path(folder).rglob("results.csv"))]


def identity(run: RunResult) -> Tuple:
    """What a run is, seed aside: its config minus ``IGNORED``, or without a config the table's columns."""
    if run.config:
        return tuple(sorted((k, v) for k, v in run.config.items() if not ignored(k)))
    first = run.rows[0] if run.rows else {}
    return tuple(sorted((f"{k}.name" if k != "pruning_ratio" else "method.pruning_ratio", first.get(k))
                        for k in ("dataset", "model", "method", "pruning_ratio")))


def _shown_value(run: RunResult, key: str, column: str):
    if key in run.config:
        return run.config[key]
    return run.rows[0].get(column) if run.rows else None


def group(runs: List[RunResult]) -> List[Line]:
    """Group runs into lines (equal identity), each named by the settings in which the lines of the
    same data set, model, method and ratio differ (``model.width=0.5``), sorted for reading."""
    by_identity: Dict[Tuple, List[RunResult]] = defaultdict(list)
    for run in runs:
        if run.rows:
            by_identity[identity(run)].append(run)
    lines = []
    idents = list(by_identity)
    for ident in idents:
        members = sorted(by_identity[ident], key=lambda r: (r.seed is None, r.seed))
        seeds = [r.seed for r in members]
        if len(set(seeds)) < len(seeds):
            log.warning("runs %s repeat a seed with the same settings; each is counted",
                        ", ".join(str(r.folder) for r in members))
        first = members[0]
        d, m, me, ratio = (_shown_value(first, k, c) for k, c in
                           zip(SHOWN, ("dataset", "model", "method", "pruning_ratio")))
        lines.append((ident, Line(str(d), str(m), str(me), ratio, "", members)))
    # name each line by the keys whose values differ among the lines sharing its table columns
    siblings: Dict[Tuple, List[Tuple[Tuple, Line]]] = defaultdict(list)
    for ident, line in lines:
        siblings[(line.dataset, line.model, line.method, line.ratio)].append((ident, line))
    for members in siblings.values():
        if len(members) < 2:
            continue
        dicts = [dict(ident) for ident, _ in members]
        keys = sorted({k for d in dicts for k in d})
        differing = [k for k in keys if k not in SHOWN and len({repr(d.get(k)) for d in dicts}) > 1]
        for d, (_, line) in zip(dicts, members):
            line.name = ", ".join(f"{k}={_plain(d.get(k))}" for k in differing)
    out = [line for _, line in lines]
    return sorted(out, key=lambda ln: (ln.dataset, ln.model, ln.method, _num(ln.ratio), ln.name))


def _plain(v) -> str:
    if isinstance(v, tuple):
        return "[" + ",".join(x.strip("'") for x in v) + "]"
    return str(v)


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("inf")


def stage_folder(row: Dict[str, Any], run: Optional[RunResult] = None) -> Optional[Path]:
    """The stage folder of a row (``stage`` column), resolved against the run folder when relative."""
    s = row.get("stage")
    if not s:
        return None
    p = Path(s)
    if not p.is_absolute() and run is not None and not p.exists():
        p = run.folder / p
    return p
