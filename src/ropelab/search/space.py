"""The LongRoPE search space: per-pair rescale factors, their constraints, seeds, mutation and crossover.

Ding et al. 2024, *LongRoPE* (arXiv 2402.13753v1), section 3.2: pair ``i`` of the ``d/2`` rotary pairs
(fastest first) rotates with ``theta_i / lambda_i`` instead of ``theta_i``; the search looks for the
``lambda`` that minimise the loss at the target length, under the constraint that ``lambda`` does not
decrease from the fast pairs to the slow ones (lower frequencies are interpolated at least as much as
higher ones), each ``lambda_i`` between 1 (no interpolation, extrapolation) and an upper limit (the
PI-like ratio ``s = L / L0`` by default). An optional count ``n_hat`` of initial positions keeps the
unscaled rotation (the paper's second non-uniformity). The operators follow the semantics of the
authors' code, read (not copied) at microsoft/LongRoPE ``evolution/algorithms/dim_mono.py`` and
``genetic_base.py`` (commit 3d00e1f): a factor grid of ``step`` = 0.01, a mutation draws pair ``i`` from
the grid between its neighbours ``[lambda_{i-1}, lambda_{i+1}]`` (so the order holds by construction),
a crossover takes each gene from either parent and keeps the child only if it is still monotone.

Factors here are plain Python floats, ``[d/2]`` tuples, fastest pair first (``i = 0`` is theta_0 = 1).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from ropelab.errors import RopeConfigError

#: the methods whose frequencies seed the population (LongRoPE section 3.2: "PI, NTK and YaRN")
SEED_METHODS = ("linear", "ntk", "yarn")


@dataclass(frozen=True)
class Candidate:
    """One point of the search: ``factors`` (``lambda_i``, ``[d/2]``, fastest pair first) and ``n_hat``."""

    factors: tuple[float, ...]
    n_hat: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "factors", tuple(float(f) for f in self.factors))
        object.__setattr__(self, "n_hat", int(self.n_hat))

    @property
    def fingerprint(self) -> str:
        """A hash of the exact values (the resume store's key for this candidate)."""
        blob = json.dumps({"factors": [repr(f) for f in self.factors], "n_hat": self.n_hat})
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, object]:
        return {"factors": list(self.factors), "n_hat": self.n_hat}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Candidate:
        return cls(tuple(data["factors"]), int(data.get("n_hat", 0)))  # type: ignore[arg-type]


