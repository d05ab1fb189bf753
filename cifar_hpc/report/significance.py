"""The statistics behind ``collect``'s comparison table: paired t-test, Holm correction, power.

Pure (numpy and scipy only), so the table's numbers are checked against reference implementations
(scipy's ``ttest_rel``, statsmodels' ``multipletests`` and ``TTestPower``) in tests/test_significance.py.

- ``paired_test``: the mean of ``d = cell - reference`` over the seeds both ran (counted in whole
  test images when the test set's size is known), its t-interval (Student's t, ``n - 1`` degrees of
  freedom) and the two-sided paired t-test's p-value; no test with fewer than ``MIN_PAIRS`` pairs or
  no spread between them (a spread that cannot be estimated is not a tiny one).
- ``holm``: Holm's step-down adjustment over one family of comparisons (one model and axes setting),
  so that "significant" holds for the family at ``ALPHA``, not for each row alone.
- ``mde`` / ``seeds_needed``: the power of the two-sided paired t-test is the probability that the
  noncentral t distribution (``n - 1`` degrees of freedom, noncentrality ``effect / sd * sqrt(n)``)
  falls beyond the critical values ``±t(1 - alpha/2, n - 1)``. ``mde`` is the effect at which that
  probability is ``POWER``; ``seeds_needed`` the smallest n at which it reaches ``POWER``.

Worked example: the seed-to-seed spread of CIFAR-10 accuracy gives paired differences with sd ≈ 0.2 pp.
With 3 seeds the table can only reliably (80% power, α = 0.05) see a difference of ≈ 0.65 pp
(``mde(3, 0.2)`` = 0.653); with 10 seeds ≈ 0.20 pp (``mde(10, 0.2)`` = 0.199), and detecting 0.2 pp
takes 10 seeds (``seeds_needed(0.2, 0.2)``). A smaller difference that is not significant is not
evidence of no effect.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

ALPHA = 0.05
POWER = 0.8


MIN_PAIRS = 2
"""Fewer pairs get no test: one difference has no spread at all. Two pairs do: the t-test on one degree
of freedom is valid (its critical t of 12.7 makes it cautious, and the MDE shows how little it can see),
so it is reported rather than withheld; the degenerate case is no spread, handled apart."""

NO_TEST = ": no test"
"""The end of a note that says why a comparison has no p-value (``1 pair: no test``)."""

FLOAT32_TOL = 1e-6
"""Relative spread below which values known only to float32 precision (``test_acc`` is a float32
metric, good to ~6e-8) are equal: used when the test set's size, hence its grid, is unknown."""


@dataclass(frozen=True)
class PairedTest:
    """A paired comparison of a cell with its reference, seed by seed (same units as the inputs)."""

    n: int  # pairs
    mean: float | None  # mean of d = cell - reference (None when n == 0)
    sd: float | None  # sample sd of d, ddof=1 (None when n < 2)
    ci_low: float | None  # t-interval of the mean (None when n < 2 or sd == 0)
    ci_high: float | None
    p_value: float | None  # two-sided paired t-test (None when n < MIN_PAIRS or sd == 0)
    note: str | None  # why a figure is missing, else None

    @property
    def tested(self) -> bool:
        """The spread could be estimated: a p-value, and the power figures (MDE, seeds) built on it."""
        return self.p_value is not None


def on_grid(values: Sequence[float], images: int | None) -> np.ndarray:
    """Accuracies (fractions) as whole test images (``images`` in the test set), else as given."""
    a = np.asarray(values, dtype=float)
    return a if images is None else np.rint(a * images)


