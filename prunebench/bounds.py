"""A setting out of its range: one :class:`PrunebenchError` line, worded alike wherever a setting
is checked (:mod:`prunebench.validate`, the strategies', methods' and models' own ``check``).

Each check names the setting by its config path and says what it got; ``optional``: ``None``
passes (the setting falls back to a default, which ``null`` names in the message)."""
from typing import Any, Iterable, Optional

from prunebench.errors import PrunebenchError


def _fail(name: str, rule: str, value: Any, what: str = "", null: str = "") -> None:
    why = f" ({what})" if what else ""
    fallback = f" (null: {null})" if null else ""
    raise PrunebenchError(f"{name} must {rule}{why}{fallback}, got {value}")


def positive(name: str, value: Any, optional: bool = False, null: str = "", what: str = "") -> None:
    """``value`` > 0."""
    if value is None and optional:
        return
    if value is None or not value > 0:
        _fail(name, "be > 0", value, what, null)


def at_least(name: str, value: Any, low: float, optional: bool = False, null: str = "", what: str = "") -> None:
    """``value`` >= ``low``."""
    if value is None and optional:
        return
    if value is None or not value >= low:
        _fail(name, f"be >= {low}", value, what, null)


def within(name: str, value: Any, low: float, high: float, *, open_low: bool = False, open_high: bool = False,
           optional: bool = False, null: str = "", what: str = "") -> None:
    """``value`` in the interval from ``low`` to ``high``, each end closed unless ``open_low`` /
    ``open_high``."""
    if value is None and optional:
        return
    above = value is not None and (value > low if open_low else value >= low)
    below = value is not None and (value < high if open_high else value <= high)
    if not (above and below):
        interval = f"{'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
        _fail(name, f"lie in {interval}", value, what, null)


def fractions(name: str, values: Optional[Iterable[float]], what: str = "fractions of its epochs",
              null: str = "") -> None:
    """Every one of ``values`` in [0, 1] (``None`` passes: the default)."""
    if values is not None and not all(0 <= v <= 1 for v in values):
        _fail(name, "lie in [0, 1]", list(values), what, null)
