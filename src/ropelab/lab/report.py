"""The lab's report: tables (terminal and ``report.md``), PNG plots, and the seed's claims checked.

Everything here is computed from the records in ``results.jsonl``; nothing is measured again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ropelab.lab.data import SPLIT_MODULUS
from ropelab.lab.methods import METHODS, parse_label
from ropelab.report import format_table
from ropelab.report.plots import legend_outside, pyplot, series_styles

Records = Sequence[Mapping[str, Any]]
#: a loss "holds" while it stays within this many nats of its reference (about 5% in perplexity)
HOLD_MARGIN = 0.05

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
- Methods, zero-shot on the RoPE model: static PI / NTK / NTK-mixed / YaRN use s = L/T at
  evaluation length L; dynamic NTK / YaRN score each position with the scale of the shortest
  evaluation length that contains it (inside T: the trained frequencies); ReRoPE: window T/2;
  leaky ReRoPE: window T/2, leak (L - 1 - T/2) / (T/2 - 1), so the farthest distance reads as
  T - 1; Self-Extend: window T/2 and the smallest group that reaches L; `+log-n`: queries at
  position n scaled by max(1, log(n+1) / log T)."""


def _index(records: Records, experiment: str) -> dict[tuple[str, str, int], Mapping[str, Any]]:
    return {
        (r["model"], r["method"], int(r["length"])): r
        for r in records
        if r.get("experiment") == experiment and "error" not in r
    }


def _get(
    index: Mapping[tuple[str, str, int], Mapping[str, Any]], model: str, method: str, length: int, key: str
):
    row = index.get((model, method, length))
    return None if row is None else row.get(key)


def _lengths(records: Records, experiment: str = "length") -> list[int]:
    return sorted({int(r["length"]) for r in records if r.get("experiment") == experiment})


def _trained(records: Records) -> int:
    return min(int(r["trained_length"]) for r in records if "trained_length" in r)


def _x(length: int, trained: int) -> str:
    return f"{length / trained:g}x"


# ------------------------------------------------------------------ tables
def encoding_rows(records: Records, models: Sequence[str]) -> list[dict[str, Any]]:
    """Per encoding: loss inside T (first T tokens), beyond T at each length; and the context view."""
    T, lengths = _trained(records), _lengths(records)
    idx, ctx = _index(records, "length"), _index(records, "context")
    rows = []
    for model in models:
        row: dict[str, Any] = {
            "encoding": model,
            "inside": _get(idx, model, "none", lengths[0], "loss_inside"),
        }
        for n in lengths[1:]:
            row[f"beyond {_x(n, T)}"] = _get(idx, model, "none", n, "loss_beyond")
        for n in lengths:
            row[f"ctx {_x(n, T)}"] = _get(ctx, model, "none", n, "loss_last")
        rows.append(row)
    return rows


def method_rows(records: Records, labels: Sequence[str]) -> list[dict[str, Any]]:
    """Per method on the RoPE model: inside and beyond T at each length, and the context view."""
    T, lengths = _trained(records), _lengths(records)
    idx, ctx = _index(records, "length"), _index(records, "context")
    rows = []
    for label in labels:
        row: dict[str, Any] = {"method": label}
        for n in lengths[1:]:
            row[f"in {_x(n, T)}"] = _get(idx, "rope", label, n, "loss_inside")
        for n in lengths[1:]:
            row[f"beyond {_x(n, T)}"] = _get(idx, "rope", label, n, "loss_beyond")
        for n in lengths:
            row[f"ctx {_x(n, T)}"] = _get(ctx, "rope", label, n, "loss_last")
        rows.append(row)
    return rows


def finetune_context_rows(records: Records) -> list[dict[str, Any]]:
    """Per fine-tuned method at its last step: loss at 4x, and whether it uses the longer context
    (the same last T tokens given T tokens of context and given 4T)."""
    last: dict[str, Mapping[str, Any]] = {}
    for r in records:
        if r.get("experiment") == "finetune" and (
            r["method"] not in last or r["step"] > last[r["method"]]["step"]
        ):
            last[r["method"]] = r
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
        if r["method"] not in methods:
            methods.append(r["method"])
        rows.setdefault(int(r["step"]), {"step": int(r["step"])})[r["method"]] = r["loss"]
    return [rows[s] for s in sorted(rows)], methods


