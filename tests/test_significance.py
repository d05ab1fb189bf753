"""cifar_hpc.report.significance against reference implementations: scipy's ttest_rel, statsmodels' Holm and power."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower

from cifar_hpc.report.significance import (
    ALPHA,
    MIN_PAIRS,
    POWER,
    PairedTest,
    holm,
    mde,
    paired_test,
    seeds_needed,
)

RNG = np.random.default_rng(10)


def reference_power(effect_size: float, n: int, alpha: float = ALPHA) -> float:
    """statsmodels' two-sided power. Its lower tail comes from scipy's nct cdf, NaN for large effects (n = 2's
    mde is 11.5 sd); there that tail is below 1e-14, so the upper tail alone (one-sided at alpha / 2) is it."""
    power = TTestPower().power(effect_size, nobs=n, alpha=alpha, alternative="two-sided")
    if math.isnan(power):
        power = TTestPower().power(effect_size, nobs=n, alpha=alpha / 2, alternative="larger")
    return float(power)


@pytest.mark.parametrize("n", [2, 3, 5, 10, 30])
@pytest.mark.parametrize("confidence", [0.95, 0.9])
def test_paired_test_matches_scipy_ttest_rel(n, confidence):
    # accuracies as fractions, a cell ~0.3 pp better than its reference with ~0.2 pp of paired spread
    reference = 0.93 + 0.002 * RNG.standard_normal(n)
    cell = reference + 0.003 + 0.002 * RNG.standard_normal(n)
    got = paired_test(cell, reference, confidence)
    want = stats.ttest_rel(cell, reference)
    ci = want.confidence_interval(confidence)
    d = cell - reference
    assert got.n == n
    assert got.mean == pytest.approx(d.mean(), rel=1e-12)
    assert got.sd == pytest.approx(d.std(ddof=1), rel=1e-12)
    assert (got.ci_low, got.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-9)
    if n < MIN_PAIRS:  # an interval (wide: t with 1 df), but a spread on one degree of freedom is no test
        assert got.p_value is None and not got.tested and got.note == f"{n} pairs: no test"
    else:
        assert got.p_value == pytest.approx(want.pvalue, rel=1e-9) and got.tested and got.note is None


def test_paired_test_negative_difference_is_two_sided():
    reference = [0.91, 0.92, 0.93, 0.94]
    cell = [0.905, 0.912, 0.927, 0.931]
    got = paired_test(cell, reference)
    assert got.mean < 0 and got.ci_high < 0
    assert got.p_value == pytest.approx(stats.ttest_rel(cell, reference).pvalue, rel=1e-9)


def test_paired_test_without_pairs():
    assert paired_test([], []) == PairedTest(0, None, None, None, None, None, "no seed in common with the reference")


def test_paired_test_one_pair_has_a_mean_only():
    assert paired_test([0.93], [0.92]) == PairedTest(1, pytest.approx(0.01), None, None, None, None, "1 pair: no test")


@pytest.mark.parametrize(
    "cell, reference",
    [
        ([3.0, 4.0, 5.0], [1.0, 2.0, 3.0]),  # exactly equal differences
        ([0.9123, 0.9234, 0.9345], [0.9001, 0.9112, 0.9223]),  # equal in decimal, a few ulps apart in float
    ],
)
def test_paired_test_without_spread_has_no_interval_and_no_p_value(cell, reference):
    got = paired_test(cell, reference)
    assert got.sd == 0.0 and got.p_value is None and got.note == "no spread: no test"
    assert got.ci_low is None and got.ci_high is None and got.mean == pytest.approx(cell[0] - reference[0])


def f32(values: list[float]) -> list[float]:
    """Accuracies as a float32 metric reports them (0.84 -> 0.8399999737739563)."""
    return [float(np.float32(v)) for v in values]


@pytest.mark.parametrize("images", [100, None])
def test_the_same_images_of_difference_every_seed_is_no_spread(images):
    """The issue's case: every seed 4 of 100 test images better. float32 noise gave sd 4e-8, p < 0.001;
    at the test set's resolution (or, its size unknown, at float32 precision) there is no spread."""
    cell, reference = f32([0.84, 0.88, 0.81]), f32([0.80, 0.84, 0.77])
    assert np.std(np.subtract(cell, reference), ddof=1) > 0  # what the old table tested
    got = paired_test(cell, reference, images=images)
    assert got.p_value is None and got.ci_low is None and got.note == "no spread: no test"
    assert got.sd == 0.0 and got.mean == pytest.approx(0.04, abs=1e-7)


def test_accuracies_are_compared_in_whole_test_images():
    cell, reference = f32([0.84, 0.88, 0.82]), f32([0.80, 0.84, 0.77])  # 4, 4 and 5 images of 100
    got = paired_test(cell, reference, images=100)
    want = stats.ttest_rel([84, 88, 82], [80, 84, 77])
    assert got.mean == pytest.approx(13 / 300, rel=1e-12) and got.sd == pytest.approx(np.std([4, 4, 5], ddof=1) / 100)
    assert got.p_value == pytest.approx(want.pvalue, rel=1e-12)
    assert (got.ci_low, got.ci_high) == pytest.approx(tuple(np.divide(want.confidence_interval(), 100)), rel=1e-9)


