"""``results.jsonl`` of ``ropelab finetune``: a row per held-out evaluation and a final row, and their table.

Every row goes through :func:`ropelab.report.provenance.stamp` (the run's context: model and its hash,
trained length, dtype, device, threads, versions, corpus; the canonical method and the parameters it
resolved to) and adds the numbers and ``finetune``, the settings that change them (length, steps, lr,
batch size, gradient accumulation, processes, seed, schedule, ...). ``key`` is
:func:`ropelab.report.provenance.resume_key` of the row's unit (``kind``, ``step``, settings): rows are
written when the resume state is saved and at the end, from the evaluations the resume state holds, and
a key already in the file is never written again (a resumed run adds only what is new).

``curve.jsonl`` (:mod:`ropelab.finetune.curves`) stays the full curve (every logged training step).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ropelab.finetune.config import FinetuneConfig
from ropelab.registry import MethodSpec
from ropelab.report.provenance import is_current, resume_key, stamp
from ropelab.report.results import append_jsonl, read_jsonl
from ropelab.report.table import format_table
from ropelab.train.loop import LoopResult

#: what the results of this command carry in ``command``
COMMAND = "finetune"


def settings(cfg: FinetuneConfig, world: int) -> dict[str, Any]:
    """The fine-tuning settings that change a number (the model, method, corpus, dtype and device are
    in the row's own fields): ``length, steps, lr, batch_size, grad_accum, world, seed, ...``."""
    keep = ("length", "steps", "lr", "grad_accum", "warmup", "schedule", "min_lr_ratio", "weight_decay")
    out: dict[str, Any] = {k: getattr(cfg, k) for k in keep}
    out.update(
        batch_size=cfg.batch,
        world=world,
        global_batch=cfg.batch * cfg.grad_accum * world,
        grad_clip=cfg.grad_clip,
        eval_windows=cfg.eval_windows,
        seed=cfg.seed,
        grad_checkpointing=cfg.grad_checkpointing,
        strategy=cfg.strategy,
    )
    if cfg.pose is not None:  # PoSE: the target length the ids cover (rows without it keep their keys)
        out.update(pose=cfg.pose, pose_chunks=cfg.pose_chunks, pose_text=cfg.pose_text)
    return out


def _median(values: Sequence[float]) -> float | None:
    values = sorted(v for v in values if v == v)  # NaN (a step with no measured time) left out
    return values[len(values) // 2] if values else None


def result_rows(
    context: Mapping[str, Any],
    spec: MethodSpec,
    resolved: Mapping[str, Any],
    unit: Mapping[str, Any],
    result: LoopResult,
    *,
    final: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The rows of the run so far: one per evaluation in ``result`` (``step, loss, loss_within,
    loss_beyond``: held-out nats/token over all positions, inside and beyond the trained length;
    ``train_loss`` at that step; ``tokens_per_s``: the median training throughput since the previous
    evaluation; ``length``: the held-out length, PoSE's target under PoSE), then, with ``final`` (extra
    fields such as the saved model), the final row."""
    rows = []
    losses = {h["step"]: h["loss"] for h in result.history}
    previous = -1
    for e in sorted(result.evals, key=lambda e: e["step"]):
        step = e["step"]
        rates = [h.get("tokens_per_s", float("nan")) for h in result.history if previous < h["step"] <= step]
        numbers = {
            "kind": "eval",
            "step": step,
            "length": unit.get("pose", unit["length"]),  # where the held-out loss is measured
            "loss": e.get("loss"),
            "loss_within": e.get("loss_within"),
            "loss_beyond": e.get("loss_beyond"),
            "train_loss": losses.get(step),
            "tokens_per_s": _median(rates),
        }
        key = resume_key(context, spec, kind="eval", step=step, finetune=dict(unit))
        rows.append(stamp(context, spec, resolved, **numbers, finetune=dict(unit), key=key))
        previous = step
    if final is not None:
        steps = unit["steps"]
        last = next((e for e in result.evals if e["step"] == steps), {})
        numbers = {
            "kind": "final",
            "step": steps,
            "length": unit.get("pose", unit["length"]),  # where the held-out loss is measured
            "loss": last.get("loss"),
            "loss_within": last.get("loss_within"),
            "loss_beyond": last.get("loss_beyond"),
            "train_loss": result.final_loss,
            "tokens_per_s": _median([h.get("tokens_per_s", float("nan")) for h in result.history]),
            **final,
        }
        key = resume_key(context, spec, kind="final", step=steps, finetune=dict(unit))
        rows.append(stamp(context, spec, resolved, **numbers, finetune=dict(unit), key=key))
    return rows


def write_results(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> int:
    """Append the rows whose ``key`` is not yet in ``path`` (among rows of this layout); returns how many."""
    done = {r.get("key") for r in read_jsonl(path) if is_current(r)}
    added = 0
    for row in rows:
        if row["key"] not in done:
            append_jsonl(path, dict(row))
            done.add(row["key"])
            added += 1
    return added


def render_report(records: Iterable[Mapping[str, Any]]) -> str:
    """The held-out curve of each fine-tuning run in ``records`` (rows with ``command`` "finetune"):
    a title line (model, method, length, trained length, steps) and a Markdown table
    ``step | loss | inside | beyond`` (nats/token over all positions, positions < and >= the trained
    length). Runs appear in the order their first row does; rows of other commands are ignored."""
    runs: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        if r.get("command") == COMMAND and r.get("kind") == "eval":
            ident = (r.get("model"), r.get("model_id"), r.get("label"), r.get("finetune"), r.get("dtype"))
            runs.setdefault(repr(ident), []).append(r)
    if not runs:
        return "(no fine-tuning rows)"
    parts = []
    for rows in runs.values():
        by_step = {r["step"]: r for r in rows}  # one row per step (the last written)
        first = rows[0]
        s = first.get("finetune") or {}
        pose = f" with PoSE toward {s['pose']} (held out at {s['pose']})" if s.get("pose") else ""
        title = (
            f"{first.get('model')}: {first.get('label')} fine-tuned at {s.get('length')} tokens{pose} "
            f"(trained {first.get('trained_length')}; {s.get('steps')} steps, lr {s.get('lr')}, "
            f"global batch {s.get('global_batch')}, {first.get('dtype')}, {first.get('device')})"
        )
        table = [
            {
                "step": r["step"],
                "loss": r.get("loss"),
                "inside": r.get("loss_within"),
                "beyond": r.get("loss_beyond"),
            }
            for _, r in sorted(by_step.items())
        ]
        parts.append(
            title
            + "\n\n"
            + format_table(table, ["step", "loss", "inside", "beyond"], digits=4, markdown=True)
        )
    return "\n\n".join(parts)
