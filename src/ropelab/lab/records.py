"""What the lab writes: every row stamped with :mod:`ropelab.report.provenance`, and the keys that resume it.

A lab row is :func:`ropelab.report.provenance.stamp` of the run's context (``command`` ``"lab"`` or
``"train"``; ``model`` = the encoding's name, ``model_id`` = the checkpoint file's sha256,
``trained_length``; ``float32`` on ``cpu``; the lab corpus's sha256 from
:func:`ropelab.lab.data.corpus_info`), the method (:func:`ropelab.lab.methods.lab_spec`, ``resolved`` =
the parameters the policy gave it at that length) and the numbers, plus the lab's own fields that its
report reads: ``experiment`` (``length``, ``context``, ``finetune``, ``train``), ``length``, ``multiple``,
``step``, ``windows``. ``key`` is :func:`ropelab.report.provenance.resume_key` of everything that decides
the row's numbers; a run skips a row whose key is already in ``results.jsonl`` from a current row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ropelab.lab.methods import lab_spec, resolved_params
from ropelab.report.provenance import is_current, resume_key, run_context, stamp

#: the lab runs its models in float32 on the CPU
DTYPE, DEVICE = "float32", "cpu"
#: the corpus's name in rows (its identity is the sha256 of :func:`ropelab.lab.data.corpus_info`)
CORPUS_NAME = "stdlib"


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes (a checkpoint's identity)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def lab_context(
    *, command: str, model: str, model_id: str, trained_length: int | None, corpus_sha256: str, threads: int
) -> dict[str, Any]:
    """The fields shared by every row of one lab model (:func:`ropelab.report.provenance.run_context`)."""
    return run_context(
        command=command,
        model=model,
        model_id=model_id,
        trained_length=trained_length,
        dtype=DTYPE,
        device=DEVICE,
        corpus={"name": CORPUS_NAME, "sha256": corpus_sha256},
        threads=threads,
    )


def eval_key(
    context: Mapping[str, Any], label: str, experiment: str, length: int, *, windows: int, span: int
) -> str:
    """The key of one evaluation row: ``windows`` held-out windows of ``span`` x T tokens, scored at
    ``length``."""
    return resume_key(
        context, lab_spec(label), experiment=experiment, length=length, windows=windows, span=span
    )


def finetune_key(
    context: Mapping[str, Any],
    label: str,
    length: int,
    step: int | None,
    *,
    windows: int,
    span: int,
    settings: Mapping[str, Any],
) -> str:
    """The key of one fine-tuning evaluation (``step`` None: the key of the whole curve, for its state)."""
    return resume_key(
        context,
        lab_spec(label),
        experiment="finetune",
        length=length,
        step=step,
        windows=windows,
        span=span,
        settings=dict(settings),
    )


def train_key(context: Mapping[str, Any], recipe: Mapping[str, Any]) -> str:
    """The key of one training unit: the recipe and the corpus decide the weights (training is
    deterministic)."""
    return resume_key(context, None, experiment="train", recipe=dict(recipe))


def method_row(
    context: Mapping[str, Any], label: str, *, key: str, trained: int, length: int, **numbers: Any
) -> dict[str, Any]:
    """A stamped row of ``label`` at ``length`` (the method's resolved parameters at that length)."""
    spec = lab_spec(label)
    resolved = resolved_params(label, trained=trained, length=length)
    return stamp(context, spec, resolved, key=key, length=length, **numbers)


def train_row(context: Mapping[str, Any], *, key: str | None, **numbers: Any) -> dict[str, Any]:
    """A stamped row of a training run (no method)."""
    row = stamp(context, None, None, **numbers)
    if key is not None:
        row["key"] = key
    return row


def current_rows(rows: Any) -> dict[str, dict[str, Any]]:
    """key -> row for the rows of this row layout (:func:`is_current`); older rows are recomputed."""
    return {r["key"]: r for r in rows if "key" in r and is_current(r)}
