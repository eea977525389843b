"""The search's outputs: the best candidate as a ``longrope`` config, its exports, the plot of best loss.

The config is transformers' v5 ``rope_parameters`` (:func:`ropelab.export.to_hf` of the candidate's
:class:`ropelab.Rope`): ``rope_type="longrope"``, ``factor = L / L0``,
``original_max_position_embeddings = L0``, ``long_factor`` = the searched factors, ``short_factor`` = ones.
Each of :data:`ropelab.export.FORMATS` gets :func:`ropelab.export.export` or the stack's one-line
refusal (llama.cpp reads LongRoPE factors from GGUF tensors, not flags).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ropelab.errors import RopeConfigError
from ropelab.export import FORMATS, export, to_hf
from ropelab.rope import Rope
from ropelab.search.space import Candidate

#: what a user can do about n_hat, which no stack carries
N_HAT_NOTE = (
    "n_hat (initial positions left unscaled, ropelab's unscaled_positions) has no field in transformers', "
    "vLLM's or llama.cpp's longrope: ropelab.hf.extend applies it; for a stack the nearest exact form is the "
    "factors alone (n_hat = 0, under 'nearest'), a different method whose loss the search also measures "
    "only if it drew that candidate"
)


def candidate_rope(
    cand: Candidate,
    *,
    head_dim: int,
    base: float,
    trained: int,
    scale: float,
    partial_rotary_factor: float = 1.0,
) -> Rope:
    """The candidate as ropelab's ``longrope`` :class:`Rope` (``short_factor`` ones, ``unscaled_positions``
    = ``n_hat`` when it is > 0)."""
    extra = {"unscaled_positions": cand.n_hat} if cand.n_hat else {}
    return Rope(
        "longrope",
        head_dim=head_dim,
        base=base,
        partial_rotary_factor=partial_rotary_factor,
        factor=scale,
        original_max_position_embeddings=trained,
        long_factor=list(cand.factors),
        short_factor=[1.0] * len(cand.factors),
        **extra,
    )


def exports(rope: Rope) -> dict[str, Any]:
    """``{"rope_parameters": ..., "hf": ..., "vllm": ..., "llama.cpp": ..., "n_hat": note}``: each export,
    or ``{"refused": reason}`` where the stack cannot carry it. With ``unscaled_positions`` (n_hat > 0),
    which no stack carries, ``nearest`` holds the same exports of the factors alone."""
    out: dict[str, Any] = {}
    try:
        out["rope_parameters"] = to_hf(rope)
    except RopeConfigError as err:
        out["rope_parameters"] = {"refused": str(err)}
    for fmt in FORMATS:
        try:
            out[fmt] = export(rope, fmt)
        except RopeConfigError as err:
            out[fmt] = {"refused": str(err)}
    out["n_hat"] = N_HAT_NOTE
    if rope.config.unscaled_positions:
        out["nearest"] = exports(Rope.from_config(rope.config.replace(unscaled_positions=None)))
    return out


def plot_best(
    best_by_generation: Sequence[tuple[int, int, float]],
    path: str | Path,
    *,
    title: str,
    references: dict[str, float] | None = None,
) -> Path:
    """Best loss so far after each generation (x: generation, with evaluations so far in the tick labels);
    ``references``: horizontal lines (the seeds, or the best zero-shot methods)."""
    from ropelab.report.plots import pyplot, save_figure, series_styles

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    gens = [g for g, _, _ in best_by_generation]
    ax.plot(
        gens, [b for _, _, b in best_by_generation], marker="o", color="black", label="search (best so far)"
    )
    refs = references or {}
    styles = series_styles(list(refs))
    for name, value in refs.items():
        ax.axhline(value, linestyle="--", color=styles[name].get("color"), label=name)
    ax.set_xticks(gens)
    ax.set_xticklabels([f"{g}\n({n})" for g, n, _ in best_by_generation], fontsize=7)
    ax.set_xlabel("generation (evaluations so far)")
    ax.set_ylabel("same-tokens loss (nats/token)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(fig, path)
