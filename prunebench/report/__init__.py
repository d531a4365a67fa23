"""Reports: the table of one run (``table``), and for a sweep the lines of runs that differ in the seed
alone (``runs``), the paper-layout table (``paper``), kept widths (``widths``) and figures (``plots``)."""
from prunebench.report.table import COLUMNS, markdown, show, show_plan, write

__all__ = ["COLUMNS", "markdown", "show", "show_plan", "write"]
