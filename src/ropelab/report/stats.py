"""Paired differences between two methods measured on the same units, with a paired bootstrap interval.

Two methods scored on the same documents (``eval``) or the same trials (task suites) are compared unit by
unit: the bootstrap resamples *units* with replacement and applies the same resampled indices to both
methods, so what varies between documents (one is harder than another for every method) cancels in the
difference instead of widening its interval (Efron & Tibshirani, "An Introduction to the Bootstrap", 1993,
ch. 13, the percentile interval; the paired form as in Koehn, "Statistical significance tests for machine
translation evaluation", EMNLP 2004, which resamples test sentences for both systems alike).

The statistic is a ratio of sums: for ``eval``, the token-weighted mean loss ``sum(nll) / sum(tokens)`` of
method ``a`` minus that of ``b`` over the resampled documents (a long document weighs what its tokens
weigh, as in the loss tables); for per-trial scores every weight is 1 and it is a difference of means.

Below :data:`MIN_UNITS` units there is no interval at all (three points are the fewest a percentile of
resamples says anything about): the difference is returned with ``n`` and ``low = high = None``, and the
tables print ``n<3`` in its place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ropelab.errors import RopeConfigError

#: the fewest documents or trials that get an interval
MIN_UNITS = 3


@dataclass(frozen=True)
class PairedDifference:
    """``a`` minus ``b`` over ``n`` paired units and its percentile bootstrap interval at ``level``.

    ``low``/``high``: ``None`` below :data:`MIN_UNITS` units (no interval). ``excludes_zero``: the interval
    lies wholly above or below 0 (``False`` without an interval).
    """

    difference: float
    low: float | None
    high: float | None
    n: int
    resamples: int
    seed: int
    level: float
    excludes_zero: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self, digits: int = 3) -> str:
        """``+0.012 [-0.004, +0.031] n=4 not different``, ``-0.210 [-0.300, -0.120] n=4``."""
        values = [v for v in (self.difference, self.low, self.high) if v is not None]
        big = max(abs(v) for v in values)
        # fixed decimals, or two significant digits where they would print a nonzero difference as 0.000
        form = f"+.{digits}f" if big == 0 or big >= 0.5 * 10**-digits else "+.1e"
        diff = format(self.difference, form)
        if self.low is None or self.high is None:
            return f"{diff} n={self.n} (n<{MIN_UNITS})"
        text = f"{diff} [{format(self.low, form)}, {format(self.high, form)}] n={self.n}"
        return text if self.excludes_zero else f"{text} not different"


def _column(values: Sequence[float], name: str) -> np.ndarray:
    out = np.asarray(values, dtype=np.float64)
    if out.ndim != 1:
        raise RopeConfigError(f"{name} must be one number per unit, got shape {out.shape}")
    return out


def paired_bootstrap(
    a_sum: Sequence[float],
    a_weight: Sequence[float],
    b_sum: Sequence[float],
    b_weight: Sequence[float],
    *,
    resamples: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
) -> PairedDifference:
    """``sum(a_sum) / sum(a_weight) - sum(b_sum) / sum(b_weight)`` over ``n`` paired units, with the
    percentile interval of the same statistic over ``resamples`` resamples of the units (indices drawn
    with replacement from ``numpy.random.default_rng(seed)``, the same indices for ``a`` and ``b``).

    ``eval``: ``*_sum`` are each document's summed NLL (nats) and ``*_weight`` its scored tokens, so the
    difference is in nats/token. Every argument is one number per unit, unit ``i`` the same document for
    both methods. Below :data:`MIN_UNITS` units no interval is drawn (``low = high = None``).
    """
    a, wa = _column(a_sum, "a_sum"), _column(a_weight, "a_weight")
    b, wb = _column(b_sum, "b_sum"), _column(b_weight, "b_weight")
    n = len(a)
    if not (len(wa) == len(b) == len(wb) == n) or n == 0:
        raise RopeConfigError(
            f"a paired comparison needs the same units for both methods, got {len(a)}, {len(wa)}, "
            f"{len(b)}, {len(wb)} values"
        )
    if not 0.0 < level < 1.0:
        raise RopeConfigError(f"level must be in (0, 1), e.g. 0.95, got {level}")
    if resamples < 1:
        raise RopeConfigError(f"resamples must be >= 1, got {resamples}")
    if wa.sum() <= 0 or wb.sum() <= 0:
        raise RopeConfigError("a paired comparison needs a positive total weight (tokens) for both methods")
    difference = float(a.sum() / wa.sum() - b.sum() / wb.sum())
    if n < MIN_UNITS:
        return PairedDifference(difference, None, None, n, resamples, seed, level, False)
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))  # [resamples, n]
    with np.errstate(invalid="ignore", divide="ignore"):  # a resample of zero-token documents only
        boot = a[idx].sum(axis=1) / wa[idx].sum(axis=1) - b[idx].sum(axis=1) / wb[idx].sum(axis=1)
    boot = boot[np.isfinite(boot)]
    tail = (1.0 - level) / 2 * 100
    low, high = (float(x) for x in np.percentile(boot, [tail, 100 - tail]))
    return PairedDifference(difference, low, high, n, resamples, seed, level, low > 0 or high < 0)


def paired_bootstrap_scores(
    a: Sequence[float],
    b: Sequence[float],
    *,
    resamples: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
) -> PairedDifference:
    """Per-trial scores (a task's 0/1 exact match, trial ``i`` the same prompt for both methods):
    ``mean(a) - mean(b)`` with the paired bootstrap of :func:`paired_bootstrap` (every weight 1)."""
    ones = np.ones(len(a), dtype=np.float64)
    return paired_bootstrap(
        a, ones, b, np.ones(len(b), dtype=np.float64), resamples=resamples, seed=seed, level=level
    )
