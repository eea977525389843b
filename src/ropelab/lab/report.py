"""The lab's report: ``report.md``, PNG plots and the terminal tables, from the rows alone.

:func:`render_report` is the pure renderer (rows in, markdown and plots out, no model loaded), which
``ropelab report`` calls for rows of the command ``lab``; :func:`write_report` adds what only the run
knows (its command, wall time, the corpus's file counts, the checkpoints' training summaries) and
writes ``report.md``. Tables: :mod:`ropelab.lab.tables`; claims: :mod:`ropelab.lab.claims`; plots:
:mod:`ropelab.lab.plots`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ropelab.lab.claims import HOLD_MARGIN, claims
from ropelab.lab.data import SPLIT_MODULUS
from ropelab.lab.plots import plot_finetune, plot_lengths
from ropelab.lab.tables import (
    Records,
    cell,
    encoding_rows,
    finetune_context_rows,
    finetune_rows,
    index_rows,
    labels_of,
    lengths_of,
    method_rows,
    models_of,
    nx,
    settings_of,
    trained_of,
)
from ropelab.report import format_table

__all__ = ["HOLD_MARGIN", "SETUP", "render_report", "write_report"]

SETUP = """\
- Corpus: the top-level `*.py` files of this Python's standard library, byte tokens (vocabulary
  256). A file is held out iff `int(sha256(file name)[:8], 16) % {modulus} == 0`.
- Evaluation: {windows} held-out windows of {longest} the trained length T (non-overlapping,
  round-robin over the held-out files), the same tokens for every model and method. Losses are
  token-weighted mean NLL in nats per byte.
- **inside** = positions < T, **beyond** = positions >= T, in a forward over the first L tokens
  of each window (`beyond 4x` = the loss of positions T..4T-1 at L = 4T).
- **ctx Lx** = the same last T tokens of each window, given L tokens of context. Text difficulty
  is identical across L: a model that uses the longer context holds or improves; one that breaks
  gets worse.
