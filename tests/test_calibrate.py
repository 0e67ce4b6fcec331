"""The calibration's confidence bound: exact Clopper-Pearson, with no model of the tail."""

from __future__ import annotations

import math

import pytest

from vitgrade.runner.calibrate import Calibration, binomial_upper


@pytest.mark.parametrize("runs", [200, 3000])
def test_no_fails_bound_is_the_closed_form(runs: int) -> None:
    assert binomial_upper(0, runs, 0.05) == pytest.approx(1 - 0.05 ** (1 / runs), rel=1e-9)


def test_some_fails_bound_matches_the_beta_quantile() -> None:
    """2 fails in 200: the 95% upper bound is the 0.95 quantile of Beta(3, 198), 0.03114."""
    bound = binomial_upper(2, 200, 0.05)
    assert bound == pytest.approx(0.031142, abs=2e-6)
    tail = sum(math.comb(200, k) * bound**k * (1 - bound) ** (200 - k) for k in range(3))
    assert tail == pytest.approx(0.05, abs=1e-6)


def test_summary_gives_each_threshold_its_bound() -> None:
    accuracies = [1.0] * 197 + [0.9, 0.7, 0.6]
    summary = Calibration(accuracies, {"full_credit": 0.75, "half_credit": 0.5}).summary()
    assert summary["full_credit"]["observed_fails"] == 2
    assert summary["full_credit"]["fail_rate_upper_95"] == pytest.approx(0.031142, abs=2e-6)
    assert summary["half_credit"]["observed_fails"] == 0
    assert summary["half_credit"]["fail_rate_upper_95"] == pytest.approx(1 - 0.05 ** (1 / 200), abs=1e-6)
