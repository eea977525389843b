"""RoPE as a position encoding, with any method of the registry and any attention-level variant.

    RotaryEncoding(Rope("yarn", head_dim=64, factor=4.0, original_max_position_embeddings=2048))
    RotaryEncoding(head_dim=64, attention="rerope", window=512)
    enc.with_method("ntk", factor=4.0)            # a new encoding; the old one is untouched
    enc.replace(attention="self-extend", group=4, window=512)

Su et al. 2021 (RoFormer, arXiv 2104.09864); the variants: ReRoPE / leaky ReRoPE (Su, kexue.fm 9708),
Self-Extend (Jin et al. 2024, arXiv 2401.01325), log-n (Su, kexue.fm 9706).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import torch
from torch import Tensor

from ropelab.attention.methods import rerope_attention, self_extend_attention
from ropelab.attention.registry import ATTENTION_METHODS as ATTENTION
from ropelab.attention.sdpa import check_qkv
from ropelab.attention.tables import query_scale, rope_tables, shared_seq_len
from ropelab.encodings.base import PositionEncoding, causal_sdpa
from ropelab.errors import RopeConfigError, did_you_mean
from ropelab.rope.apply import rotate
from ropelab.rope.config import RopeConfig
from ropelab.rope.core import Rope

__all__ = ["ATTENTION_METHODS", "ENCODING_OPTIONS", "RotaryEncoding"]

#: attention variant -> the options it needs (all of them required).
ATTENTION_METHODS: dict[str, tuple[str, ...]] = {
    "rope": (),
    **{name: method.params for name, method in ATTENTION.items()},
}
_VARIANT_OPTIONS = ("window", "leak", "group")
#: keyword arguments of :class:`RotaryEncoding` that are not :class:`RopeConfig` fields.
ENCODING_OPTIONS = frozenset({"layout", "attention", "block_size", *_VARIANT_OPTIONS})
_CACHE_SIZE = 4


class RotaryEncoding(PositionEncoding):
    """RoPE in ``attend``: rotate ``q``/``k`` by position, then causal attention.

    Args:
        rope: the configured method (default: plain RoPE with ``head_dim`` and ``base``).
        head_dim, base: build a default :class:`Rope` when ``rope`` is not given.
        layout: ``"half"`` (GPT-NeoX, LLaMA in transformers) or ``"interleaved"`` (GPT-J, Meta LLaMA).
        attention: ``"rope"`` (plain), ``"rerope"`` (``window``), ``"leaky-rerope"`` (``window``, ``leak``)
            or ``"self-extend"`` (``group``, ``window``).
        log_n: override ``rope.config.log_n`` (``True`` needs ``original_max_position_embeddings``).
        block_size: queries per block for the blockwise variants (``None``: automatic).

    The encoding holds no trainable state; options are read-only attributes. ``with_method`` and
    ``replace`` return new encodings (with their own :class:`Rope`), so switching the method at
    evaluation time costs one constructor call. Plain ``"rope"`` caches its cos/sin tables for the last
    few position tensors.
    """

    name = "rope"

    def __init__(
        self,
        rope: Rope | None = None,
        *,
        head_dim: int | None = None,
        base: float | None = None,
        layout: str = "half",
        attention: str = "rope",
        window: int | None = None,
        leak: float | None = None,
        group: int | None = None,
        log_n: bool | None = None,
        block_size: int | None = None,
    ) -> None:
        super().__init__()
        if rope is None:
            if head_dim is None:
                raise RopeConfigError("RotaryEncoding needs a Rope or head_dim (e.g. head_dim=64)")
            rope = Rope("default", head_dim=head_dim, base=10000.0 if base is None else base)
        elif not isinstance(rope, Rope):
            raise RopeConfigError(f"rope must be a ropelab.Rope, got {type(rope).__name__}")
        else:
            for key, value in (("head_dim", head_dim), ("base", base)):
                if value is not None and value != getattr(rope.config, key):
                    raise RopeConfigError(
                        f"{key}={value!r} disagrees with the Rope's {key}={getattr(rope.config, key)!r}; "
                        f"pass only the Rope"
                    )
            rope = Rope.from_config(rope.config)  # our own copy: nothing mutable is shared
        if log_n is not None and bool(log_n) != rope.config.log_n:
            rope = Rope.from_config(rope.config.replace(log_n=bool(log_n)))
        if layout not in ("half", "interleaved"):
            raise RopeConfigError(f"unknown rotary layout {layout!r}; valid choices: half, interleaved")
        if attention not in ATTENTION_METHODS:
            raise RopeConfigError(
                f"unknown attention {attention!r}{did_you_mean(attention, ATTENTION_METHODS)}; "
                f"choose one of: {', '.join(ATTENTION_METHODS)}"
            )
        options = {"window": window, "leak": leak, "group": group}
        needed = ATTENTION_METHODS[attention]
        for key, value in options.items():
            if key in needed and value is None:
                raise RopeConfigError(f"attention {attention!r} needs {key!r} (e.g. {key}={_EXAMPLES[key]})")
            if key not in needed and value is not None:
                raise RopeConfigError(
                    f"attention {attention!r} does not use {key!r} "
                    f"(it takes: {', '.join(needed) or 'no options'}); remove it"
                )
        if block_size is not None and (
            isinstance(block_size, bool) or int(block_size) != block_size or block_size < 1
        ):
            raise RopeConfigError(f"block_size must be a positive integer, got {block_size!r}")
        self._rope, self._layout, self._attention = rope, layout, attention
        self._window, self._leak, self._group, self._block_size = window, leak, group, block_size
        self._cache: dict[tuple[Any, ...], tuple[Tensor, Tensor, Tensor]] = {}

    # ------------------------------------------------------------------ views
    @property
    def rope(self) -> Rope:
        return self._rope

    @property
    def layout(self) -> str:
        return self._layout

    @property
    def attention(self) -> str:
        return self._attention

    @property
    def window(self) -> int | None:
        return self._window

    @property
    def leak(self) -> float | None:
        return self._leak

    @property
    def group(self) -> int | None:
        return self._group

    @property
    def block_size(self) -> int | None:
        return self._block_size

    def _options(self) -> dict[str, Any]:
        return {
            "layout": self._layout,
            "attention": self._attention,
            "window": self._window,
            "leak": self._leak,
            "group": self._group,
            "block_size": self._block_size,
        }

    # ---------------------------------------------------------------- copies
    def replace(self, **changes: Any) -> RotaryEncoding:
        """A new encoding with ``changes`` (``rope``, ``layout``, ``attention``, ``window``, ``leak``,
        ``group``, ``log_n``, ``block_size``). Changing ``attention`` drops the old variant's options
        that the new one does not take."""
        allowed = {"rope", "log_n", *ENCODING_OPTIONS}
        for key in changes:
            if key not in allowed:
                raise RopeConfigError(
                    f"unknown RotaryEncoding option {key!r}{did_you_mean(key, allowed)}; "
                    f"valid: {', '.join(sorted(allowed))}"
                )
        values: dict[str, Any] = {"rope": self._rope, **self._options()}
        if "attention" in changes:
            needed = ATTENTION_METHODS.get(changes["attention"], ())
            for key in _VARIANT_OPTIONS:
                if key not in needed:
                    values[key] = None
        values.update(changes)
        return RotaryEncoding(**values)

    def with_method(self, method: str, **params: Any) -> RotaryEncoding:
        """A new encoding with RoPE ``method`` and its ``params`` (Rope fields, or encoding options).

        Keeps ``head_dim``, ``base``, ``partial_rotary_factor``, ``original_max_position_embeddings`` and
        ``log_n`` unless ``params`` sets them.
        """
        options = {key: params.pop(key) for key in list(params) if key in ENCODING_OPTIONS}
        cfg = self._rope.config
        kept = {
            "head_dim": cfg.head_dim,
            "base": cfg.base,
            "partial_rotary_factor": cfg.partial_rotary_factor,
            "original_max_position_embeddings": cfg.original_max_position_embeddings,
            "log_n": cfg.log_n,
        }
        kept = {k: v for k, v in kept.items() if v != _ROPE_DEFAULTS[k]}
        return self.replace(rope=Rope(method, **{**kept, **params}), **options)

    @classmethod
    def from_kwargs(cls, method: str = "default", **kwargs: Any) -> RotaryEncoding:
        """Build from one flat dict: ``method``, :class:`RopeConfig` fields and encoding options
        (the inverse of :meth:`config`)."""
        valid = _ROPE_FIELDS | ENCODING_OPTIONS
        for key in kwargs:
            if key not in valid:
                raise RopeConfigError(
                    f"unknown rope encoding parameter {key!r}{did_you_mean(key, valid)}; "
                    f"valid: method, {', '.join(sorted(valid))}"
                )
        options = {key: kwargs.pop(key) for key in list(kwargs) if key in ENCODING_OPTIONS}
        return cls(Rope(method, **kwargs), **options)

    def config(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, **self._rope.to_dict(), "layout": self._layout}
        out["attention"] = self._attention
        out.update(
            {k: v for k, v in self._options().items() if k not in ("layout", "attention") and v is not None}
        )
        return out

    # ------------------------------------------------------------- attention
    def _tables(self, positions: Tensor, seq_len: int) -> tuple[Tensor, Tensor]:
        key = (positions.device, tuple(positions.shape), seq_len if self._rope.method.dynamic else None)
        hit = self._cache.get(key)
        if hit is not None and torch.equal(hit[0], positions):
            return hit[1], hit[2]
        cos, sin = rope_tables(self._rope, positions, seq_len=seq_len)
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.pop(next(iter(self._cache)))
        self._cache[key] = (positions.clone(), cos, sin)
        return cos, sin

    def attend(self, q: Tensor, k: Tensor, v: Tensor, q_positions: Tensor, k_positions: Tensor) -> Tensor:
        options = {"layout": self._layout, "block_size": self._block_size}
        if self._attention == "rerope":
            return rerope_attention(
                q, k, v, q_positions, k_positions, self._rope, window=self._window, **options
            )
        if self._attention == "leaky-rerope":
            return rerope_attention(
                q, k, v, q_positions, k_positions, self._rope, window=self._window, leak=self._leak, **options
            )
        if self._attention == "self-extend":
            return self_extend_attention(
                q,
                k,
                v,
                q_positions,
                k_positions,
                self._rope,
                group=self._group,
                window=self._window,
                **options,
            )
        check_qkv(q, k, v, q_positions, k_positions)
        seq_len = shared_seq_len(q_positions, k_positions)
        factors = query_scale(self._rope, q_positions, None)
        if factors is not None:
            q = q * factors.to(q.dtype)
        q = rotate(q, *self._tables(q_positions, seq_len), layout=self._layout)
        k = rotate(k, *self._tables(k_positions, seq_len), layout=self._layout)
        return causal_sdpa(q, k, v, q_positions, k_positions)

    def extra_repr(self) -> str:
        return f"{self._rope!r}, " + ", ".join(
            f"{k}={v!r}" for k, v in self._options().items() if v is not None
        )


_EXAMPLES = {"window": 512, "leak": 16, "group": 4}
_ROPE_FIELDS = frozenset(f.name for f in fields(RopeConfig)) - {"method"}
_ROPE_DEFAULTS = {f.name: f.default for f in fields(RopeConfig)}
