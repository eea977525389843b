"""`RopeConfig`: every parameter a RoPE scaling method can take, validated once.

A frozen dataclass, so a method function can never change it, and a config can key a cache.
Unknown keys, non-finite numbers and parameters that a method does not use are rejected
with :class:`ropelab.RopeConfigError` naming the key and the fix.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields
from typing import Any

from ropelab.errors import RopeConfigError, did_you_mean
from ropelab.rope.frequencies import METHODS
from ropelab.rope.params import DEFAULT_MIXED_EXPONENT as DEFAULT_MIXED_EXPONENT  # where export.py reads it
from ropelab.rope.params import RopeParams


@dataclass(frozen=True)
class RopeConfig(RopeParams):
    """Parameters of a RoPE method (the fields of :class:`~ropelab.rope.params.RopeParams`), validated.

    Notation follows ``METHODS.md``: d = ``rotary_dim`` = int(head_dim * partial_rotary_factor),
    b = ``base``, s = ``factor``, L0 = ``original_max_position_embeddings`` (the trained length).
    See :class:`~ropelab.rope.params.RopeParams` for what each field means.
    """

    def replace(self, **changes: Any) -> RopeConfig:
        """A copy with ``changes`` applied, validated again."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        check_keys(changes)
        values.update(changes)
        return RopeConfig(**values)

    # -------------------------------------------------------------- validation
    def __post_init__(self) -> None:
        for name in ("short_factor", "long_factor"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                try:
                    object.__setattr__(self, name, tuple(float(v) for v in value))
                except (TypeError, ValueError):
                    raise RopeConfigError(f"{name} must be a list of numbers, got {value!r}") from None
        self._normalize()
        self._check_numbers()
        self._check_method()
        self._check_frequencies()

    def _normalize(self) -> None:
        """Plain Python values: numpy scalars become int/float/bool; strings for flags are refused."""
        for name in ("truncate", "log_n"):
            value = getattr(self, name)
            if _is_numpy_bool(value):
                value = bool(value)
            if not isinstance(value, bool):
                raise RopeConfigError(f"{name} must be true or false, got {value!r}")
            object.__setattr__(self, name, value)
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("method", "truncate", "log_n") or value is None:
                continue
            items = value if isinstance(value, tuple) else (value,)
            for v in items:
                if isinstance(v, bool) or _is_numpy_bool(v) or not isinstance(v, numbers.Real):
                    raise RopeConfigError(f"{f.name} must be a number, got {v!r}")
                if not math.isfinite(v):
                    raise RopeConfigError(f"{f.name} must be a finite number, got {v!r}")
            if isinstance(value, tuple):
                object.__setattr__(self, f.name, tuple(float(v) for v in value))
            elif f.name in _INTEGER_FIELDS:
                if int(value) != value:
                    raise RopeConfigError(f"{f.name} must be a positive integer, got {value!r}")
                object.__setattr__(self, f.name, int(value))
            else:
                object.__setattr__(self, f.name, float(value))

    def _check_numbers(self) -> None:
        if self.head_dim <= 0:
            raise RopeConfigError(f"head_dim must be a positive integer, got {self.head_dim!r}")
        if self.base <= 1.0:
            raise RopeConfigError(f"base (rope_theta) must be > 1, got {self.base!r}")
        if not 0.0 < self.partial_rotary_factor <= 1.0:
            raise RopeConfigError(
                f"partial_rotary_factor must be in (0, 1], got {self.partial_rotary_factor!r}"
            )
        for name in ("original_max_position_embeddings", "max_position_embeddings"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise RopeConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.unscaled_positions is not None and self.unscaled_positions < 0:
            raise RopeConfigError(f"unscaled_positions must be >= 0, got {self.unscaled_positions!r}")
        if self.factor is not None and self.factor < 1.0:
            raise RopeConfigError(
                f"factor must be >= 1 (it is the context extension ratio), got {self.factor!r}; "
                "to shrink the context, train at the shorter length instead"
            )
        if self.attention_factor is not None and self.attention_factor <= 0:
            raise RopeConfigError(f"attention_factor must be > 0, got {self.attention_factor!r}")
        for name in ("beta_fast", "beta_slow", "low_freq_factor", "high_freq_factor", "mixed_exponent"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise RopeConfigError(f"{name} must be > 0, got {value!r}")
        if self.beta_fast is not None and self.beta_slow is not None and self.beta_fast < self.beta_slow:
            raise RopeConfigError(
                f"beta_fast ({self.beta_fast}) must be >= beta_slow ({self.beta_slow}): "
                "beta_fast counts the rotations of the fastest dimensions that still extrapolate"
            )
        if (
            self.low_freq_factor is not None
            and self.high_freq_factor is not None
            and self.high_freq_factor <= self.low_freq_factor
        ):
            raise RopeConfigError(
                f"high_freq_factor ({self.high_freq_factor}) must be > "
                f"low_freq_factor ({self.low_freq_factor})"
            )

    def _check_method(self) -> None:
        info = METHODS.get(self.method)
        if info is None:
            raise RopeConfigError(
                f"unknown RoPE method {self.method!r}{did_you_mean(self.method, METHODS)}; "
                f"choose one of: {', '.join(METHODS)}"
            )
        d = self.rotary_dim
        if self.method != "proportional" and (d < 2 or d % 2):
            raise RopeConfigError(
                f"rotary dim int(head_dim * partial_rotary_factor) = {d} must be even and >= 2 "
                f"(head_dim={self.head_dim}, partial_rotary_factor={self.partial_rotary_factor})"
            )
        if self.method == "proportional" and self.head_dim % 2:
            raise RopeConfigError(f"proportional RoPE needs an even head_dim, got {self.head_dim}")
        for f in fields(self):
            if f.name in _ALWAYS or f.name in info.params:
                continue
            value = getattr(self, f.name)
            if value == f.default:
                continue
            if f.name == "factor" and value == 1.0:
                continue  # factor 1 is the identity everywhere: harmless
            if f.name == "max_position_embeddings":
                continue  # informational for methods that do not derive from it
            raise RopeConfigError(
                f"method {self.method!r} does not use {f.name!r} (it takes: "
                f"{', '.join(sorted(info.params)) or 'no extra parameters'}); remove it"
            )
        if (info.needs_trained_length or self.log_n) and self.trained_length is None:
            what = f"method {self.method!r}" if info.needs_trained_length else "log_n scaling"
            raise RopeConfigError(
                f"{what} needs original_max_position_embeddings (the length the model was trained on); "
                "pass it (CLI: --original-max-position-embeddings 4096)"
            )
        if self.method == "longrope":
            for name in ("short_factor", "long_factor"):
                value = getattr(self, name)
                if value is None:
                    raise RopeConfigError(f"longrope needs {name}: a list of {d // 2} numbers (one per pair)")
                if len(value) != d // 2:
                    raise RopeConfigError(
                        f"longrope {name} has {len(value)} entries; it needs rotary_dim / 2 = {d // 2}"
                    )
                if min(value) <= 0:
                    raise RopeConfigError(f"longrope {name} entries must be > 0")

    def _check_frequencies(self) -> None:
        """Compute the method's frequencies and attention scaling and refuse values its formulas cannot
        take: every inverse frequency finite and > 0 (``proportional``'s non-rotating pairs are 0 by
        design), the scaling finite and > 0. Dynamic methods are checked at L0 and at 2 * L0."""
        method = METHODS[self.method]
        d = self.rotary_dim
        if self.method in ("ntk", "dynamic") and d <= 2:
            raise RopeConfigError(
                f"method {self.method!r} needs a rotary dim >= 4 (its base b * s^(d/(d-2)) divides by "
                f"d - 2), got {d}; use 'linear' or 'yarn' for this head_dim"
            )
        lengths: tuple[int | None, ...] = (None,)
        if method.dynamic and self.trained_length:
            lengths = (None, 2 * self.trained_length)
        elif self.method == "longrope" and self.trained_length:
            lengths = (None, self.trained_length + 1)  # short and long factors
        what = f"method {self.method!r} with base={self.base:g}, factor={self.scale:g}"
        for seq_len in lengths:
            try:
                inv_freq, scaling = method(self, seq_len)
            except (ZeroDivisionError, OverflowError, ValueError) as err:
                why = {ZeroDivisionError: "a division by zero", OverflowError: "a number out of range"}
                raise RopeConfigError(
                    f"{what}: its formulas cannot take these values "
                    f"({why.get(type(err), str(err))}); use a smaller base or factor"
                ) from None
            if self.method == "proportional":  # its pairs past partial * head_dim / 2 have frequency 0
                inv_freq = inv_freq[: int(self.partial_rotary_factor * self.head_dim // 2)]
            if not bool(((inv_freq > 0) & inv_freq.isfinite()).all()):
                raise RopeConfigError(
                    f"{what} gives inverse frequencies that are not finite and > 0 in float32 "
                    f"(smallest {float(inv_freq.min()):.3g}); use a smaller base or factor"
                )
            if not (math.isfinite(scaling) and scaling > 0):
                raise RopeConfigError(
                    f"{what} gives an attention scaling of {scaling!r}; it must be finite and > 0 "
                    "(check mscale, mscale_all_dim, attention_factor)"
                )


def _is_numpy_bool(value: Any) -> bool:
    """numpy's bool scalar (``numpy.bool_``; named ``bool`` since numpy 2), without importing numpy."""
    return type(value).__module__ == "numpy" and type(value).__name__ in ("bool_", "bool")


#: Fields that hold integers.
_INTEGER_FIELDS = frozenset(
    {"head_dim", "original_max_position_embeddings", "max_position_embeddings", "unscaled_positions"}
)

#: Fields every method accepts.
_ALWAYS = frozenset(
    {"method", "head_dim", "base", "partial_rotary_factor", "log_n", "original_max_position_embeddings"}
)

_FIELD_NAMES = frozenset(f.name for f in fields(RopeConfig))


def check_keys(kwargs: dict[str, Any], *, where: str = "RoPE parameter") -> None:
    """Reject keys that are not RopeConfig fields, with a "did you mean"."""
    for key in kwargs:
        if key not in _FIELD_NAMES:
            raise RopeConfigError(
                f"unknown {where} {key!r}{did_you_mean(key, _FIELD_NAMES)}; "
                f"valid: {', '.join(sorted(_FIELD_NAMES))}"
            )
