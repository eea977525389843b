"""The contract between a model and its position encoding.

A model calls two hooks and never branches on the encoding's kind:

- ``embed(x, positions)``: absolute encodings (sinusoidal, learned) add to the token embeddings
  here; every other encoding returns ``x`` unchanged.
- ``attend(q, k, v, q_positions, k_positions)``: relative encodings (RoPE and its methods, xPos,
  ALiBi, ReRoPE, Self-Extend, log-n) act here; the result is causal attention output.

Shapes: ``x`` ``[b, s, d_model]``; ``q`` ``[b, h, s_q, hd]``, ``k``/``v`` ``[b, h_kv, s_k, hd]`` (GQA:
h a multiple of h_kv); positions int64 ``[s]`` (shared by the batch) or ``[b, s]``. The output of
``attend`` is ``[b, h, s_q, hd]``. Causality is by position: query i sees keys with position <= i.
With a KV cache, ``k_positions`` covers the cached keys and ``q_positions`` only the new queries; the
cached keys are stored *unrotated* (``attend`` rotates them on every call, so methods whose frequencies
depend on the length, such as dynamic NTK, stay consistent).

``config()`` returns JSON-able constructor arguments with a ``"name"`` key, so that
``ropelab.encodings.make_encoding(**enc.config())`` rebuilds the encoding (learned weights live in the
``state_dict``).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ropelab.attention.sdpa import causal_sdpa, repeat_kv

__all__ = ["NoPE", "PositionEncoding", "causal_sdpa", "repeat_kv"]


class PositionEncoding(nn.Module):
    """Base class: no position information at all (NoPE, Kazemnejad et al. 2023, arXiv 2305.19466)."""

    #: short name used in reports and checkpoints
    name: str = "nope"

    def embed(self, x: Tensor, positions: Tensor) -> Tensor:
        """``x`` ``[b, s, d_model]`` -> same shape (absolute encodings add here)."""
        return x

    def attend(self, q: Tensor, k: Tensor, v: Tensor, q_positions: Tensor, k_positions: Tensor) -> Tensor:
        """Causal attention ``[b, h, s_q, hd]``; subclasses add their position information."""
        return causal_sdpa(q, k, v, q_positions, k_positions)

    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments (saved beside checkpoints), with the encoding's ``name``."""
        return {"name": self.name}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")


class NoPE(PositionEncoding):
    """No position encoding: only the causal mask orders tokens (Kazemnejad et al. 2023, arXiv 2305.19466)."""

    name = "nope"
