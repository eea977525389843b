"""`RopeParams`: every parameter a RoPE scaling method can take, as plain frozen fields.

What the method functions of :mod:`ropelab.rope.frequencies` read. :class:`ropelab.RopeConfig` is these
fields validated once, partly by computing the method's frequencies; so this module sits below both:
``frequencies`` reads the fields, ``config`` calls ``frequencies``, and no import points back up.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Su's exponent for NTK-mixed (kexue.fm 9706); vLLM calls it ``mixed_b``.
DEFAULT_MIXED_EXPONENT = 0.625


@dataclass(frozen=True)
class RopeParams:
    """Parameters of a RoPE method, unvalidated: build a :class:`ropelab.RopeConfig` instead.

    Notation follows ``METHODS.md``: d = ``rotary_dim`` = int(head_dim * partial_rotary_factor),
    b = ``base``, s = ``factor``, L0 = ``original_max_position_embeddings`` (the trained length).

    Attributes:
        method: a name in :data:`ropelab.METHODS`.
        head_dim: channels per attention head.
        base: RoPE base b (HF ``rope_theta``).
        factor: scale factor s >= 1; ``None`` means 1, or for ``yarn``/``longrope`` the ratio
            ``max_position_embeddings / original_max_position_embeddings`` as transformers derives it.
        partial_rotary_factor: fraction of ``head_dim`` that rotates (GPT-NeoX 0.25, Phi-2 0.4).
        original_max_position_embeddings: L0, the length the model was trained on.
        max_position_embeddings: the extended length a config advertises (used only to derive
            ``factor`` where transformers does).
        attention_factor: explicit cos/sin multiplier (YaRN mscale, LongRoPE scale); wins over derived.
        beta_fast, beta_slow: YaRN / NTK-by-parts ramp bounds in rotations (defaults 32 and 1).
        mscale, mscale_all_dim: DeepSeek-style YaRN attention factor inputs.
        truncate: YaRN: floor/ceil the correction range (transformers' default ``True``).
        short_factor, long_factor: LongRoPE per-frequency rescale factors, d/2 each.
        low_freq_factor, high_freq_factor: Llama-3 band edges (Meta: 1 and 4).
        mixed_exponent: NTK-mixed exponent c (Su: 0.625).
        log_n: scale queries at position n by max(1, log n / log L0) (Su, kexue.fm 9706).
        unscaled_positions: LongRoPE's n_hat (Ding et al. 2024, section 3.2): positions below it keep
            plain RoPE's cos/sin (unscaled frequencies, attention scaling 1); ``longrope`` only.
    """

    method: str = "default"
    head_dim: int = 64
    base: float = 10000.0
    factor: float | None = None
    partial_rotary_factor: float = 1.0
    original_max_position_embeddings: int | None = None
    max_position_embeddings: int | None = None
    attention_factor: float | None = None
    beta_fast: float | None = None
    beta_slow: float | None = None
    mscale: float | None = None
    mscale_all_dim: float | None = None
    truncate: bool = True
    short_factor: tuple[float, ...] | None = None
    long_factor: tuple[float, ...] | None = None
    low_freq_factor: float | None = None
    high_freq_factor: float | None = None
    mixed_exponent: float | None = None
    log_n: bool = False
    unscaled_positions: int | None = None

    # ----------------------------------------------------------------- derived
    @property
    def rotary_dim(self) -> int:
        """d: the number of channels that rotate (as transformers: int(head_dim * partial))."""
        return int(self.head_dim * self.partial_rotary_factor)

    @property
    def scale(self) -> float:
        """The factor s the method uses (explicit, derived, or 1)."""
        if self.factor is not None:
            return float(self.factor)
        if (
            self.method in ("yarn", "longrope", "ntk-by-parts")
            and self.max_position_embeddings
            and self.original_max_position_embeddings
        ):
            return self.max_position_embeddings / self.original_max_position_embeddings
        return 1.0

    @property
    def trained_length(self) -> int | None:
        """L0, falling back to ``max_position_embeddings`` as transformers does."""
        return self.original_max_position_embeddings or self.max_position_embeddings