# ------------------------------------------------------------------ claims
def claims(records: Records) -> list[dict[str, Any]]:
    """The seed's claims (RESULTS.md) as measured here, each with the numbers that decide it.

    Losses are mean NLL in nats per byte. "Holds" uses a fixed margin, :data:`HOLD_MARGIN`; a claim
    without its records is left out.
    """
    out: list[dict[str, Any]] = []
    if not records:
        return out
    T, lengths = _trained(records), _lengths(records)
    idx, ctx = _index(records, "length"), _index(records, "context")
    top = lengths[-1]

    def add(claim: str, measured: str, holds: bool | None, partly: str = "-") -> None:
        verdict = partly if holds is None else ("yes" if holds else "NO")
        out.append({"claim": claim, "measured": measured, "holds": verdict})

    def block(model: str, method: str, i: int) -> float | None:
        row = idx.get((model, method, top))
        return row["block_loss"][i] if row and len(row["block_loss"]) > i else None

    sin0, sin1 = block("sinusoidal", "none", 0), block("sinusoidal", "none", 1)
    if sin0 is not None and sin1 is not None:
        add(
            "sinusoidal breaks just past T",
            f"loss {sin0:.3f} in [0,T) -> {sin1:.3f} in [T,2T)",
            sin1 > sin0 + 0.5,
        )
    rope_in, rope_out = (
        _get(idx, "rope", "none", top, "loss_inside"),
        _get(idx, "rope", "none", top, "loss_beyond"),
    )
    sin_out = _get(idx, "sinusoidal", "none", top, "loss_beyond")
    if None not in (rope_in, rope_out, sin_out):
        add(
            "RoPE degrades (less than sinusoidal)",
            f"beyond T at {_x(top, T)}: RoPE {rope_out:.3f} (inside {rope_in:.3f}), sinusoidal {sin_out:.3f}",
            rope_out > rope_in + HOLD_MARGIN and rope_out < sin_out,
        )
    a_in, a_out = (
        _get(idx, "alibi", "none", top, "loss_inside"),
        _get(idx, "alibi", "none", top, "loss_beyond"),
    )
    a_c0, a_c1 = (
        _get(ctx, "alibi", "none", lengths[0], "loss_last"),
        _get(ctx, "alibi", "none", top, "loss_last"),
    )
    if None not in (a_in, a_out, a_c0, a_c1):
        add(
            "ALiBi stays flat",
            f"inside {a_in:.3f}, beyond at {_x(top, T)} {a_out:.3f}; same tokens with {_x(lengths[0], T)} -> "
            f"{_x(top, T)} context {a_c0:.3f} -> {a_c1:.3f}",
            a_out <= a_in + HOLD_MARGIN and a_c1 <= a_c0 + HOLD_MARGIN,
        )
    four = 4 * T if 4 * T in lengths else top
    pi4, ntk4 = _get(idx, "rope", "pi", four, "loss"), _get(idx, "rope", "ntk", four, "loss")
    if pi4 is not None and ntk4 is not None:
        add(
            "PI zero-shot is worse than NTK zero-shot",
            f"loss over {_x(four, T)} tokens: PI {pi4:.3f}, NTK {ntk4:.3f}",
            pi4 > ntk4,
        )
    ft, _ = finetune_rows(records)
    if ft and ft[0].get("pi") is not None and ft[-1].get("pi") is not None:
        first, last = ft[0], ft[-1]
        ref = ntk4 if four == 4 * T else None
        measured = f"PI at 4x: {first['pi']:.3f} at step 0 -> {last['pi']:.3f} after {last['step']} steps"
        if ref is not None:
            measured += f"; NTK zero-shot {ref:.3f}"
        add(
            "PI recovers within a few hundred steps",
            measured,
            last["pi"] < first["pi"] - HOLD_MARGIN and (ref is None or last["pi"] <= ref + HOLD_MARGIN),
        )
        if last.get("none") is not None:
            add(
                "PI fine-tunes better than plain RoPE (PI paper: direct fine-tuning adapts slowly)",
                f"after {last['step']} steps at 4x: PI {last['pi']:.3f}, plain RoPE {last['none']:.3f} "
                f"(from {first['pi']:.3f} and {first['none']:.3f})",
                last["pi"] <= last["none"] + HOLD_MARGIN,
            )
    for label, name in (
        ("ntk", "NTK"),
        ("ntk+log-n", "NTK + log-n"),
        ("rerope", "ReRoPE"),
        ("rerope+log-n", "ReRoPE + log-n"),
    ):
        reach = holds_to(ctx, "rope", label, lengths)
        c0, c1 = _get(ctx, "rope", label, lengths[0], "loss_last"), _get(ctx, "rope", label, top, "loss_last")
        plain = _get(ctx, "rope", "none", top, "loss_last")
        if reach is None or None in (c0, c1, plain):
            continue
        add(
            f"{name} holds without training",
            f"same last T tokens, context {_x(lengths[0], T)} -> {_x(top, T)}: {c0:.3f} -> {c1:.3f}, within "
            f"{HOLD_MARGIN} nats up to {_x(reach, T)} (plain RoPE {plain:.3f} at {_x(top, T)})",
            True if reach == top else (None if reach > lengths[0] else False),
            partly=f"to {_x(reach, T)}",
        )
    return out