def paired_test(
    cell: Sequence[float], reference: Sequence[float], confidence: float = 0.95, images: int | None = None
) -> PairedTest:
    """Paired t-test of ``cell[i] - reference[i]`` (same seeds, same order), as ``scipy.stats.ttest_rel``.

    With ``images`` (the test set's size) the accuracies are first counted in whole test images, the
    resolution they were measured at, so float noise (0.84 stored as 0.8399999737) is no spread. No
    test (``p_value`` None, and a ``note`` saying why) with fewer than ``MIN_PAIRS`` pairs, or when every
    pair differs by the same amount (to the grid, else to ``FLOAT32_TOL``): then no interval either."""
    if len(cell) != len(reference):
        raise ValueError(
            f"paired_test needs pairs: {len(cell)} values for the cell, {len(reference)} for the reference"
        )
    d = on_grid(cell, images) - on_grid(reference, images)  # whole images (exact integers), or fractions
    unit = 1.0 if images is None else 1.0 / images
    n = len(d)
    if n == 0:
        return PairedTest(0, None, None, None, None, None, "no seed in common with the reference")
    mean = float(d.mean()) * unit
    if n < 2:
        return PairedTest(n, mean, None, None, None, None, f"1 pair{NO_TEST}")
    sd = float(d.std(ddof=1)) * unit
    scale = max(float(np.max(np.abs(cell))), float(np.max(np.abs(reference))), 1.0)
    if sd == 0 or (images is None and sd <= FLOAT32_TOL * scale):
        return PairedTest(n, mean, 0.0, None, None, None, f"no spread{NO_TEST}")
    se = sd / math.sqrt(n)
    low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=se)
    if n < MIN_PAIRS:
        return PairedTest(n, mean, sd, float(low), float(high), None, f"{n} pairs{NO_TEST}")
    p_value = float(2 * stats.t.sf(abs(mean) / se, n - 1))
    return PairedTest(n, mean, sd, float(low), float(high), p_value, None)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values, in the input order (as statsmodels' ``multipletests(method="holm")``).

    ``None`` (or NaN: a comparison without a test) stays ``None`` in its place and does not count in
    the family size m. The i-th smallest p (i from 0) becomes ``max over j <= i of min(1, (m - j) p_(j))``:
    monotone in p, capped at 1; ties get the same adjusted value whatever their order.
    """
    tested = [(p, i) for i, p in enumerate(p_values) if p is not None and not math.isnan(p)]
    out: list[float | None] = [None] * len(p_values)
    m = len(tested)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(tested)):
        running = max(running, min(1.0, (m - rank) * float(p)))
        out[i] = running
    return out


def _check(alpha: float, power: float) -> None:
    if not (0 < alpha < power < 1):
        raise ValueError(f"need 0 < alpha < power < 1, got alpha={alpha}, power={power}")


def _power(effect_size: float, n: np.ndarray | int, alpha: float) -> np.ndarray | float:
    """Power of the two-sided paired t-test with n pairs for a true mean difference of ``effect_size`` sd."""
    df = np.asarray(n, dtype=float) - 1
    crit = stats.t.isf(alpha / 2, df)
    nc = effect_size * np.sqrt(np.asarray(n, dtype=float))
    # Both tails: a test that rejects on the wrong side still rejects (as statsmodels counts it). scipy's
    # nct.cdf returns NaN far in the lower tail (nc >~ 7.6), where the true value is below 1e-14: count 0.
    return stats.nct.sf(crit, df, nc) + np.nan_to_num(stats.nct.cdf(-crit, df, nc), nan=0.0)


def mde(n: int, sd: float | None, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """Minimum detectable effect: the smallest true mean paired difference (units of ``sd``) that a
    two-sided paired t-test with ``n`` pairs detects with probability ``power`` at level ``alpha``.

    Exact (noncentral t, solved with ``brentq``), not the normal approximation, which is far too
    optimistic at a few seeds. ``None`` when n < 2 or sd is None or 0 (no spread to say anything from).
    """
    _check(alpha, power)
    if n < 2 or not sd:
        return None
    high = 1.0
    while _power(high, n, alpha) < power:  # power(0) = alpha < power: widen until the root is bracketed
        high *= 2
    effect_size = optimize.brentq(lambda es: _power(es, n, alpha) - power, 0.0, high, xtol=1e-12, rtol=1e-12)
    return float(effect_size * sd)


def seeds_needed(
    effect: float, sd: float | None, alpha: float = ALPHA, power: float = POWER, max_n: int = 1000
) -> int | None:
    """The smallest n >= 2 (seeds paired with the reference) at which a two-sided paired t-test detects a
    true mean difference ``effect`` (> 0, units of ``sd``) with probability ``power`` at level ``alpha``.

    ``None`` when sd is None, or when even ``max_n`` seeds are not enough (the effect is too small
    for this spread to be worth a study), or sd is 0 (no spread to say anything from).
    """
    _check(alpha, power)
    if not effect > 0:
        raise ValueError(f"the effect to detect must be > 0, got {effect}")
    if not sd:
        return None
    ns = np.arange(2, max_n + 1)
    reached = np.flatnonzero(_power(effect / sd, ns, alpha) >= power)  # power grows with n
    return int(ns[reached[0]]) if len(reached) else None
