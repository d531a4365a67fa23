"""Statistics over seeds: mean ± sample standard deviation, and the verdict of a line.

Liu et al. (ICLR 2019) report means over 5 runs and read "Scratch-B matches or beats
fine-tuning" off those means. We test it: Welch's t-test (unequal variances,
``scipy.stats.ttest_ind(equal_var=False)``) of Scratch-B's top-1 against
fine-tuning's over seeds, at ``ALPHA``.
"""
import math
import statistics
import warnings
from typing import Dict, List, Optional

ALPHA = 0.05  # two-sided significance level of the verdict


def summary(values: List[float]) -> Optional[Dict]:
    """``{"mean", "std", "n"}`` of the non-missing ``values`` (std: sample std, None for one value)."""
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return None
    return {"mean": statistics.mean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else None,
            "n": len(vals)}


def welch_p(a: List[float], b: List[float]) -> float:
    """Two-sided p-value of Welch's t-test; with no spread on either side: 1 if the means are equal, else 0."""
    from scipy import stats

    if statistics.pvariance(a) == 0 and statistics.pvariance(b) == 0:
        return 1.0 if statistics.mean(a) == statistics.mean(b) else 0.0
    with warnings.catch_warnings():  # one side without spread: scipy warns of precision, the test holds
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def verdict(scratch_b: List[float], finetune: List[float], alpha: float = ALPHA) -> Dict:
    """Scratch-B against fine-tuning over seeds: ``{"verdict", "p"}``; the verdict reads
    "scratch-B better", "fine-tuned better", "no significant difference (p = 0.42)",
    "1 seed, no test", or says which side is missing."""
    a = [float(v) for v in scratch_b if v is not None]
    b = [float(v) for v in finetune if v is not None]
    if not a or not b:
        return {"verdict": "no test: " + ("scratch_b" if not a else "finetune") + " missing", "p": None}
    out = compare(a, b, "scratch-B", "fine-tuned", alpha)
    return {"verdict": out["verdict"], "p": out["p"]}


def compare(a: List[float], b: List[float], name_a: str, name_b: str, alpha: float = ALPHA) -> Dict:
    """Row ``name_a`` against row ``name_b`` over seeds (Welch's t-test): ``{"verdict", "p", "better",
    "diff"}``; the verdict reads "<name_a> better (p = 0.01)", "<name_b> better (...)", "no significant
    difference (p = 0.42)", "1 seed, no test", or says which side is missing; ``better`` is the side
    found better, or None; ``diff`` is mean a - mean b (None without both)."""
    a = [float(v) for v in a if v is not None]
    b = [float(v) for v in b if v is not None]
    diff = statistics.mean(a) - statistics.mean(b) if a and b else None
    if not a or not b:
        return {"verdict": f"no test: {name_a if not a else name_b} missing", "p": None, "better": None, "diff": diff}
    if len(a) < 2 or len(b) < 2:
        return {"verdict": "1 seed, no test", "p": None, "better": None, "diff": diff}
    p = welch_p(a, b)
    if p < alpha:
        better = name_a if diff > 0 else name_b
        return {"verdict": f"{better} better (p = {p:.2g})", "p": p, "better": better, "diff": diff}
    return {"verdict": f"no significant difference (p = {p:.2f})", "p": p, "better": None, "diff": diff}


def cell(s: Optional[Dict], digits: int = 2) -> str:
    """``93.41 ± 0.12 (n=3)``; one value shows no spread: ``93.41 (n=1)``."""
    if s is None:
        return "-"
    text = f"{s['mean']:.{digits}f}"
    if s["std"] is not None:
        text += f" ± {s['std']:.{digits}f}"
    return f"{text} (n={s['n']})"