def holds_to(
    ctx: Mapping[tuple[str, str, int], Mapping[str, Any]], model: str, method: str, lengths: Sequence[int]
) -> int | None:
    """The longest context L such that the same-tokens loss stays within :data:`HOLD_MARGIN` of its
    value at the shortest context for every length up to L (None without records)."""
    base = _get(ctx, model, method, lengths[0], "loss_last")
    if base is None:
        return None
    reach = lengths[0]
    for n in lengths[1:]:
        value = _get(ctx, model, method, n, "loss_last")
        if value is None or value > base + HOLD_MARGIN:
            break
        reach = n
    return reach


# ------------------------------------------------------------------- plots
def _style(label: str) -> dict[str, Any]:
    """The line style of a lab method label ``NAME[*A][+log-n]``.

    The method name picks colour and marker (:func:`ropelab.report.plots.series_styles` over the
    lab's METHODS, in registry order, so any number of methods works and a method keeps its colour
    in every plot); the variant picks the line: plain solid, ``+log-n`` dashed with a hollow marker,
    ``*A`` dotted with A as the marker, ``*A+log-n`` dash-dot with A as the marker.
    """
    name, log_n, alpha = parse_label(label)
    base = series_styles(list(METHODS))[name]
    style = {"color": base["color"], "linestyle": "--" if log_n else "-", "marker": base["marker"]}
    if log_n:
        style["markerfacecolor"] = "none"
    if alpha != 1:  # a number as marker has no hollow face: the line style tells +log-n apart
        style.pop("markerfacecolor", None)
        style.update(linestyle="-." if log_n else ":", marker=f"${alpha:g}$")
    return style


