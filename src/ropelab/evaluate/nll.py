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
        out[:, start:stop] = F.cross_entropy(logits.transpose(1, 2), targets[:, start:stop], reduction="none")
    return out
