"""The paired bootstrap (ropelab.report.stats) against the exact bootstrap distribution of a small case."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ropelab import RopeConfigError
from ropelab.report.stats import MIN_UNITS, paired_bootstrap, paired_bootstrap_scores

# three documents: summed NLL and tokens of method a and of method b (the same documents)
A_NLL, A_TOK = [12.0, 30.0, 9.0], [10, 20, 5]
B_NLL, B_TOK = [11.0, 33.0, 7.5], [10, 20, 5]


def exact_distribution() -> list[float]:
    """All 27 equally likely resamples of three documents (ordered index triples), by hand: the
    token-weighted mean of a minus that of b over the resampled documents."""
    values = []
    for idx in itertools.product(range(3), repeat=3):
        a = sum(A_NLL[i] for i in idx) / sum(A_TOK[i] for i in idx)
        b = sum(B_NLL[i] for i in idx) / sum(B_TOK[i] for i in idx)
        values.append(a - b)
    return sorted(values)


def exact_quantile(values: list[float], q: float) -> float:
    """The q-quantile of the discrete distribution: the smallest value whose CDF reaches q."""
    for k, v in enumerate(values, start=1):
        if k / len(values) >= q:
            return v
    return values[-1]


def test_the_difference_is_of_token_weighted_means() -> None:
    got = paired_bootstrap(A_NLL, A_TOK, B_NLL, B_TOK, resamples=10)
    # by hand: a = 51 / 35, b = 51.5 / 35
    assert got.difference == pytest.approx(51 / 35 - 51.5 / 35, abs=1e-15)
    assert got.n == 3 and got.resamples == 10 and got.seed == 0


@pytest.mark.parametrize("level", [0.95, 0.5])
def test_percentile_interval_matches_the_exact_bootstrap_quantiles(level: float) -> None:
    """With many resamples the percentile interval lands on the exact distribution's quantiles. Each of
    the 27 outcomes has mass 1/27 and no quantile asked for sits on a CDF step (k/27 is never 0.025,
    0.25, 0.75 or 0.975), so the sample quantile is one of the 27 values: tolerance 1e-9."""
    exact = exact_distribution()
    tail = (1 - level) / 2
    got = paired_bootstrap(A_NLL, A_TOK, B_NLL, B_TOK, resamples=200_000, seed=1, level=level)
    assert got.low == pytest.approx(exact_quantile(exact, tail), abs=1e-9)
    assert got.high == pytest.approx(exact_quantile(exact, 1 - tail), abs=1e-9)
    assert got.low <= got.difference <= got.high


def test_by_hand_interval_at_95_is_the_min_and_max_of_the_27() -> None:
    """Every outcome has mass 1/27 > 2.5%: the 95% interval is [min, max] of the exact distribution."""
    exact = exact_distribution()
    got = paired_bootstrap(A_NLL, A_TOK, B_NLL, B_TOK, resamples=50_000)
    assert (got.low, got.high) == pytest.approx((exact[0], exact[-1]), abs=1e-12)
    assert got.excludes_zero == (exact[0] > 0 or exact[-1] < 0)


def test_identical_methods_differ_by_zero_with_interval_zero() -> None:
    got = paired_bootstrap(A_NLL, A_TOK, A_NLL, A_TOK, resamples=2000)
    assert (got.difference, got.low, got.high) == (0.0, 0.0, 0.0)
    assert not got.excludes_zero and got.text().endswith("not different")


def test_swapping_the_methods_negates_the_difference_and_the_interval() -> None:
    ab = paired_bootstrap(A_NLL, A_TOK, B_NLL, B_TOK, resamples=3000, seed=7)
    ba = paired_bootstrap(B_NLL, B_TOK, A_NLL, A_TOK, resamples=3000, seed=7)
    assert ba.difference == pytest.approx(-ab.difference, abs=1e-15)
    assert (ba.low, ba.high) == pytest.approx((-ab.high, -ab.low), abs=1e-12)
    assert ba.excludes_zero == ab.excludes_zero


def test_pairing_removes_the_spread_between_documents() -> None:
    """b is a uniformly 0.1 nats/token worse than a on documents of very different difficulty: the
    paired interval is the point 0.1 (no spread) and excludes zero; the documents' spread would hide it."""
    a_nll, tok = [10.0, 40.0, 70.0, 25.0], [10, 10, 10, 10]
    b_nll = [x + 1.0 for x in a_nll]
    got = paired_bootstrap(b_nll, tok, a_nll, tok, resamples=1000)
    assert got.difference == pytest.approx(0.1) and got.excludes_zero
    assert (got.low, got.high) == pytest.approx((0.1, 0.1))


def test_no_interval_below_three_units() -> None:
    got = paired_bootstrap(A_NLL[:2], A_TOK[:2], B_NLL[:2], B_TOK[:2])
    assert MIN_UNITS == 3 and got.n == 2 and got.low is None and got.high is None
    assert not got.excludes_zero and got.text().endswith("n=2 (n<3)")


def test_per_trial_scores_are_a_difference_of_means() -> None:
    a, b = [1, 1, 0, 1, 1, 0, 1, 1], [0, 1, 0, 0, 1, 0, 0, 1]
    got = paired_bootstrap_scores(a, b, resamples=5000)
    assert got.difference == pytest.approx(np.mean(a) - np.mean(b))
    assert got.low is not None and got.low <= got.difference <= got.high
    # equals the weighted form with weights 1
    same = paired_bootstrap(a, [1] * 8, b, [1] * 8, resamples=5000)
    assert (same.low, same.high) == (got.low, got.high)


@pytest.mark.parametrize(
    "args,fragment",
    [
        (([1.0, 2.0, 3.0], [1, 1, 1], [1.0, 2.0], [1, 1]), "same units"),
        (([1.0, 2.0, 3.0], [0, 0, 0], [1.0, 2.0, 3.0], [1, 1, 1]), "positive total weight"),
    ],
)
def test_bad_input_is_one_line(args, fragment: str) -> None:
    with pytest.raises(RopeConfigError, match=fragment):
        paired_bootstrap(*args)
