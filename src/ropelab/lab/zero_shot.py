"""One lab model with one method (zero-shot: no weight changes) at every evaluation length.

:func:`evaluate_method` gives, per length ``L``, the *length* view (loss inside / beyond T, per
T-wide block) and the *context* view (the same last T tokens given L of context) of
:mod:`ropelab.lab.evaluate`, on the held-out windows of :func:`ropelab.lab.data.eval_windows`, with
the method's encoding at ``L`` from :func:`ropelab.lab.methods.method_encoding`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ropelab.errors import RopeConfigError
from ropelab.lab.evaluate import context_view, length_nll, summarize
from ropelab.lab.methods import is_dynamic, method_encoding, method_params
from ropelab.lab.model import TinyDecoder


def evaluate_method(
    model: TinyDecoder,
    *,
    label: str,
    trained: int,
    rope_base: float,
    windows: torch.Tensor,
    lengths: Sequence[int],
) -> list[dict[str, Any]]:
    """Rows ``{"experiment": "length"|"context", "length", **numbers}`` (or ``"error"``) per length.

    ``model`` is evaluated as trained for ``label`` ``"none"``, else with the method's encoding
    swapped in (``model.encoding`` is replaced). ``windows``: int64 ``[n, max(lengths) + 1]``. A
    dynamic method scores each position at the shortest evaluation length that contains it
    (:mod:`ropelab.lab.methods`). A length the model cannot run (a learned table asked past its last
    row) gives rows with ``"error"``.
    """
    n = windows.shape[0]
    head_dim = model.config.head_dim
    nll: dict[int, torch.Tensor] = {}
    rows: list[dict[str, Any]] = []
    # a method whose parameters do not depend on L (and every encoding as trained) gives the
    # first L positions of one forward over the longest length (causal attention): one pass
    full: torch.Tensor | None = None
    if all(
        method_params(label, trained=trained, length=m)
        == method_params(label, trained=trained, length=lengths[-1])
        for m in lengths
    ):
        try:
            if label != "none":
                model.encoding = method_encoding(
                    label, head_dim=head_dim, base=rope_base, trained=trained, length=lengths[-1]
                )
            full = length_nll(model, windows, lengths[-1])
        except RopeConfigError:
            full = None
    for length in lengths:
        common = {"length": length, "multiple": length // trained, "windows": n}
        try:
            if label != "none" and full is None:
                model.encoding = method_encoding(
                    label, head_dim=head_dim, base=rope_base, trained=trained, length=length
                )
            nll[length] = full[:length] if full is not None else length_nll(model, windows, length)
            ctx = context_view(model, windows, length, trained, full=nll[length])
        except RopeConfigError as err:  # e.g. a learned table asked past its last row
            rows += [{"experiment": x, **common, "error": str(err)} for x in ("length", "context")]
            continue
        if label != "none" and is_dynamic(label):
            # each position scored at the shortest evaluation length that contains it
            pieces, prev = [], 0
            for shorter in lengths:
                if shorter > length:
                    break
                if shorter in nll:
                    pieces.append(nll[shorter][prev:shorter])
                    prev = shorter
            seq = torch.cat(pieces)
        else:
            seq = nll[length]
        rows.append({"experiment": "length", **common, **summarize(seq, n, trained)})
        rows.append({"experiment": "context", **common, **ctx})
    return rows
