"""What the search minimises: the same-tokens loss at the target length with a candidate as ``longrope``.

Two objectives, one protocol (RESULTS.md "same tokens, growing context"; :mod:`ropelab.lab` "context
view"): the model sees ``target`` tokens and the loss is the mean NLL of the *last* ``score_last`` of them,
so the text scored is fixed and only the candidate changes.

- :func:`model_objective`: a transformers causal LM (``ropelab.evaluate.load``), the candidate applied as
  ``longrope(factor=s, long_factor=lambda, short_factor=1...)`` through the registry
  (``parse_method`` -> ``ropelab.hf.make_extension`` -> ``ropelab.hf.extend``), scored with
  ``ropelab.evaluate.last_sums`` on held-out documents (the corpus's validation split).
- :func:`lab_objective`: the lab's tiny RoPE model (``ropelab.lab.Lab``), the candidate swapped in as its
  ``longrope`` encoding, scored on the lab's held-out windows exactly as the lab's context view does.

``n_hat`` (LongRoPE's unscaled initial positions) is ``unscaled_positions`` of ropelab's ``longrope``:
positions below it keep plain RoPE's cos/sin (:meth:`ropelab.Rope.cos_sin`), as microsoft/LongRoPE
``rope/longrope.py`` ``MixedLongRoPEScaledRotaryEmbedding`` (41fa632) does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ropelab.errors import RopeConfigError
from ropelab.registry import MethodSpec, parse_method
from ropelab.search.evolve import Objective
from ropelab.search.space import Candidate


def longrope_spec(cand: Candidate, *, scale: float) -> MethodSpec:
    """``longrope(factor=s, long_factor=lambda, short_factor=1,..., unscaled_positions=n_hat)``: the
    candidate as a registry method (short factors 1: sequences inside the trained length keep the model's
    own frequencies; ``unscaled_positions`` only when ``n_hat > 0``)."""
    extra = {"unscaled_positions": cand.n_hat} if cand.n_hat else {}
    return parse_method(
        "longrope",
        factor=float(scale),
        long_factor=list(cand.factors),
        short_factor=[1.0] * len(cand.factors),
        **extra,
    )


def model_objective(
    loaded: Any,
    *,
    target: int,
    documents: Sequence[tuple[str, torch.Tensor]],
    score_last: int,
    context: dict[str, Any],
    prefill_chunk: int | None = None,
) -> Objective:
    """The same-tokens loss of ``loaded`` (a :class:`ropelab.evaluate.LoadedModel`) at ``target`` tokens:
    each document's first ``target`` tokens (``ids`` ``[1, >= target]``), NLL of the last ``score_last``,
    token-weighted over the documents. ``context``: the run context its rows are stamped with."""
    from ropelab.evaluate import last_sums
    from ropelab.hf import extend, make_extension
    from ropelab.report.provenance import stamp

    if not 0 < score_last < target:
        raise RopeConfigError(f"score_last must be in [1, target), got {score_last} for target {target}")
    trained = loaded.trained_length
    if target <= trained:
        raise RopeConfigError(f"the target {target} must exceed the model's trained length {trained}")
    scale = target / trained

    def loss(cand: Candidate) -> float:
        ext = make_extension(loaded.model.config, longrope_spec(cand, scale=scale))
        extend(loaded.model, ext)
        try:
            nll, tokens = 0.0, 0
            for _, ids in documents:
                cell = last_sums(
                    loaded.model,
                    ids[:, :target].to(loaded.device),
                    [target - score_last],
                    score_last,
                    prefill_chunk=prefill_chunk,
                )[f"last:{target - score_last}"]
                nll, tokens = nll + cell.nll, tokens + cell.tokens
        finally:
            extend(loaded.model, "none")
        return nll / tokens

    def row(cand: Candidate) -> dict[str, Any]:
        spec = longrope_spec(cand, scale=scale)
        return stamp(context, spec, make_extension(loaded.model.config, spec).resolved())

    identity = {
        "objective": "model",
        "context": {k: v for k, v in context.items() if k not in ("time", "threads")},
        "target": target,
        "score_last": score_last,
    }
    return Objective(loss, identity, row)


def lab_objective(lab: Any, *, target: int, encoding: str = "rope") -> Objective:
    """The lab's context view at ``target`` tokens (a multiple of T) of the lab model ``encoding`` (a RoPE
    model) with the candidate as its ``longrope`` encoding: the same held-out windows (``lab.windows(T)``,
    ``[n, 16T + 1]``), the loss of each window's last ``T`` tokens given ``L`` tokens of context ending there.
    ``lab``: a :class:`ropelab.lab.Lab` (its config's largest multiple sets the windows)."""
    from ropelab.report.provenance import stamp

    model, meta = lab.load(encoding)
    trained = int(meta["train"]["length"])
    windows = lab.windows(trained)
    total = windows.shape[1] - 1
    if target % trained or not trained < target <= total:
        raise RopeConfigError(
            f"the lab's target must be a multiple of its trained length {trained} in "
            f"[{2 * trained}, {total}] (the lab's held-out windows), got {target}"
        )
    plain = model.encoding
    if getattr(plain, "name", None) != "rope":
        raise RopeConfigError(f"the lab model {encoding!r} is not a RoPE model; search needs RoPE")
    scale = float(target // trained)
    inputs = windows[:, total - target : total]  # [n, L]
    targets = windows[:, total - target + 1 : total + 1]  # [n, L]
    context = {**lab.context(encoding), "command": "search"}

    @torch.no_grad()
    def loss(cand: Candidate) -> float:
        spec = longrope_spec(cand, scale=scale)
        model.encoding = plain.with_method(
            "longrope", original_max_position_embeddings=trained, **dict(spec.params)
        )
        try:
            total_nll, rows = 0.0, max(1, 16384 // target)  # rows per forward, as the lab's evaluation
            for i in range(0, inputs.shape[0], rows):
                nll = model.token_nll(inputs[i : i + rows], targets[i : i + rows])  # [rows, L]
                total_nll += float(nll[:, -trained:].double().sum())
        finally:
            model.encoding = plain
        return total_nll / (inputs.shape[0] * trained)

    def row(cand: Candidate) -> dict[str, Any]:
        spec = longrope_spec(cand, scale=scale)
        resolved = {**spec.params, "original_max_position_embeddings": trained, "length": target}
        return stamp(context, spec, resolved)

    identity = {
        "objective": "lab",
        "context": {k: v for k, v in context.items() if k not in ("time", "threads")},
        "target": target,
        "windows": list(windows.shape),
    }
    return Objective(loss, identity, row)
