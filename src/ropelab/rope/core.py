"""`Rope`: a configured RoPE method that gives frequencies, cos/sin tables and log-n scales."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, fields
from typing import Any

import torch

from ropelab.errors import RopeConfigError, did_you_mean
from ropelab.rope.config import RopeConfig, check_keys
from ropelab.rope.frequencies import Method, get_method
from ropelab.rope.frequencies import default as default_frequencies
from ropelab.rope.table_cache import CosSinCache

#: transformers' ``rope_parameters`` / ``rope_scaling`` key -> RopeConfig field.
_HF_KEYS = {
    "rope_theta": "base",
    "factor": "factor",
    "partial_rotary_factor": "partial_rotary_factor",
    "attention_factor": "attention_factor",
    "beta_fast": "beta_fast",
    "beta_slow": "beta_slow",
    "mscale": "mscale",
    "mscale_all_dim": "mscale_all_dim",
    "truncate": "truncate",
    "short_factor": "short_factor",
    "long_factor": "long_factor",
    "low_freq_factor": "low_freq_factor",
    "high_freq_factor": "high_freq_factor",
    "original_max_position_embeddings": "original_max_position_embeddings",
    "mixed_b": "mixed_exponent",
    "mixed_exponent": "mixed_exponent",
    "log_n": "log_n",
}

#: Angles are exact in float32 only while position * inv_freq keeps its integer part; the product's
#: rounding error grows with the position (about 5e-4 rad at 8k). Float64 costs little on a [s, d/2] table.
_ANGLE_DTYPE = torch.float64
#: cos_sin computes requests of at most this many positions directly (a decode step): as fast as a table
#: lookup, and it leaves the table alone. Larger requests go through the cache.
_DIRECT_BELOW = 32
#: the arithmetic of cos/sin angles: float64 (the exact table) or float32 (transformers' own)
PRECISIONS = ("float64", "float32")


def check_precision(precision: str) -> None:
    """Refuse an angle precision other than :data:`PRECISIONS` with a one-line error."""
    if precision not in PRECISIONS:
        raise RopeConfigError(f"precision must be 'float64' or 'float32', got {precision!r}")


class Rope:
    """A RoPE method with its parameters.

    >>> rope = Rope("yarn", head_dim=64, base=10000.0, factor=4.0, original_max_position_embeddings=2048)
    >>> inv_freq, scaling = rope.frequencies()          # float32 [32], float
    >>> cos, sin = rope.cos_sin(torch.arange(8192))     # float32 [8192, 32] each (half tables)

    Keyword arguments are the fields of :class:`RopeConfig`; unknown ones raise
    :class:`ropelab.RopeConfigError` with a "did you mean".
    """

    def __init__(self, method: str = "default", **params: Any) -> None:
        check_keys(params)
        get_method(method)  # "did you mean" before anything else
        self.config = RopeConfig(method=method, **params)
        self._freq_cache: dict[int | None, tuple[torch.Tensor, float]] = {}
        self._tables = CosSinCache()

    @classmethod
    def from_config(cls, config: RopeConfig) -> Rope:
        """A Rope for an existing :class:`RopeConfig`."""
        values = asdict(config)
        return cls(values.pop("method"), **values)

    @classmethod
    def from_hf(
        cls,
        rope_parameters: Mapping[str, Any] | None,
        *,
        head_dim: int,
        max_position_embeddings: int | None = None,
        rope_theta: float | None = None,
        partial_rotary_factor: float | None = None,
    ) -> Rope:
        """Build from a transformers v5 ``rope_parameters`` or legacy ``rope_scaling`` dict.

        Accepts ``rope_type`` or ``type``; ``rope_theta`` inside the dict or passed; every key
        transformers reads. Follows transformers' defaults: ``original_max_position_embeddings``
        falls back to ``max_position_embeddings`` (llama3, yarn, longrope), and dynamic NTK's trained
        length is ``max_position_embeddings``. As transformers 5.24 computes them: a ``null`` YaRN/LongRoPE
        ``factor`` is ``max_position_embeddings / original`` (transformers refuses a missing ``factor`` key;
        ropelab derives it the same way), ``mscale`` / ``mscale_all_dim`` count only when both are non-zero
        (DeepSeek: g(s, mscale) / g(s, mscale_all_dim)), an explicit ``attention_factor`` wins over both, and
        ``truncate: null`` does not truncate.
        """
        if is_per_layer(rope_parameters):
            assert rope_parameters is not None
            raise RopeConfigError(
                f"rope_parameters is nested by layer type ({', '.join(rope_parameters)}): use "
                "ropelab.rope.ropes_from_hf for one Rope per layer type, or pass one of its entries"
            )
        params = dict(rope_parameters or {})
        method = params.pop("rope_type", None)
        legacy = params.pop("type", None)
        if method is None:
            method = legacy or "default"
        elif legacy is not None and legacy != method:
            raise RopeConfigError(f"rope_parameters has rope_type={method!r} but type={legacy!r}; keep one")
        get_method(method)
        kwargs: dict[str, Any] = {"head_dim": head_dim}
        for key, value in params.items():
            if key not in _HF_KEYS:
                raise RopeConfigError(
                    f"unknown rope_parameters key {key!r}{did_you_mean(key, _HF_KEYS)}; "
                    f"valid: {', '.join(sorted(_HF_KEYS))}"
                )
            if key == "truncate" and value is None:
                value = False  # transformers 5.24 reads it with `if truncate:`: null does not truncate
            if value is not None:
                kwargs[_HF_KEYS[key]] = value
        if "base" not in kwargs:
            kwargs["base"] = rope_theta if rope_theta is not None else 10000.0
        if partial_rotary_factor is not None:
            kwargs.setdefault("partial_rotary_factor", partial_rotary_factor)
        if max_position_embeddings is not None:
            # the length the config states: derives factor for yarn/longrope, and is the exported length
            kwargs["max_position_embeddings"] = max_position_embeddings
        if method in ("yarn", "longrope", "llama3", "ntk-by-parts", "dynamic-yarn"):
            kwargs.setdefault("original_max_position_embeddings", max_position_embeddings)
        elif method == "dynamic":
            # transformers' dynamic NTK measures the length against max_position_embeddings
            kwargs["original_max_position_embeddings"] = max_position_embeddings
        elif kwargs.get("log_n"):
            kwargs.setdefault("original_max_position_embeddings", max_position_embeddings)
        if method == "proportional" and kwargs.get("factor") is None:
            kwargs.pop("factor", None)
        return cls(method, **kwargs)

    # ------------------------------------------------------------------ views
    @property
    def method(self) -> Method:
        return get_method(self.config.method)

    @property
    def rotary_dim(self) -> int:
        """Channels that rotate (``head_dim`` for ``proportional``, whose extra pairs have frequency 0)."""
        return self.config.head_dim if self.config.method == "proportional" else self.config.rotary_dim

    @property
    def max_length(self) -> int | None:
        """The context length this configuration is for (what an export sets as the model's maximum).

        A stated ``max_position_embeddings`` wins when it differs from ``original_max_position_embeddings``
        L0 (Llama 3.1 states 131072 for L0 8192 and factor 8) or when L0 is not given (Gemma 3's linear
        factor 8 beside its stated 131072); a stated length equal to L0 is the trained length (Qwen2.5 keeps
        ``max_position_embeddings = original`` beside its YaRN factor), so the length is derived as
        round(L0 * s), as it is when nothing is stated. ``None`` when neither is known.
        """
        cfg = self.config
        stated, original = cfg.max_position_embeddings, cfg.original_max_position_embeddings
        if stated is not None and stated != original:
            return int(stated)
        return round(original * cfg.scale) if original is not None else None

    def __repr__(self) -> str:
        changed = {
            f.name: getattr(self.config, f.name)
            for f in fields(self.config)
            if f.name != "method" and getattr(self.config, f.name) != f.default
        }
        args = ", ".join(f"{k}={v!r}" for k, v in changed.items())
        return f"Rope({self.config.method!r}{', ' if args else ''}{args})"

    def to_dict(self) -> dict[str, Any]:
        """Method, geometry and every parameter that differs from its default (JSON-friendly)."""
        out: dict[str, Any] = {"method": self.config.method}
        for f in fields(self.config):
            value = getattr(self.config, f.name)
            if f.name in ("head_dim", "base") or (f.name != "method" and value != f.default):
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    # ------------------------------------------------------------ frequencies
    def frequencies(self, seq_len: int | None = None) -> tuple[torch.Tensor, float]:
        """(inv_freq float32 ``[d/2]``, attention_scaling float) at sequence length ``seq_len``.

        ``seq_len`` matters only for the dynamic methods and LongRoPE; for the others it is ignored.
        """
        if seq_len is not None and (int(seq_len) != seq_len or seq_len < 1):
            raise RopeConfigError(f"seq_len must be a positive integer, got {seq_len!r}")
        key = int(seq_len) if (seq_len is not None and self.method.dynamic) else None
        if key not in self._freq_cache:
            self._freq_cache[key] = self.method(self.config, key)
        inv_freq, scaling = self._freq_cache[key]
        return inv_freq.clone(), scaling

    def cos_sin(
        self,
        position_ids: torch.Tensor,
        *,
        dtype: torch.dtype | None = None,
        seq_len: int | None = None,
        precision: str = "float64",
        cache: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Half cos/sin tables for integer ``position_ids`` of shape ``[s]`` or ``[b, s]``.

        Returns two tensors of shape ``[..., d/2]`` already multiplied by the attention scaling,
        in ``dtype`` (default float32). Angles are computed in float64 from the float32 frequencies
        (``precision="float32"`` reproduces transformers' float32 arithmetic bit for bit).
        For dynamic methods ``seq_len`` defaults to ``max(position_ids) + 1``. With ``unscaled_positions``
        (LongRoPE's n_hat, ``longrope`` only) the rows of positions below it are plain RoPE's (unscaled
        frequencies, no attention scaling), as microsoft/LongRoPE ``rope/longrope.py``
        ``MixedLongRoPEScaledRotaryEmbedding`` (41fa632) replaces them.

        ``cache=True`` (default): integer positions, more than a decode step's few, are looked up in a
        table of rows ``0 .. n-1`` kept per (frequencies, precision, device, dtype), computed once and grown
        with only the missing rows (:class:`ropelab.rope.table_cache.CosSinCache`); the values equal
        ``cache=False`` bit for bit.
        The returned tensors are always new (never views of the cache).
        """
        check_precision(precision)
        positions = torch.as_tensor(position_ids)
        if positions.is_floating_point() or positions.is_complex():
            if not torch.isfinite(positions).all():
                raise RopeConfigError("position_ids contain non-finite values")
            if not torch.equal(positions, positions.round()):
                raise RopeConfigError("position_ids must be integers")
        lowest = int(positions.min()) if positions.numel() else 0
        if lowest < 0:
            raise RopeConfigError(f"position_ids must be >= 0, got min {lowest}")
        highest = int(positions.max()) if positions.numel() else None
        if seq_len is None and self.method.dynamic:
            seq_len = highest + 1 if highest is not None else 1
        inv_freq, scaling = self.frequencies(seq_len)
        out_dtype = dtype or torch.float32
        unscaled = self.config.unscaled_positions or 0
        plain = default_frequencies(self.config)[0] if unscaled else None

        def compute(pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            cos, sin = _cos_sin_rows(pos, inv_freq.to(pos.device), scaling, precision, out_dtype)
            if plain is not None:  # LongRoPE's n_hat: positions below it keep plain RoPE, scaling 1
                early = (pos < unscaled)[..., None]
                cos0, sin0 = _cos_sin_rows(pos, plain.to(pos.device), 1.0, precision, out_dtype)
                cos, sin = torch.where(early, cos0, cos), torch.where(early, sin0, sin)
            return cos, sin

        integer = not (
            positions.is_floating_point() or positions.is_complex() or positions.dtype == torch.bool
        )
        if cache and integer and positions.numel() > _DIRECT_BELOW:
            key = (inv_freq.numpy().tobytes(), scaling, unscaled, precision, str(positions.device), out_dtype)
            found = self._tables.lookup(key, positions, compute, max_position=highest)
            if found is not None:
                return found
        return compute(positions)

    def query_scale(self, position_ids: torch.Tensor) -> torch.Tensor:
        """log-n factor per position: max(1, log(n+1)/log(L0)) if ``log_n`` else 1 (float32, same shape).

        Su, kexue.fm 9706: multiply q at (0-based) position n so attention entropy stays as in training.
        """
        positions = torch.as_tensor(position_ids)
        if not self.config.log_n:
            return torch.ones(positions.shape, dtype=torch.float32, device=positions.device)
        trained = self.config.trained_length
        assert trained is not None
        n = positions.to(torch.float64) + 1
        return torch.clamp(torch.log(n) / math.log(trained), min=1.0).float()


#: the key :func:`ropes_from_hf` uses for a flat (not per-layer) ``rope_parameters``
ALL_LAYERS = "all"


def is_per_layer(rope_parameters: Mapping[str, Any] | None, layer_types: Sequence[str] | None = None) -> bool:
    """Whether ``rope_parameters`` is nested by layer type (transformers v5, e.g. Gemma 3).

    transformers 5.24 (``RotaryEmbeddingConfigMixin.nested_rope_parameter_keys``) calls it nested when a key
    is one of the config's ``layer_types``; without ``layer_types``, a dict whose values are all dicts (or
    ``None``, a layer type without RoPE) is nested, since a flat dict holds numbers, strings and lists.
    """
    if not rope_parameters:
        return False
    if layer_types:
        return any(key in set(layer_types) for key in rope_parameters)
    values = list(rope_parameters.values())
    nested = [isinstance(v, Mapping) for v in values]
    return any(nested) and all(n or v is None for n, v in zip(nested, values, strict=True))


#: the layer type that attends over the whole context in transformers' layer_types
FULL_ATTENTION = "full_attention"


def extended_layer_types(layer_types: Iterable[str]) -> list[str]:
    """The layer types a context-extension method replaces the RoPE of: ``full_attention`` when present
    (sliding-window layers never see more than their window, and Gemma 3 scales only its global layers),
    else all of them."""
    names = list(dict.fromkeys(layer_types))
    return [FULL_ATTENTION] if FULL_ATTENTION in names else names


def ropes_from_hf(
    rope_parameters: Mapping[str, Any] | None,
    *,
    head_dim: int,
    max_position_embeddings: int | None = None,
    rope_theta: float | None = None,
    partial_rotary_factor: float | None = None,
    layer_types: Sequence[str] | None = None,
) -> dict[str, Rope]:
    """One :class:`Rope` per layer type for a transformers ``rope_parameters`` that may be nested.

    Nested (Gemma 3: ``{"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
    "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}``): ``{layer_type: Rope}`` in the
    dict's order, each through :meth:`Rope.from_hf` with the shared geometry (``rope_theta`` and
    ``partial_rotary_factor`` as defaults each entry may override); a ``None`` entry (a layer type without
    RoPE) is left out. Flat: ``{ALL_LAYERS: Rope.from_hf(...)}``. ``layer_types`` is the config's list
    (used, as transformers does, to tell a nested dict from a flat one).

    One difference from transformers 5.24, kept on purpose: its YaRN reads ``truncate`` from the top level
    of ``config.rope_parameters``, so a per-layer ``truncate: false`` is ignored there; here each layer
    type's own value counts.
    """
    shared = {
        "head_dim": head_dim,
        "max_position_embeddings": max_position_embeddings,
        "rope_theta": rope_theta,
        "partial_rotary_factor": partial_rotary_factor,
    }
    if not is_per_layer(rope_parameters, layer_types):
        return {ALL_LAYERS: Rope.from_hf(rope_parameters, **shared)}
    assert rope_parameters is not None
    out: dict[str, Rope] = {}
    for layer_type, params in rope_parameters.items():
        if params is None:
            continue
        if layer_types and layer_type not in layer_types:
            raise RopeConfigError(
                f"rope_parameters has layer type {layer_type!r}{did_you_mean(layer_type, layer_types)}, "
                f"but layer_types has only: {', '.join(sorted(set(layer_types)))}"
            )
        try:
            out[layer_type] = Rope.from_hf(params, **shared)
        except RopeConfigError as err:
            raise RopeConfigError(f"rope_parameters[{layer_type!r}]: {err}") from None
    return out


def _cos_sin_rows(
    positions: torch.Tensor, inv_freq: torch.Tensor, scaling: float, precision: str, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin ``[*positions.shape, d/2]`` times ``scaling``: elementwise in the positions, so a row of
    a cached table equals the same position computed alone, bit for bit."""
    if precision == "float32":
        angles = positions[..., None].float() * inv_freq
        cos, sin = angles.cos() * scaling, angles.sin() * scaling
    else:
        angles = positions[..., None].to(_ANGLE_DTYPE) * inv_freq.to(_ANGLE_DTYPE)
        cos = (angles.cos() * scaling).float()
        sin = (angles.sin() * scaling).float()
    return cos.to(dtype), sin.to(dtype)
