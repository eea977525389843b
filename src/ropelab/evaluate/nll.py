"""Per-position negative log-likelihood of a causal LM, without materialising [L, vocab] logits at once.

Two ways to run the decoder, with the same numbers (within 1e-5 nats/token, tests/test_chunked_nll.py):

- one pass (``prefill_chunk=None``): the decoder sees all ``L`` tokens at once; its activations are
  those of ``L`` tokens.
- chunked prefill (``prefill_chunk=N``): ``N`` tokens at a time with the model's KV cache (a transformers
  ``DynamicCache``), each chunk's hidden states projected to NLL at once, so what is held is the KV cache
  of the tokens so far plus one chunk's activations: a document longer than one forward can hold is
  scored in memory that grows like the KV cache (benchmarks/long_context_memory.py).

Dynamic methods (``dynamic``, ``dynamic-yarn``, ``longrope``: frequencies that depend on the current
length) would score each chunk at the scale of a shorter length than the one pass does. On ropelab's
attention route (hf/attention.py: keys cached unrotated, every key rotated at each call) the chunked pass
tells the attention function the length of the whole scored sequence, so every chunk is rotated with the
one-pass frequencies and the numbers are the one pass's. Where that cannot be done (transformers' own
dynamic RoPE, which reads the length from each call's positions; an attention-level method over a dynamic
base) chunking is refused with a :class:`~ropelab.errors.RopeConfigError` rather than giving numbers of a
different quantity.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch.nn import functional as F

from ropelab.errors import RopeConfigError

#: transformers ``rope_type`` values whose frequencies change with the sequence length
_HF_DYNAMIC = {"dynamic", "longrope"}


def _project(model: Any, hidden: torch.Tensor, targets: torch.Tensor, chunk: int) -> torch.Tensor:
    """NLL of ``targets`` ``[b, n]`` from the hidden states ``[b, n, d]`` before them: float32 ``[b, n]``.

    Projects ``chunk`` positions at a time, so no ``[n, vocab]`` float tensor is held for a long ``n``.
    """
    head = model.get_output_embeddings()
    softcap = getattr(model.config, "final_logit_softcapping", None)
    out = torch.empty(targets.shape, dtype=torch.float32, device=targets.device)
    for start in range(0, targets.shape[1], chunk):
        stop = min(start + chunk, targets.shape[1])
        logits = head(hidden[:, start:stop]).float()  # [b, c, vocab]
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        # [n, vocab] rows: the contiguous layout is 9x faster than a strided [b, vocab, c] view and
        # closer to a float64 reference (2e-5 against 1.4e-4 nats/token at SmolLM2's 49152 classes)
        out[:, start:stop] = F.cross_entropy(
            logits.flatten(0, 1), targets[:, start:stop].flatten(), reduction="none"
        ).view(targets.shape[0], stop - start)
    return out


def prefill_route(model: Any, ext: Any = None) -> str:
    """How a chunked prefill of ``model`` keeps the one-pass numbers: ``"plain"`` (its RoPE does not depend
    on the length), ``"length"`` (ropelab's attention route with a dynamic method: the attention function is
    told the whole length). Raises :class:`RopeConfigError` where chunking would change the numbers.

    ``ext``: the :class:`ropelab.hf.Extension` to judge instead of the one ``model`` carries now (a sweep
    checks every method before the long work); ``model`` may then be just a config.
    """
    if ext is None:
        ext = getattr(model, "__dict__", {}).get("ropelab_extension")
    if ext is not None and not ext.native:
        if not ext.rope.method.dynamic:
            return "plain"
        if ext.attention == "rope":
            return "length"
        raise RopeConfigError(
            f"{ext.name} over a dynamic RoPE scales each prefill chunk at a shorter length than one pass: "
            "evaluate it in one pass (no --prefill-chunk)"
        )
    config = getattr(model, "config", model)
    config = getattr(config, "text_config", None) or config
    params = getattr(config, "rope_parameters", None) or {}
    kinds = [p.get("rope_type") for p in params.values() if isinstance(p, dict)] or [params.get("rope_type")]
    dynamic = sorted(k for k in kinds if k in _HF_DYNAMIC)
    if dynamic:
        raise RopeConfigError(
            f"transformers' {dynamic[0]!r} RoPE reads the length from each prefill chunk, so a chunked pass "
            "would not equal one pass: evaluate in one pass (no --prefill-chunk), or extend the model with "
            "ropelab's method of that name"
        )
    return "plain"


#: what ``prefill_chunk`` may be in the evaluation protocols: ``None`` or ``0`` (one pass, the default) or a
#: number of tokens. One pass is the default at every length: with no KV cache it holds one layer's
#: activations at a time, and with a memory-efficient attention (SDPA's flash kernel, ropelab's blockwise
#: methods) that is less than the KV cache a chunked prefill keeps (SmolLM2 at 8k tokens on CPU: 274 MiB
#: one pass against 872 MiB chunked, benchmarks/RESULTS.md). Chunking bounds memory where one pass's
#: attention is quadratic (eager attention, an SDPA path that materialises ``[h, L, L]``).
PrefillChunk = int | None


def check_prefill_chunk(prefill_chunk: PrefillChunk) -> None:
    """Refuse a ``prefill_chunk`` that is not ``None``/``0`` (one pass) or a whole number >= 1."""
    if prefill_chunk is None:
        return
    if isinstance(prefill_chunk, bool) or not isinstance(prefill_chunk, int) or prefill_chunk < 0:
        raise RopeConfigError(
            f"prefill_chunk (--prefill-chunk) must be 0 (one pass) or a number of tokens >= 1, "
            f"got {prefill_chunk!r}"
        )


def prefill_for(prefill_chunk: PrefillChunk) -> int | None:
    """The ``token_nll(prefill_chunk=)`` of the evaluation protocols' ``prefill_chunk``: ``None`` (one
    pass) for ``None`` or ``0``, else the number."""
    check_prefill_chunk(prefill_chunk)
    return prefill_chunk or None


def _cache_kwarg(base: Any) -> str:
    """transformers 5.x renames ``past_key_values`` to ``cache`` model by model: the one this model takes."""
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


@torch.no_grad()
def token_nll(
    model: Any, ids: torch.Tensor, *, chunk: int = 1024, prefill_chunk: int | None = None
) -> torch.Tensor:
    """NLL of ``ids[:, t+1]`` given ``ids[:, :t+1]``: float32 ``[b, L-1]`` (natural log).

    ``prefill_chunk=None``: runs the decoder once over ``ids`` ``[b, L]``; ``prefill_chunk=N``: ``N``
    tokens at a time with a KV cache (module docstring), the same numbers in memory bounded by the KV cache
    plus one chunk. Either way hidden states are projected to the vocabulary ``chunk`` positions at a time,
    so a 32k-token pass does not hold a 32k x vocab float tensor.
    """
    if prefill_chunk is not None and prefill_chunk < 1:
        raise RopeConfigError(f"prefill_chunk (--prefill-chunk) must be >= 1, got {prefill_chunk}")
    base = model.base_model
    length = ids.shape[1]
    if prefill_chunk is None or prefill_chunk >= length:
        hidden = base(input_ids=ids, use_cache=False).last_hidden_state  # [b, L, d]
        return _project(model, hidden[:, :-1], ids[:, 1:], chunk)
    from transformers import DynamicCache

    route = prefill_route(model)
    extra = {"ropelab_seq_len": length} if route == "length" else {}
    cache = DynamicCache(config=model.config)
    cache_kw = _cache_kwarg(base)
    out = torch.empty((ids.shape[0], length - 1), dtype=torch.float32, device=ids.device)
    for start in range(0, length, prefill_chunk):
        stop = min(start + prefill_chunk, length)
        positions = torch.arange(start, stop, device=ids.device)[None]  # [1, c]
        hidden = base(
            input_ids=ids[:, start:stop], position_ids=positions, use_cache=True, **{cache_kw: cache}, **extra
        ).last_hidden_state  # [b, c, d]
        scored = min(stop, length - 1) - start  # the last token has no target
        if scored > 0:
            out[:, start : start + scored] = _project(
                model, hidden[:, :scored], ids[:, start + 1 : start + 1 + scored], chunk
            )
        del hidden
    return out
