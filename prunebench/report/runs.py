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
import re
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
ROW_ORDER = ["unpruned", "sparse", "pruned", "finetune", "scratch_e", "scratch_b", "uniform", "lottery", "guided",
             "finetune_large", "lr_rewind", "one_cycle", "distill", "random_arch", "shuffled", "reinit", "small_model"]
NUMERIC = ("acc1", "acc1_best", "acc5", "paper_acc1", "params", "flops", "latency_ms", "epochs", "seconds",
           "pruning_ratio", "width_factor", "latency_sat_ms", "onnx_ms", "onnx_sat_ms", "flops_speedup", "speedup",
           "speedup_sat", "onnx_speedup", "onnx_speedup_sat", "acc1_val_selected", "val_epoch", "train_flops",
           "total_train_flops", "wall_seconds", "total_wall_seconds", "acc1_std", "members_n")


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
        return int(f) if key in ("params", "flops", "epochs", "seed", "train_flops", "total_train_flops") else f
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


class UnreadableRun(Exception):
    """A run folder whose results.csv or config.yaml cannot be read as prunebench writes them."""


def load_run(folder: Path) -> RunResult:
    """The run in ``folder``; :class:`UnreadableRun` naming the file when its ``results.csv`` is
    not a prunebench table (no ``row`` column) or its ``config.yaml`` is not a YAML mapping."""
    folder = Path(folder)
    config = {}
    path = folder / "config.yaml"
    try:
        if path.exists():
            tree = OmegaConf.to_container(OmegaConf.load(path))
            if tree is not None and not isinstance(tree, dict):
                raise ValueError("not a mapping")
            config = flatten(tree or {})
        path = folder / "results.csv"
        rows = read_rows(path)
    except Exception as e:  # noqa: BLE001 - YAML, CSV and decoding errors alike: the file is named
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise UnreadableRun(f"{path} cannot be read ({type(e).__name__}: {reason})") from e
    if rows and "row" not in rows[0]:
        raise UnreadableRun(f"{folder / 'results.csv'} is not a prunebench results table (no 'row' column)")
    return RunResult(folder, rows, config)


def collect(folder: Path) -> List[RunResult]:
    """Every run under ``folder`` (the folder itself included), in path order; a run that cannot be
    read is skipped with a warning naming its file."""
    runs = []
    for p in sorted(Path(folder).rglob("results.csv")):
        try:
            runs.append(load_run(p.parent))
        except UnreadableRun as e:
            log.warning("skipped: %s", e)
    return runs


def unfinished_jobs(folder: Path) -> List[Path]:
    """Job folders under ``folder`` that began (Hydra's ``.hydra/config.yaml`` or prunebench's
    ``config.yaml``) but hold no ``results.csv``: jobs that were killed or are still running."""
    began = {p.parent.parent for p in Path(folder).rglob(".hydra/config.yaml")}
    began |= {p.parent for p in Path(folder).rglob("config.yaml") if p.parent.name != ".hydra"}
    return sorted(f for f in began if not (f / "results.csv").exists())


def job_seed(folder: Path) -> Optional[int]:
    """The seed in a job folder's config (prunebench's ``config.yaml`` or Hydra's), if readable."""
    for path in (folder / "config.yaml", folder / ".hydra" / "config.yaml"):
        try:
            seed = OmegaConf.select(OmegaConf.load(path), "seed") if path.exists() else None
        except Exception:  # noqa: BLE001 - an unreadable config says nothing of the seed
            seed = None
        if isinstance(seed, int):
            return seed
    return None


def missing_seeds(folder: Path, lines: List["Line"]) -> List[str]:
    """Warnings, one line each: a job folder that began but left no results.csv, and a line of a
    sweep (a folder holding ``multirun.yaml``) with fewer seeds than the sweep ran."""
    out = []
    unfinished = unfinished_jobs(folder)
    for job in unfinished:
        out.append(f"{job} holds no results.csv (the job was killed, stopped before its table, was a dry run, "
                   f"or is still running): its seed is missing from its line; rerun it (finished stages are reused)")
    for sweep in sorted(p.parent for p in Path(folder).rglob("multirun.yaml")):
        seeds = set(swept_seeds(sweep)) | {s for j in unfinished if sweep in j.parents for s in [job_seed(j)]
                                           if s is not None}
        members = [(line, [r for r in line.runs if sweep in r.folder.parents]) for line in lines]
        seeds |= {r.seed for _, runs in members for r in runs if r.seed is not None}
        for line, runs in members:
            have = {r.seed for r in runs}
            if runs and seeds - have:
                out.append(f"{line.label}: {len(have)} of the {len(seeds)} seeds of the sweep {sweep} (missing "
                           f"{sorted(seeds - have)}); its mean covers fewer seeds than asked")
    return out


def swept_seeds(folder: Path) -> List[int]:
    """The seeds a sweep in ``folder`` asked for: the ``seed=`` override of its ``multirun.yaml``
    (the command line's, else the preset's ``hydra.sweeper.params``; ``0,1,2`` or ``range(0,3)``),
    else none known."""
    path = Path(folder) / "multirun.yaml"
    if not path.exists():
        return []
    try:
        tree = OmegaConf.load(path)
        overrides = [str(o).partition("=") for o in OmegaConf.select(tree, "hydra.overrides.task") or []]
        values = [v for k, _, v in overrides if k.lstrip("+") == "seed"]
        params = OmegaConf.select(tree, "hydra.sweeper.params") or {}
        values += [str(params["seed"])] if "seed" in params else []
    except Exception:  # noqa: BLE001 - a damaged multirun.yaml only costs this check
        log.warning("skipped: %s cannot be read; the seeds the sweep asked for are not known", path)
        return []
    for value in values[:1]:
        m = re.fullmatch(r"range\((-?\d+),\s*(-?\d+)(?:,\s*(-?\d+))?\)", value.strip())
        if m:
            return list(range(int(m[1]), int(m[2]), int(m[3] or 1)))
        try:
            return [int(v) for v in value.split(",")]
        except ValueError:
            return []
    return []


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
