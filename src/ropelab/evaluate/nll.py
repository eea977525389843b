"""Per-position negative log-likelihood of a causal LM, without materialising [L, vocab] logits at once."""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F


@torch.no_grad()
def token_nll(model: Any, ids: torch.Tensor, *, chunk: int = 1024) -> torch.Tensor:
    """NLL of ``ids[:, t+1]`` given ``ids[:, :t+1]``: float32 ``[b, L-1]`` (natural log).

    Runs the decoder once and projects hidden states to the vocabulary ``chunk`` positions at a time,
    so a 32k-token pass does not hold a 32k x vocab float tensor.
    """
    base = model.base_model
    head = model.get_output_embeddings()
    hidden = base(input_ids=ids, use_cache=False).last_hidden_state  # [b, L, d]
    targets = ids[:, 1:]
    out = torch.empty(targets.shape, dtype=torch.float32, device=ids.device)
    for start in range(0, targets.shape[1], chunk):
        stop = min(start + chunk, targets.shape[1])
        logits = head(hidden[:, start:stop]).float()  # [b, c, vocab]
        softcap = getattr(model.config, "final_logit_softcapping", None)
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        # [n, vocab] rows: the contiguous layout is 9x faster than a strided [b, vocab, c] view and
        # closer to a float64 reference (2e-5 against 1.4e-4 nats/token at SmolLM2's 49152 classes)
        out[:, start:stop] = F.cross_entropy(
            logits.flatten(0, 1), targets[:, start:stop].flatten(), reduction="none"
        ).view(targets.shape[0], stop - start)
    return out