def test_paired_test_needs_pairs():
    with pytest.raises(ValueError, match="pairs"):
        paired_test([0.9, 0.91], [0.9])


P_LISTS = [
    [0.01, 0.04, 0.03, 0.005],
    [0.01, None, 0.04, 0.03, None, 0.04],  # ties and untested comparisons
    [0.2, 0.2, 0.2],  # all tied
    [0.5, 0.9, 0.7, None],  # adjusted values capped at 1
    [1e-6, 0.049, 0.051, float("nan"), 0.0, 1.0],
    [0.03],
    list(RNG.uniform(0, 0.2, size=17)),  # 17 cells of one model
]


@pytest.mark.parametrize("p_values", P_LISTS)
def test_holm_matches_statsmodels(p_values):
    got = holm(p_values)
    tested = [i for i, p in enumerate(p_values) if p is not None and not math.isnan(p)]
    want = multipletests([p_values[i] for i in tested], method="holm")[1]
    assert [got[i] for i in range(len(p_values)) if i not in tested] == [None] * (len(p_values) - len(tested))
    assert [got[i] for i in tested] == pytest.approx(list(want), rel=1e-12)
    # monotone in p, never below the raw p, capped at 1
    pairs = sorted((p_values[i], got[i]) for i in tested)
    assert all(a[1] <= b[1] for a, b in zip(pairs, pairs[1:]))
    assert all(p <= adj <= 1 for p, adj in pairs)


@pytest.mark.parametrize("p_values", [[], [None], [None, None]])
def test_holm_without_tests(p_values):
    assert holm(p_values) == p_values


@pytest.mark.parametrize("n", [2, 3, 4, 5, 10, 30, 100])
@pytest.mark.parametrize("sd", [0.1, 0.2, 2.5])
def test_mde_matches_statsmodels(n, sd):
    want = TTestPower().solve_power(effect_size=None, nobs=n, alpha=ALPHA, power=POWER, alternative="two-sided") * sd
    got = mde(n, sd)
    if n > 2:  # at n = 2 statsmodels' power is NaN in scipy's far tail and some versions' solver stops wide
        assert got == pytest.approx(want, rel=1e-5)
    # and the power at our figure is exactly the target (statsmodels' own solver stops earlier)
    assert reference_power(got / sd, n) == pytest.approx(POWER, abs=1e-9)


@pytest.mark.parametrize("alpha, power", [(0.01, 0.9), (0.1, 0.5)])
def test_mde_other_levels(alpha, power):
    want = TTestPower().solve_power(effect_size=None, nobs=6, alpha=alpha, power=power, alternative="two-sided")
    assert mde(6, 1.0, alpha, power) == pytest.approx(want, rel=1e-5)


def test_mde_edges():
    assert mde(0, 0.2) is None and mde(1, 0.2) is None and mde(5, None) is None
    assert mde(5, 0.0) is None  # no spread to say anything from: not "detects any effect"
    assert mde(3, 0.2) > mde(10, 0.2) > mde(100, 0.2) > 0  # more seeds see smaller effects
    with pytest.raises(ValueError):
        mde(5, 0.2, alpha=0.05, power=0.05)


@pytest.mark.parametrize("effect, sd", [(0.2, 0.2), (0.3, 0.2), (0.1, 0.2), (0.05, 0.25), (1.0, 0.15), (0.5, 0.5)])
def test_seeds_needed_is_the_first_n_with_enough_power(effect, sd):
    n = seeds_needed(effect, sd)
    assert n >= 2 and reference_power(effect / sd, n) >= POWER
    assert n == 2 or reference_power(effect / sd, n - 1) < POWER
    assert mde(n, sd) <= effect  # the two answers agree


def test_seeds_needed_edges():
    assert seeds_needed(0.2, None) is None
    assert seeds_needed(0.2, 0.0) is None
    assert seeds_needed(0.001, 0.2) is None  # ~ 314,000 seeds: not reached by max_n
    assert seeds_needed(0.02, 0.2, max_n=100) is None and seeds_needed(0.02, 0.2, max_n=1000) == 787
    with pytest.raises(ValueError, match="> 0"):
        seeds_needed(0.0, 0.2)
    with pytest.raises(ValueError, match="> 0"):
        seeds_needed(-0.1, 0.2)


def test_module_docstring_worked_example():
    # the figures written in cifar_hpc/report/significance.py's docstring (paired sd 0.2 pp)
    assert round(mde(3, 0.2), 3) == 0.653
    assert round(mde(10, 0.2), 3) == 0.199
    assert seeds_needed(0.2, 0.2) == 10
