"""The lab model: a compact decoder-only Transformer whose position encoding is an argument.

nanoGPT-shaped (Radford et al. 2019; Karpathy's nanoGPT ``model.py``): token embedding (scaled by
sqrt(d_model) as in Vaswani et al. 2017), pre-norm blocks (LayerNorm -> causal self-attention ->
residual, LayerNorm -> GELU MLP -> residual), final LayerNorm, output tied to the token embedding,
no biases, no dropout. The model never branches
on the encoding's kind: it calls ``encoding.embed(x, positions)`` once on the embeddings and
``encoding.attend(q, k, v, positions, positions)`` in every layer (the contract in
:mod:`ropelab.encodings.base`). Swapping ``model.encoding`` for another encoding of the same kind
(a RoPE scaling method, ReRoPE, ...) changes how positions are read without touching a weight.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ropelab.encodings.base import PositionEncoding
from ropelab.errors import RopeConfigError, did_you_mean


@dataclass(frozen=True)
class ModelConfig:
    """Geometry of the lab model (defaults: ~0.69M parameters, 1.4 MB in fp16).

    ``scale_embeddings``: multiply the token embeddings by sqrt(d_model) before the encoding's
    ``embed`` (Vaswani et al. 2017, sec. 3.4). Token embeddings start at N(0, 0.02) (they are tied
    to the output); a sinusoidal table has unit amplitude and would drown them: without the scale the
    lab's sinusoidal model reached a held-out loss of 3.0 nats/byte where RoPE reached 1.8.
    """

    vocab_size: int = 256
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    mlp_ratio: int = 3
    norm_eps: float = 1e-5
    init_std: float = 0.02
    scale_embeddings: bool = True

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "mlp_ratio"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise RopeConfigError(f"model {name} must be a positive integer, got {value!r}")
        if self.d_model % self.n_heads:
            raise RopeConfigError(f"d_model {self.d_model} must be a multiple of n_heads {self.n_heads}")
        if self.head_dim % 2:
            raise RopeConfigError(f"head_dim d_model / n_heads = {self.head_dim} must be even (rotary pairs)")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """From a saved dict; unknown keys are rejected with a "did you mean"."""
        known = {f.name for f in fields(cls)}
        for key in values:
            if key not in known:
                valid = ", ".join(sorted(known))
                raise RopeConfigError(
                    f"unknown model config key {key!r}{did_you_mean(key, known)}; valid: {valid}"
                )
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Attention(nn.Module):
    """Multi-head causal self-attention; the encoding does the attending."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x: Tensor, positions: Tensor, encoding: PositionEncoding) -> Tensor:
        b, s, d = x.shape
        qkv = self.qkv(x).view(b, s, 3, self.n_heads, self.head_dim)  # [b, s, 3, h, hd]
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # 3 x [b, h, s, hd]
        y = encoding.attend(q, k, v, positions, positions)  # [b, h, s, hd]
        return self.proj(y.transpose(1, 2).reshape(b, s, d))  # [b, s, d]


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.up = nn.Linear(cfg.d_model, cfg.mlp_ratio * cfg.d_model, bias=False)
        self.down = nn.Linear(cfg.mlp_ratio * cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.gelu(self.up(x)))


class Block(nn.Module):
    """Pre-norm residual block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))``."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps, bias=False)
        self.attn = Attention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps, bias=False)
        self.mlp = MLP(cfg)

    def forward(self, x: Tensor, positions: Tensor, encoding: PositionEncoding) -> Tensor:
        x = x + self.attn(self.ln1(x), positions, encoding)
        return x + self.mlp(self.ln2(x))


class TinyDecoder(nn.Module):
    """Decoder-only byte language model. ``forward(tokens [b, s]) -> logits [b, s, vocab]``.

    Args:
        config: the geometry.
        encoding: the position encoding (a :class:`~ropelab.encodings.base.PositionEncoding`);
            its parameters, if any (a learned table), are part of the model's ``state_dict``
            under ``encoding.``.
    """

    def __init__(self, config: ModelConfig, encoding: PositionEncoding) -> None:
        super().__init__()
        self.config = config
        self.encoding = encoding
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(config.d_model, eps=config.norm_eps, bias=False)
        self._init_weights()

    def _init_weights(self) -> None:
        """GPT-2 init: N(0, 0.02); residual output projections scaled by 1/sqrt(2 n_layers).

        Only the model's own weights: the encoding initialises its parameters itself.
        """
        std = self.config.init_std
        nn.init.normal_(self.tok_emb.weight, std=std)
        for block in self.blocks:
            for lin in (block.attn.qkv, block.mlp.up):
                nn.init.normal_(lin.weight, std=std)
            for lin in (block.attn.proj, block.mlp.down):
                nn.init.normal_(lin.weight, std=std / math.sqrt(2 * self.config.n_layers))

    def forward(self, tokens: Tensor, positions: Tensor | None = None) -> Tensor:
        """``tokens`` int64 ``[b, s]``, ``positions`` int64 ``[s]`` (default ``0..s-1``) -> ``[b, s, V]``."""
        if positions is None:
            positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.tok_emb(tokens)  # [b, s, d]
        if self.config.scale_embeddings:
            x = x * math.sqrt(self.config.d_model)
        x = self.encoding.embed(x, positions)  # [b, s, d]
        for block in self.blocks:
            x = block(x, positions, self.encoding)
        return self.ln_f(x) @ self.tok_emb.weight.T  # tied output: [b, s, V]

    def token_nll(self, inputs: Tensor, targets: Tensor) -> Tensor:
        """Negative log-likelihood of each target, nats, float32 ``[b, s]``."""
        logits = self(inputs)
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none").view(
            targets.shape
        )

    def loss(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        """Mean next-byte cross-entropy of a batch (inputs ``[b, s]``, targets ``[b, s]``)."""
        inputs, targets = batch
        return self.token_nll(inputs, targets).mean()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
