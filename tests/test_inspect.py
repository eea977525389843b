"""The per-pair view: which pairs a method leaves alone, interpolates, or pushes past seen angles."""

from __future__ import annotations

import math

import pytest

from ropelab import Rope, RopeConfigError
from ropelab.rope.inspect import pair_views, summarize


def test_plain_rope_beyond_trained_length_extrapolates_only_slow_pairs() -> None:
    rows = pair_views(Rope("default", head_dim=64), 8192, trained_length=2048)
    counts = summarize(rows)
    slow = [r for r in rows if r.rotations_trained < 1]
    assert counts["extrapolates"] == len(slow) > 0
    assert all(r.regime == "untouched" for r in rows if r.rotations_trained >= 1)


def test_pi_interpolates_every_pair_and_never_exceeds_trained_angles() -> None:
    rows = pair_views(Rope("linear", factor=4.0), 8192, trained_length=2048)
    assert summarize(rows) == {"untouched": 0, "interpolates": 32, "extrapolates": 0}
    for r in rows:
        assert math.isclose(r.rotations_target, r.rotations_trained, rel_tol=1e-6)
        assert math.isclose(r.scale, 0.25, rel_tol=1e-6)


def test_ntk_keeps_fastest_pair_and_yarn_keeps_fast_band() -> None:
    ntk = pair_views(Rope("ntk", factor=4.0), 8192, trained_length=2048)
    assert ntk[0].regime == "untouched" and math.isclose(ntk[-1].scale, 0.25, rel_tol=1e-5)
    yarn = pair_views(Rope("yarn", factor=4.0, original_max_position_embeddings=2048), 8192)
    fast = [r for r in yarn if r.rotations_trained > 32]
    assert fast and all(r.regime == "untouched" for r in fast)
    assert summarize(yarn)["extrapolates"] == 0


def test_wavelength_formula() -> None:
    rows = pair_views(Rope("default", head_dim=8, base=10000.0), 100, trained_length=100)
    for i, r in enumerate(rows):
        assert math.isclose(r.wavelength, 2 * math.pi * 10000.0 ** (2 * i / 8), rel_tol=1e-6)


def test_needs_trained_length() -> None:
    with pytest.raises(RopeConfigError, match="trained length"):
        pair_views(Rope("linear", factor=2.0), 4096)