- Methods, zero-shot on the RoPE model: static PI (`linear`) / NTK / NTK-mixed / YaRN use s = L/T at
  evaluation length L; dynamic NTK / YaRN score each position with the scale of the shortest
  evaluation length that contains it (inside T: the trained frequencies); ReRoPE: window T/2;
  leaky ReRoPE: window T/2, leak (L - 1 - T/2) / (T/2 - 1), so the farthest distance reads as
  T - 1; Self-Extend: window T/2 and the smallest group that reaches L; `+log-n`: queries at
  position n scaled by max(1, log(n+1) / log T)."""


def _render(
    records: Records,
    out: Path,
    *,
    models: Sequence[str] | None,
    labels: Sequence[str] | None,
    settings: Mapping[str, Any] | None,
) -> tuple[list[str], list[str], dict[str, Any]]:
    """(setup markdown, results markdown, tables and plot paths); writes the PNGs into ``out``."""
    models = models_of(records) if models is None else list(models)
    labels = labels_of(records) if labels is None else list(labels)
    settings = {**settings_of(records), **(settings or {})}
    lengths = lengths_of(records)
    T = trained_of(records) if lengths else 0
    enc_rows = encoding_rows(records, models) if lengths else []
    meth_rows = method_rows(records, ["none", *labels]) if lengths and "rope" in models else []
    ft_rows, ft_methods = finetune_rows(records)
    ft_context = finetune_context_rows(records)
    claim_rows = claims(records) if lengths else []
    plots: dict[str, Path] = {}
    if lengths:
        plots["encodings"] = plot_lengths(
            records,
            out / "lab_encodings.png",
            models=models,
            title=f"lab models trained at T={T}: held-out loss past T",
        )
        if meth_rows:
            plots["methods"] = plot_lengths(
                records,
                out / "lab_methods.png",
                labels=["none", *labels],
                title=f"RoPE model (T={T}) with each method, no training",
            )
    if ft_rows:
        ref = {}
        four = int(next(r["length"] for r in records if r.get("experiment") == "finetune"))
        value = cell(index_rows(records, "length"), "rope", "ntk", four, "loss")
        if value is not None:
            ref["NTK zero-shot: the level PI has to reach"] = value
        plots["finetune"] = plot_finetune(records, out / "lab_finetune.png", reference=ref)

    setup = [
        "## Setup",
        "",
        SETUP.format(
            modulus=SPLIT_MODULUS,
            windows=settings.get("eval_windows"),
            longest=nx(lengths[-1], T) if lengths else "?",
        ),
        "",
    ]
    md: list[str] = []
    if claim_rows:
        md += ["## The seed's claims, measured", "", format_table(claim_rows, markdown=True), ""]
    if enc_rows:
        md += [
            "## Encodings, trained short, tested long",
            "",
            format_table(enc_rows, markdown=True),
            "",
            "![encodings](lab_encodings.png)",
            "",
        ]
    if meth_rows:
        md += [
            "## RoPE model: context-extension methods, zero-shot",
            "",
            "`in Lx`: loss of positions < T in the forward at length L (a method that changes the trained "
            "frequencies can hurt here); `beyond Lx`: positions >= T.",
            "",
            format_table(meth_rows, markdown=True),
            "",
            "![methods](lab_methods.png)",
            "",
        ]
    if ft_rows:
        c = settings
        md += [
            "## Fine-tuning the RoPE model at 4x",
            "",
            f"{c.get('finetune_steps')} steps at length {c.get('finetune_multiple')}T"
            + (
                f", batch {c['finetune_batch_size']}, AdamW lr {c.get('finetune_lr')} (warm-up "
                f"{c.get('finetune_warmup')}, then constant)"
                if c.get("finetune_batch_size") is not None
                else ""
            )
            + ", the same data order for every method. "
            "Loss over all positions of the first 4T tokens of the held-out windows:",
            "",
            format_table(ft_rows, ["step", *ft_methods], markdown=True),
            "",
            "After fine-tuning: does the model use the longer context? The same last T tokens of each "
            "window given T and given 4T tokens of context (a positive gain means it does):",
            "",
            format_table(ft_context, markdown=True),
            "",
            "![finetune](lab_finetune.png)",
            "",
        ]
    tables = {
        "finetune_context": ft_context,
        "encodings": enc_rows,
        "methods": meth_rows,
        "finetune": (ft_rows, ["step", *ft_methods]),
        "claims": claim_rows,
        "plots": plots,
    }
    return setup, md, tables


def render_report(
    records: Records,
    out: Path,
    *,
    models: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
) -> str:
    """The lab report's markdown (setup, claims, tables) from ``records`` alone; the PNGs go to ``out``.

    ``models`` / ``labels`` (default: those of the rows, in their order) choose the encodings and the
    RoPE model's methods shown. Loads no model and measures nothing.
    """
    out = Path(out)
    setup, md, _ = _render(records, out, models=models, labels=labels, settings=None)
    return "\n".join([*setup, *md]) + "\n"


def _models_section(checkpoints: Mapping[str, Mapping[str, Any]]) -> list[str]:
    rows = []
    for name, meta in checkpoints.items():
        res, tr = meta.get("result", {}), meta.get("train", {})
        rows.append(
            {
                "encoding": name,
                "T": tr.get("length"),
                "steps": tr.get("steps"),
                "params": res.get("parameters"),
                "train loss": res.get("train_loss"),
                "val loss at T": res.get("val_loss"),
                "python": meta.get("data", {}).get("python"),
            }
        )
    first = next(iter(checkpoints.values()))
    return [
        "## Models",
        "",
        format_table(rows, markdown=True),
        "",
        "Trained with (see `RECIPE.md` beside the checkpoints):",
        "",
        f"    {first.get('command', '')}",
        "",
        "with `--encoding` set to each encoding.",
        "",
    ]


def write_report(
    out: Path,
    records: Records,
    *,
    models: Sequence[str],
    labels: Sequence[str],
    data: Mapping[str, Any],
    settings: Mapping[str, Any],
    checkpoints: Mapping[str, Mapping[str, Any]],
    command: str,
    seconds: float,
    complete: bool,
) -> dict[str, Any]:
    """Write ``report.md`` and the PNGs into ``out``; return the tables and paths for the terminal."""
    out = Path(out)
    setup, body, result = _render(records, out, models=models, labels=labels, settings=settings)
    md = ["# ropelab lab report", ""]
    if not complete:
        md += ["**Incomplete run**: some units are not done yet; run the same command again to finish.", ""]
    md += [
        f"Command: `{command}`  ",
        f"Wall time of this run: {seconds:.0f} s (units already done were not recomputed).  ",
        f"Python {data.get('python')}; corpus sha256 `{str(data.get('corpus_sha256'))[:16]}...`: "
        f"{data.get('train_files')} training files ({data.get('train_bytes')} bytes), "
        f"{data.get('validation_files')} held-out files ({data.get('validation_bytes')} bytes).",
        "",
        *setup,
    ]
    if checkpoints:
        md += _models_section(checkpoints)
    md += body
    (out / "report.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    return {**result, "report": out / "report.md"}
