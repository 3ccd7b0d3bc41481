"""The verdict statistics of grd.experiments on data with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from grd.experiments import (
    exponent_check,
    format_value,
    local_exponents,
    summarize,
    welch_test,
)


def test_an_exactly_linear_flow_has_local_exponent_one_and_a_quadratic_two():
    x = np.logspace(-3, 0, 7)
    lin = local_exponents(x, 3.0 * x)
    quad = local_exponents(x, 0.5 * x**2)
    # exact power laws: the slopes are exact up to rounding of the logarithms (≈ 1e-15)
    np.testing.assert_allclose(lin.exponents, 1.0, atol=1e-12)
    np.testing.assert_allclose(quad.exponents, 2.0, atol=1e-12)
    np.testing.assert_allclose(lin.x, np.sqrt(x[1:] * x[:-1]), rtol=1e-12)


def test_exponent_check_reads_the_weak_field_regime_only():
    # y = x / (1 + x): exponent 1 for x ≪ 1, saturating (exponent → 0) for x ≫ 1
    x = np.array([1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0])
    y = x / (1 + x)
    # local exponent between a and b is ≈ 1 − (a + b)/2 for small x: ≥ 0.95 up to x = 0.03
    weak = exponent_check(x, y, 1.0, 0.05, x_max=3e-2)
    assert weak.within and weak.exponents.size == 3 and weak.max_deviation < 0.05
    full = exponent_check(x, y, 1.0, 0.05)  # a fit across regimes fails the local test
    assert not full.within and full.max_deviation > 0.5
    assert not exponent_check(x, y, 1.0, 0.05, x_max=1e-4).within  # no pair in the window


def test_summarize_uses_student_t():
    s = summarize([1.0, 2.0, 3.0])
    # mean 2, sd 1, se 1/√3; t_{0.975, 2} = 4.302653 (tables)
    assert s.mean == pytest.approx(2.0) and s.se == pytest.approx(1 / math.sqrt(3))
    assert s.half_width == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert (s.low, s.high) == pytest.approx((2 - s.half_width, 2 + s.half_width))
    one = summarize([5.0])
    assert one.se == 0 and math.isinf(one.half_width)
    with pytest.raises(ValueError, match="finite"):
        summarize([1.0, float("nan")])


def test_welch_test_against_the_textbook_formula():
    x, y = [4.1, 5.0, 4.6, 5.3], [6.2, 5.8, 7.1]
    w = welch_test(x, y)
    vx, vy = np.var(x, ddof=1) / 4, np.var(y, ddof=1) / 3
    assert w.difference == pytest.approx(np.mean(x) - np.mean(y))
    assert w.t == pytest.approx(w.difference / math.sqrt(vx + vy))
    assert w.dof == pytest.approx((vx + vy) ** 2 / (vx**2 / 3 + vy**2 / 2))
    from scipy import stats

    assert w.p_value == pytest.approx(stats.ttest_ind(x, y, equal_var=False).pvalue, rel=1e-10)
    # identical constant samples: no evidence of a difference
    assert welch_test([1.0, 1.0], [1.0, 1.0]).p_value == 1.0
    assert welch_test([1.0, 1.0], [2.0, 2.0]).p_value == 0.0


def test_format_value_keeps_the_digits_the_uncertainty_allows():
    assert format_value(1.23456, 0.0456) == "1.235 ± 0.046"
    assert format_value(301.25, 12.3) == "301 ± 12"
    assert format_value(0.5) == "0.5"
    assert format_value(2.0, None) == "2"
