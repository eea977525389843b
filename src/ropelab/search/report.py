"""``ropelab report`` for ``search`` rows: each search's seeds, best candidate and progress, from its rows.

A search writes one row per evaluated candidate (:mod:`ropelab.search.evolve`): ``search`` (the hash of
its settings), ``generation``, ``origin`` (``linear``/``ntk``/``yarn`` for the seeds, ``mutation`` or
``crossover``), ``loss``, the candidate and the provenance fields. Rows of several searches (several
folders, or one folder searched at two targets) are told apart by ``search``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ropelab.search.output import plot_best
from ropelab.search.space import SEED_METHODS as SEEDS


def best_by_generation(rows: Sequence[dict[str, Any]]) -> list[tuple[int, int, float]]:
    """``(generation, evaluations so far, best loss so far)`` per generation of one search's rows."""
    out: list[tuple[int, int, float]] = []
    best, seen = float("inf"), 0
    for gen in sorted({int(r["generation"]) for r in rows}):
        members = [r for r in rows if int(r["generation"]) == gen]
        seen += len(members)
        best = min(best, *(float(r["loss"]) for r in members))
        out.append((gen, seen, best))
    return out


def _searches(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(str(row.get("search") or row["key"].split(":")[0]), []).append(row)
    return groups


def _describe(rows: Sequence[dict[str, Any]]) -> tuple[str, list[dict[str, str]]]:
    first = rows[0]
    resolved = first.get("resolved") or {}
    target = resolved.get("length")
    trained = first.get("trained_length") or resolved.get("original_max_position_embeddings")
    best = min(rows, key=lambda r: float(r["loss"]))
    head = (
        f"model {first.get('model')}, target {target} tokens (trained {trained}), {len(rows)} evaluations "
        f"over {1 + max(int(r['generation']) for r in rows)} generations; loss: same-tokens nats/token"
    )
    table = [
        {"candidate": f"seed {r['origin']}", "loss": f"{float(r['loss']):.4f}"}
        for r in rows
        if int(r["generation"]) == 0 and r.get("origin") in SEEDS
    ]
    cand = best.get("candidate") or {}
    factors = " ".join(f"{f:g}" for f in cand.get("factors", []))
    table.append(
        {
            "candidate": f"best (generation {best['generation']}, {best.get('origin')})",
            "loss": f"{float(best['loss']):.4f}",
        }
    )
    return head + f"\n\nbest factors (fastest pair first): `{factors}`, n_hat {cand.get('n_hat', 0)}", table


def render_search(rows: Sequence[dict[str, Any]], out: Path | None) -> Any:
    """``ropelab report``'s section for ``search`` rows (:class:`ropelab.evaluate.Section`): per search a
    table of its seeds and its best candidate, and with ``out`` a plot of the best loss per generation."""
    from ropelab.evaluate import Section
    from ropelab.report import format_table

    parts, drawn = ["# search\n"], []
    for i, (key, members) in enumerate(sorted(_searches(rows).items())):
        head, table = _describe(members)
        parts.append(f"## search {key}\n\n{head}\n\n{format_table(table)}\n")
        if out is not None:
            seeds = {
                f"seed {r['origin']}": float(r["loss"])
                for r in members
                if int(r["generation"]) == 0 and r.get("origin") in SEEDS
            }
            name = f"search_best_{i}.png"
            drawn.append(
                plot_best(best_by_generation(members), out / name, title=head.split(";")[0], references=seeds)
            )
    return Section("search", "\n".join(parts), drawn)
