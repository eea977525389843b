"""Tables, JSONL results and plots shared by the commands."""

from ropelab.report.results import append_jsonl, read_jsonl
from ropelab.report.table import format_table

__all__ = ["append_jsonl", "format_table", "read_jsonl"]
