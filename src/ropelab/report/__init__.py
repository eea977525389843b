"""Tables, JSONL results, plots and progress shared by the commands."""

from ropelab.report.plots import series_styles
from ropelab.report.progress import Progress, format_duration, progress_bar
from ropelab.report.results import append_jsonl, read_jsonl
from ropelab.report.table import format_table

__all__ = [
    "Progress",
    "append_jsonl",
    "format_duration",
    "format_table",
    "progress_bar",
    "read_jsonl",
    "series_styles",
]
