"""Results that say what made them: the fields every results row carries, and the resume key built from them.

Every command (``eval``, ``passkey``, ``lab``, ``train``, ``finetune``) writes rows through :func:`stamp`, so
each row of every ``results.jsonl`` carries :data:`ROW_FIELDS`:

- ``schema``: the row layout's version (:data:`SCHEMA`); a row of an older layout is never reused;
- ``command``; ``method`` (canonical name, :mod:`ropelab.registry`), ``label`` (the text that parses back to
  it), ``params`` (as given), ``log_n``, ``resolved`` (every parameter the method ran with, defaults
  included: Self-Extend's window and group from the model's trained length);
- ``model`` (as named), ``model_id`` (a hash of its files or the hub revision), ``trained_length``;
- ``dtype``, ``device``, ``threads``, ``versions`` (ropelab, torch, transformers, python);
- ``corpus`` (name and a hash of the text or tokens used), ``time`` (UTC, ISO 8601).

:func:`resume_key` hashes every one of those that can change a number: all but ``time``, ``threads``
(thread count changes float summation order, ~1e-7, and a resumed sweep on another core count should not
start over; it is recorded) and ``label`` (a function of the method fields).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import platform
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ropelab.registry import MethodSpec

#: the version of the row layout; bump it when a field's meaning changes, so old rows are recomputed
SCHEMA = 2
#: the fields :func:`stamp` writes into every row
ROW_FIELDS = (
    "schema",
    "command",
    "method",
    "label",
    "params",
    "log_n",
    "resolved",
    "model",
    "model_id",
    "trained_length",
    "dtype",
    "device",
    "threads",
    "versions",
    "corpus",
    "time",
)
#: fields recorded but left out of the resume key (see the module doc)
NOT_IN_KEY = frozenset({"time", "threads", "label"})


def versions() -> dict[str, str | None]:
    """The versions that can change a number: ropelab, torch, transformers (None if absent), python."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    try:
        ours = version("ropelab")
    except PackageNotFoundError:  # a source tree on PYTHONPATH, not installed
        ours = "unknown"
    try:
        import transformers

        tf: str | None = transformers.__version__
    except ImportError:
        tf = None
    return {
        "ropelab": ours,
        "torch": torch.__version__,
        "transformers": tf,
        "python": platform.python_version(),
    }


def corpus_identity(name: str, parts: Iterable[str | bytes]) -> dict[str, str]:
    """``{"name", "sha256"}``: the corpus as named, and a hash of the exact text or token hashes used."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return {"name": name, "sha256": digest.hexdigest()[:16]}


def run_context(
    *,
    command: str,
    model: str | None,
    model_id: str | None,
    trained_length: int | None,
    dtype: str,
    device: str,
    corpus: Mapping[str, str] | None,
    threads: int | None = None,
) -> dict[str, Any]:
    """The fields shared by every row of one run (everything but the method and the time)."""
    import torch

    return {
        "schema": SCHEMA,
        "command": command,
        "model": model,
        "model_id": model_id,
        "trained_length": trained_length,
        "dtype": str(dtype).removeprefix("torch."),
        "device": str(device),
        "threads": threads if threads is not None else torch.get_num_threads(),
        "versions": versions(),
        "corpus": dict(corpus) if corpus is not None else None,
    }


def table_context(*, command: str, trained_length: int | None = None) -> dict[str, Any]:
    """The run context of a command that computes from a method alone, with no model or corpus
    (``inspect``, ``export``, ``check``, ``presets``): model and corpus fields are ``None``; the tables are
    computed on the CPU in float32 (frequencies) and float64 (angles)."""
    return run_context(
        command=command,
        model=None,
        model_id=None,
        trained_length=trained_length,
        dtype="float32",
        device="cpu",
        corpus=None,
    )


def method_fields(spec: MethodSpec | None, resolved: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``method``, ``label``, ``params``, ``log_n``, ``resolved`` of a spec (all ``None`` for no method)."""
    if spec is None:
        return {"method": None, "label": None, "params": None, "log_n": None, "resolved": None}
    out = spec.to_dict()
    out["label"] = spec.label
    out["resolved"] = dict(resolved) if resolved is not None else dict(spec.params)
    return out


def stamp(
    context: Mapping[str, Any],
    spec: MethodSpec | None,
    resolved: Mapping[str, Any] | None = None,
    /,
    **row: Any,
) -> dict[str, Any]:
    """A results row: the run's context, the method's fields, the time, then ``row`` (the numbers)."""
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return {**context, **method_fields(spec, resolved), "time": now, **row}


def resume_key(context: Mapping[str, Any], spec: MethodSpec | None, /, **unit: Any) -> str:
    """A hash of everything that changes a unit's numbers: the run context (less :data:`NOT_IN_KEY`),
    the method (name, parameters, log-n, ``*A``) and ``unit`` (its length, document, settings)."""
    fields = {k: v for k, v in context.items() if k not in NOT_IN_KEY}
    fields["method"] = None if spec is None else spec.to_dict()
    fields["unit"] = unit
    blob = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def missing_fields(row: Mapping[str, Any]) -> list[str]:
    """The :data:`ROW_FIELDS` a row lacks (an empty list for a row written by this version)."""
    return [name for name in ROW_FIELDS if name not in row]


def is_current(row: Mapping[str, Any]) -> bool:
    """Whether ``row`` was written with this row layout (older rows are recomputed, never reused)."""
    return row.get("schema") == SCHEMA and not missing_fields(row)
