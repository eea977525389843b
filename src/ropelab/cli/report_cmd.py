"""`ropelab report OUT [OUT ...]`: tables, report.md and plots re-drawn from results files (no model)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ropelab.cli.flags import add_out


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="re-render tables, report.md and plots from results folders, side by side",
        description="Read each folder's results.jsonl (or a results file), group the rows by the command "
        "that wrote them and render their tables, report.md and plots, without loading a model. Several "
        "folders go side by side in one table; a method label two runs share is told apart by folder name.",
    )
    p.add_argument(
        "paths", nargs="+", type=Path, metavar="OUT", help="results folders or results.jsonl files"
    )
    add_out(p, "out/report")
    p.set_defaults(run=run_report)


def run_report(args: argparse.Namespace) -> int:
    from ropelab.results import render_results

    rendered = render_results(args.paths, out=args.out)
    print(rendered.text.rstrip("\n"))
    print(f"\nreport: {args.out / 'report.md'}" + "".join(f"\nplot: {p}" for p in rendered.files[1:]))
    return 0