def plot_lengths(
    records: Records,
    path: Path,
    *,
    models: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    title: str = "",
) -> Path:
    """Two panels: loss beyond T vs evaluation length, and the same last T tokens vs context."""
    plt = pyplot()
    T, lengths = _trained(records), _lengths(records)
    idx, ctx = _index(records, "length"), _index(records, "context")
    series = [(m, "none", style) for m, style in series_styles(models or []).items()]
    series += [("rope", label, _style(label)) for label in labels or []]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    for model, method, style in series:
        name = model if models else method
        longest = idx.get((model, method, lengths[-1]))
        if longest is not None:
            blocks = longest["block_loss"]
            axes[0].plot([(i + 0.5) * T for i in range(len(blocks))], blocks, label=name, **style)
        xs = [n for n in lengths if (model, method, n) in idx]
        axes[1].plot(xs, [idx[(model, method, n)]["loss"] for n in xs], label=name, **style)
        xs = [n for n in lengths if (model, method, n) in ctx]
        axes[2].plot(xs, [ctx[(model, method, n)]["loss_last"] for n in xs], label=name, **style)
    titles = (
        f"loss per position block ({_x(lengths[-1], T)} evaluation)",
        "mean loss over the first L tokens",
        f"same last {T} tokens, L tokens of context",
    )
    xlabels = ("position", "evaluation length L", "context length L")
    for ax, t, xl in zip(axes, titles, xlabels, strict=True):
        ax.axvline(T, color="k", lw=0.8, ls=":")
        ax.text(T, 1.0, " trained length", transform=ax.get_xaxis_transform(), fontsize=8, va="top")
        ax.set(xscale="log", xlabel=xl, ylabel="NLL (nats / byte)", title=t)
        ax.set_xscale("log", base=2)
        ax.grid(True, which="both", alpha=0.3)
    _clip(axes, records)
    legend_outside(fig, axes[-1], fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _clip(axes: Any, records: Records) -> None:
    """Keep the interesting range visible when a broken encoding's loss explodes."""
    inside = [r["loss_inside"] for r in records if r.get("experiment") == "length" and r.get("loss_inside")]
    if inside:
        low = min(inside)
        for ax in axes:
            _, high = ax.get_ylim()
            ax.set_ylim(max(0.0, low - 0.3), min(high, low + 4.0))


def plot_finetune(records: Records, path: Path, *, reference: Mapping[str, float] | None = None) -> Path:
    """Loss at the fine-tuning length against steps, one line per method."""
    plt = pyplot()
    rows, methods = finetune_rows(records)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in methods:
        pts = [(r["step"], r[method]) for r in rows if r.get(method) is not None]
        ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            label=method,
            **_style(method),
        )
    for i, (name, value) in enumerate((reference or {}).items()):
        ax.axhline(value, color=f"C{i + 5}", lw=0.9, ls=":", label=name)
    length = next((r["length"] for r in records if r.get("experiment") == "finetune"), 0)
    ax.set(
        xlabel="fine-tuning steps",
        ylabel="NLL (nats / byte)",
        title=f"fine-tuning at length {length}: loss at {length}",
    )
    ax.grid(True, alpha=0.3)
    legend_outside(fig, ax)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------ report
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
    lengths = _lengths(records)
    T = _trained(records) if records else 0
    enc_rows = encoding_rows(records, models) if lengths else []
    meth_rows = method_rows(records, ["none", *labels]) if lengths and "rope" in models else []
    ft_rows, ft_methods = finetune_rows(records)
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
        idx = _index(records, "length")
        value = _get(idx, "rope", "ntk", four, "loss")
        if value is not None:
            ref["NTK zero-shot: the level PI has to reach"] = value
        plots["finetune"] = plot_finetune(records, out / "lab_finetune.png", reference=ref)

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
        "## Setup",
        "",
        SETUP.format(
            modulus=SPLIT_MODULUS,
            windows=settings.get("eval_windows"),
            longest=_x(lengths[-1], T) if lengths else "?",
        ),
        "",
    ]
    if checkpoints:
        md += ["## Models", ""]
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
        md += [
            format_table(rows, markdown=True),
            "",
            "Trained with (see `RECIPE.md` beside the checkpoints):",
            "",
        ]
        first = next(iter(checkpoints.values()))
        md += [f"    {first.get('command', '')}", "", "with `--encoding` set to each encoding.", ""]
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
            f"{c.get('finetune_steps')} steps at length {c.get('finetune_multiple')}T, batch "
            f"{c.get('finetune_batch_size')}, AdamW lr {c.get('finetune_lr')} (warm-up "
            f"{c.get('finetune_warmup')}, then constant), the same data order for every method. "
            "Loss over all positions of the first 4T tokens of the held-out windows:",
            "",
            format_table(ft_rows, ["step", *ft_methods], markdown=True),
            "",
            "After fine-tuning: does the model use the longer context? The same last T tokens of each "
            "window given T and given 4T tokens of context (a positive gain means it does):",
            "",
            format_table(finetune_context_rows(records), markdown=True),
            "",
            "![finetune](lab_finetune.png)",
            "",
        ]
    (out / "report.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    return {
        "finetune_context": finetune_context_rows(records),
        "encodings": enc_rows,
        "methods": meth_rows,
        "finetune": (ft_rows, ["step", *ft_methods]),
        "claims": claim_rows,
        "plots": plots,
        "report": out / "report.md",
    }
