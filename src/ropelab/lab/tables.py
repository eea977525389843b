"""The lab's tables, computed from its rows alone (``results.jsonl``; nothing is measured again).

Rows are matched by ``(model, label, length)``: :func:`row_label` is the canonical method label of
:mod:`ropelab.lab.methods` (``linear``, ``dynamic+log-n``); rows of an older layout, which carried the
lab's own names (``pi``, ``dynamic-ntk``), are read as the same methods.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ropelab.lab.methods import canonical_label

Records = Sequence[Mapping[str, Any]]


def row_label(row: Mapping[str, Any]) -> str:
    """The canonical method label of a lab row (``label``; older rows: their ``method`` normalised)."""
    label = row.get("label")
    return str(label) if label is not None else canonical_label(str(row["method"]))


def index_rows(records: Records, experiment: str) -> dict[tuple[str, str, int], Mapping[str, Any]]:
    """(model, label, length) -> the row of ``experiment`` (rows with an error left out)."""
    return {
        (r["model"], row_label(r), int(r["length"])): r
        for r in records
        if r.get("experiment") == experiment and "error" not in r
    }


def cell(
    index: Mapping[tuple[str, str, int], Mapping[str, Any]], model: str, method: str, length: int, key: str
) -> Any:
    """One number of one row of :func:`index_rows` (None if the row is missing)."""
    row = index.get((model, method, length))
    return None if row is None else row.get(key)


def lengths_of(records: Records, experiment: str = "length") -> list[int]:
    """The evaluation lengths of ``experiment``'s rows, sorted."""
    return sorted({int(r["length"]) for r in records if r.get("experiment") == experiment})


def trained_of(records: Records) -> int:
    """The trained length T of the rows' models."""
    return min(int(r["trained_length"]) for r in records if r.get("trained_length") is not None)


def nx(length: int, trained: int) -> str:
    """``"4x"`` for ``length = 4 * trained``."""
    return f"{length / trained:g}x"


def models_of(records: Records) -> list[str]:
    """The encodings evaluated as trained, in the rows' order."""
    return list(dict.fromkeys(r["model"] for r in records if r.get("experiment") == "length"))


def labels_of(records: Records) -> list[str]:
    """The methods on the RoPE model other than ``none``, in the rows' order."""
    labels = (row_label(r) for r in records if r.get("experiment") == "length" and r.get("model") == "rope")
    return [label for label in dict.fromkeys(labels) if label != "none"]


def settings_of(records: Records) -> dict[str, Any]:
    """What the rows say about the run's settings (windows per evaluation, fine-tuning settings)."""
    out: dict[str, Any] = {}
    for r in records:
        if r.get("experiment") == "length" and "eval_windows" not in out:
            out["eval_windows"] = r.get("windows")
        if r.get("experiment") == "finetune":
            # rows of an older layout carry no settings: the steps and the multiple are in the rows
            steps = max(int(r["step"]), out.get("finetune_steps", 0))
            out = {**r.get("finetune_settings", {}), "finetune_multiple": r.get("multiple"), **out}
            out["finetune_steps"] = steps
    return out


def encoding_rows(records: Records, models: Sequence[str]) -> list[dict[str, Any]]:
    """Per encoding: loss inside T (first T tokens), beyond T at each length; and the context view."""
    T, lengths = trained_of(records), lengths_of(records)
    idx, ctx = index_rows(records, "length"), index_rows(records, "context")
    rows = []
    for model in models:
        row: dict[str, Any] = {
            "encoding": model,
            "inside": cell(idx, model, "none", lengths[0], "loss_inside"),
        }
        for n in lengths[1:]:
            row[f"beyond {nx(n, T)}"] = cell(idx, model, "none", n, "loss_beyond")
        for n in lengths:
            row[f"ctx {nx(n, T)}"] = cell(ctx, model, "none", n, "loss_last")
        rows.append(row)
    return rows


def method_rows(records: Records, labels: Sequence[str]) -> list[dict[str, Any]]:
    """Per method on the RoPE model: inside and beyond T at each length, and the context view."""
    T, lengths = trained_of(records), lengths_of(records)
    idx, ctx = index_rows(records, "length"), index_rows(records, "context")
    rows = []
    for label in labels:
        row: dict[str, Any] = {"method": label}
        for n in lengths[1:]:
            row[f"in {nx(n, T)}"] = cell(idx, "rope", label, n, "loss_inside")
        for n in lengths[1:]:
            row[f"beyond {nx(n, T)}"] = cell(idx, "rope", label, n, "loss_beyond")
        for n in lengths:
            row[f"ctx {nx(n, T)}"] = cell(ctx, "rope", label, n, "loss_last")
        rows.append(row)
    return rows


def finetune_context_rows(records: Records) -> list[dict[str, Any]]:
    """Per fine-tuned method at its last step: loss at 4x, and whether it uses the longer context
    (the same last T tokens given T tokens of context and given 4T)."""
    last: dict[str, Mapping[str, Any]] = {}
    for r in records:
        label = row_label(r) if r.get("experiment") == "finetune" else ""
        if label and (label not in last or r["step"] > last[label]["step"]):
            last[label] = r
    rows = []
    for method, r in last.items():
        short, long = r.get("loss_last_short"), r.get("loss_last")
        rows.append(
            {
                "method": method,
                "steps": r["step"],
                "loss at 4x": r["loss"],
                "inside": r["loss_inside"],
                "beyond": r["loss_beyond"],
                "last T, ctx T": short,
                "last T, ctx 4T": long,
                "gain from context": None if short is None or long is None else short - long,
            }
        )
    return rows


def finetune_rows(records: Records) -> tuple[list[dict[str, Any]], list[str]]:
    """Loss at the fine-tuning length (all positions) per step, one column per method."""
    rows: dict[int, dict[str, Any]] = {}
    methods: list[str] = []
    for r in records:
        if r.get("experiment") != "finetune":
            continue
        label = row_label(r)
        if label not in methods:
            methods.append(label)
        rows.setdefault(int(r["step"]), {"step": int(r["step"])})[label] = r["loss"]
    return [rows[s] for s in sorted(rows)], methods
