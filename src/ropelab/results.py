"""Results of every command, re-rendered from files: ``ropelab report OUT [OUT ...]``.

:func:`render_results` reads results folders (or files), groups the rows by the command that wrote them
and hands each group to that command's renderer (:data:`RENDERERS`): ``eval`` and ``passkey``
(:mod:`ropelab.evaluate.report`), ``lab`` (:func:`ropelab.lab.report.render_report`), ``finetune``
(:func:`ropelab.finetune.render_report`), ``tasks`` (:func:`ropelab.tasks.render_tasks`), ``search``
(:func:`ropelab.search.render_search`). No model is
loaded; nothing is measured. This module sits above the job packages (it knows them all; they know
nothing of each other).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from ropelab.evaluate.report import RENDERERS as EVAL_RENDERERS
from ropelab.evaluate.report import Rendered, Row, Section
from ropelab.evaluate.report import render_results as _render
from ropelab.finetune.results import render_report as finetune_report
from ropelab.lab.report import render_report as lab_report
from ropelab.search import render_search
from ropelab.tasks import render_tasks

__all__ = ["RENDERERS", "render_results"]


def _lab(rows: Sequence[Row], out: Path | None) -> Section:
    """The lab's report (setup, claims, tables); its plots go to ``out`` when given."""
    if out is None:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:  # the lab renderer always draws; keep nothing
            return Section("lab", lab_report(rows, Path(tmp)))
    before = set(out.glob("lab_*.png"))
    text = lab_report(rows, out)
    return Section("lab", text, sorted(set(out.glob("lab_*.png")) | before))


def _finetune(rows: Sequence[Row], out: Path | None) -> Section:
    return Section("finetune", "# fine-tuning\n\n" + finetune_report(rows) + "\n")


#: command -> its renderer ``(rows, out folder or None) -> Section``
RENDERERS: dict[str, Callable[[Sequence[Row], Path | None], Section]] = {
    **EVAL_RENDERERS,
    "lab": _lab,
    "finetune": _finetune,
    "tasks": render_tasks,
    "search": render_search,
}


def render_results(paths: Sequence[str | Path], out: str | Path | None = None) -> Rendered:
    """Tables, ``report.md`` and plots of results folders or files, several side by side, from the rows
    alone (see :func:`ropelab.evaluate.render_results`, here with every command's renderer)."""
    return _render(paths, out, renderers=RENDERERS)
