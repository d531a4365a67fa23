"""Reports: the table of one run, and the aggregate of a sweep."""
from prunebench.report.table import COLUMNS, markdown, show, show_plan, write

__all__ = ["COLUMNS", "markdown", "show", "show_plan", "write"]