@dataclass(frozen=True)
class SearchSpace:
    """Where candidates live: ``pairs`` = d/2 factors in ``[1, upper]`` on a grid of ``step``, non-decreasing,
    and ``n_hat`` from ``n_hat_choices`` (``(0,)``: no unscaled initial positions)."""

    pairs: int
    scale: float
    upper: float | None = None
    step: float = 0.01
    n_hat_choices: tuple[int, ...] = (0,)

    def __post_init__(self) -> None:
        if self.pairs < 1:
            raise RopeConfigError(f"the search needs at least one rotary pair, got {self.pairs}")
        if not (math.isfinite(self.scale) and self.scale > 1):
            raise RopeConfigError(
                f"the search needs a target longer than the trained length (scale > 1), got {self.scale:g}"
            )
        upper = self.scale if self.upper is None else float(self.upper)
        if not (math.isfinite(upper) and upper >= self.scale):
            raise RopeConfigError(f"upper must be >= the scale s = {self.scale:g}, got {upper:g}")
        object.__setattr__(self, "upper", upper)
        if not (math.isfinite(self.step) and 0 < self.step <= upper - 1):
            raise RopeConfigError(f"step must be in (0, upper - 1], got {self.step:g}")
        choices = tuple(sorted({int(n) for n in self.n_hat_choices}))
        if not choices or choices[0] < 0:
            raise RopeConfigError(f"n_hat choices must be integers >= 0, got {self.n_hat_choices}")
        object.__setattr__(self, "n_hat_choices", choices)

    @property
    def high(self) -> float:
        assert self.upper is not None
        return self.upper

    def violations(self, cand: Candidate) -> list[str]:
        """What ``cand`` breaks (empty: it is in the space)."""
        f = cand.factors
        out = []
        if len(f) != self.pairs:
            out.append(f"{len(f)} factors, the model has {self.pairs} rotary pairs")
        if any(not math.isfinite(x) or x < 1.0 or x > self.high for x in f):
            out.append(f"a factor outside [1, {self.high:g}]")
        if any(b < a for a, b in itertools.pairwise(f)):
            out.append("factors decrease from a faster pair to a slower one")
        if cand.n_hat not in self.n_hat_choices:
            out.append(f"n_hat {cand.n_hat} not in {self.n_hat_choices}")
        return out

    def check(self, cand: Candidate) -> Candidate:
        broken = self.violations(cand)
        if broken:
            raise RopeConfigError(f"candidate outside the search space: {'; '.join(broken)}")
        return cand

    def clip(self, factors: Sequence[float]) -> tuple[float, ...]:
        """Into ``[1, upper]`` and non-decreasing (a running maximum): for seeds whose float32 ratios sit a
        rounding error outside the bounds."""
        out, prev = [], 1.0
        for x in factors:
            prev = max(prev, min(max(float(x), 1.0), self.high))
            out.append(prev)
        return tuple(out)

    # ------------------------------------------------------------------ operators
    def _grid(self, lo: float, hi: float) -> list[float]:
        """Grid values ``1 + k * step`` in ``[lo, hi]`` (rounded to 1e-9 so that 1.07 stays 1.07)."""
        first = math.ceil((lo - 1.0) / self.step - 1e-9)
        last = math.floor((hi - 1.0) / self.step + 1e-9)
        return [round(1.0 + k * self.step, 9) for k in range(first, last + 1)]

    def mutate(self, cand: Candidate, rng: random.Random, *, p: float = 0.3) -> Candidate:
        """Each pair with probability ``p`` redrawn from the grid between its neighbours (the first pair's
        lower neighbour is 1, the last pair's upper one is ``upper``); ``n_hat`` with probability ``p``
        redrawn from its choices. The result is in the space when ``cand`` is."""
        f = list(cand.factors)
        for i in range(len(f)):
            if rng.random() < p:
                lo = f[i - 1] if i > 0 else 1.0
                hi = f[i + 1] if i + 1 < len(f) else self.high
                values = self._grid(lo, hi)
                if values:
                    f[i] = values[rng.randrange(len(values))]
        n_hat = cand.n_hat
        if len(self.n_hat_choices) > 1 and rng.random() < p:
            n_hat = self.n_hat_choices[rng.randrange(len(self.n_hat_choices))]
        return Candidate(tuple(f), n_hat)

    def crossover(self, a: Candidate, b: Candidate, rng: random.Random) -> Candidate | None:
        """Each gene (every factor and ``n_hat``) from ``a`` or ``b`` with probability 1/2; ``None`` when the
        child breaks the order (the caller retries, then falls back to a mutation, as the authors' code)."""
        genes = [x if rng.random() < 0.5 else y for x, y in zip(a.factors, b.factors, strict=True)]
        n_hat = a.n_hat if rng.random() < 0.5 else b.n_hat
        child = Candidate(tuple(genes), n_hat)
        return None if self.violations(child) else child


def method_factors(
    method: str, *, head_dim: int, base: float, scale: float, trained: int, partial_rotary_factor: float = 1.0
) -> tuple[float, ...]:
    """The per-pair factor ``lambda_i = theta_i / theta'_i`` of a frequency method, ``[d/2]``, from
    ropelab's own frequency functions (:class:`ropelab.rope.Rope`): the method at factor ``scale`` against
    plain RoPE of the same geometry, divided in float64. PI gives ``s`` everywhere; NTK ``s^(2i/(d-2))``;
    YaRN its ramp between 1 and ``s``."""
    from ropelab.rope import Rope

    geometry = {"head_dim": head_dim, "base": base, "partial_rotary_factor": partial_rotary_factor}
    plain, _ = Rope("default", **geometry).frequencies()
    extra = {"original_max_position_embeddings": trained} if method in ("yarn", "ntk-by-parts") else {}
    scaled, _ = Rope(method, factor=scale, **geometry, **extra).frequencies()
    return tuple(float(x) for x in (plain.double() / scaled.double()).tolist())


def seed_candidates(
    space: SearchSpace, *, head_dim: int, base: float, trained: int, partial_rotary_factor: float = 1.0
) -> dict[str, Candidate]:
    """PI, NTK and YaRN at ``s = space.scale`` as candidates (``n_hat = 0``), clipped into the space."""
    out = {}
    for method in SEED_METHODS:
        f = method_factors(
            method,
            head_dim=head_dim,
            base=base,
            scale=space.scale,
            trained=trained,
            partial_rotary_factor=partial_rotary_factor,
        )
        if len(f) != space.pairs:
            raise RopeConfigError(f"{method} gives {len(f)} pairs; the search space has {space.pairs}")
        out[method] = space.check(Candidate(space.clip(f), space.n_hat_choices[0]))
    return out
