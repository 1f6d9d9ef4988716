"""Tests of igcorr.stats: BH, permutation and max-statistic p-values, percentile intervals."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

from igcorr.errors import InputError, NonFiniteError, ShapeError
from igcorr.stats import benjamini_hochberg, max_statistic_pvalues, percentile_interval, permutation_pvalues

false_discovery_control = scipy.stats.false_discovery_control  # scipy >= 1.11, which igcorr.stats uses


def step_up_rejections(p: np.ndarray, alpha: float) -> np.ndarray:
    """The textbook BH step-up rule: reject the k smallest, k = max{i : p_(i) <= i alpha / m}."""
    m = p.size
    order = np.argsort(p)
    passing = [i for i in range(1, m + 1) if p[order[i - 1]] <= i * alpha / m]
    rejected = np.zeros(m, dtype=bool)
    if passing:
        rejected[order[: max(passing)]] = True
    return rejected


# ----------------------------------------------------------------------------------------------------------
# Benjamini–Hochberg
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1,), (7,), (40,), (5, 8), (2, 3, 4)])
def test_bh_matches_scipy_with_ties(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(sum(shape))
    for trial in range(20):
        p = rng.uniform(size=shape) ** rng.uniform(0.5, 4.0)  # some small p-values, so that some are rejected
        if trial % 2:
            p = np.round(p, 2)  # many ties
        rejected, adjusted = benjamini_hochberg(p, alpha=0.1)
        assert rejected.shape == shape and adjusted.shape == shape and rejected.dtype == bool
        expected = false_discovery_control(p, axis=None, method="bh").reshape(shape)
        np.testing.assert_allclose(adjusted, expected, rtol=1e-12, atol=1e-15)
        np.testing.assert_array_equal(rejected.ravel(), step_up_rejections(p.ravel(), 0.1))
        np.testing.assert_array_equal(rejected, adjusted <= 0.1)


def test_bh_with_nan_equals_scipy_on_the_defined_p_values() -> None:
    rng = np.random.default_rng(3)
    for trial in range(10):
        p = np.round(rng.uniform(size=(3, 25)) ** 3, 3)
        p[rng.uniform(size=p.shape) < 0.2] = np.nan
        for row in p:  # one family per row, as the permutation reducer's q-values per output
            rejected, adjusted = benjamini_hochberg(row, alpha=0.05)
            defined = ~np.isnan(row)
            np.testing.assert_array_equal(adjusted[defined], false_discovery_control(row[defined], method="bh"))
            assert np.isnan(adjusted[~defined]).all() and not rejected[~defined].any()
            np.testing.assert_array_equal(rejected[defined], step_up_rejections(row[defined], 0.05))


def test_bh_adjusted_values_are_monotone_capped_and_equal_for_ties() -> None:
    p = np.random.default_rng(1).uniform(size=200)
    p[:20] = p[20]  # a block of ties
    p[-1] = 1.0
    _, adjusted = benjamini_hochberg(p)
    order = np.argsort(p, kind="stable")
    assert (np.diff(adjusted[order]) >= 0).all()
    assert (adjusted >= p).all() and (adjusted <= 1.0).all()
    assert len(set(adjusted[:21].tolist())) == 1
    assert adjusted[-1] == 1.0


def test_bh_ignores_nan() -> None:
    rng = np.random.default_rng(2)
    p = rng.uniform(size=(6, 5)) ** 3
    p[rng.uniform(size=p.shape) < 0.3] = np.nan
    rejected, adjusted = benjamini_hochberg(p, alpha=0.2)
    nan = np.isnan(p)
    assert np.isnan(adjusted[nan]).all() and not rejected[nan].any()
    sub_rejected, sub_adjusted = benjamini_hochberg(p[~nan], alpha=0.2)  # m counts only the non-NaN
    np.testing.assert_array_equal(adjusted[~nan], sub_adjusted)
    np.testing.assert_array_equal(rejected[~nan], sub_rejected)
    all_nan_rejected, all_nan_adjusted = benjamini_hochberg(np.full(3, np.nan))
    assert np.isnan(all_nan_adjusted).all() and not all_nan_rejected.any()
    empty_rejected, empty_adjusted = benjamini_hochberg(np.zeros((0, 4)))
    assert empty_rejected.shape == empty_adjusted.shape == (0, 4)


def test_bh_accepts_torch_and_scalars() -> None:
    rejected, adjusted = benjamini_hochberg(torch.tensor([0.001, 0.5, 0.02]))
    np.testing.assert_allclose(adjusted, [0.003, 0.5, 0.03])
    assert rejected.tolist() == [True, False, True]
    rejected, adjusted = benjamini_hochberg(0.01)
    assert rejected.shape == () and bool(rejected) and float(adjusted) == 0.01


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1, 1.5, float("nan"), True, "0.05", None])
def test_bh_rejects_bad_alpha(alpha: object) -> None:
    with pytest.raises(InputError, match="alpha"):
        benjamini_hochberg(np.array([0.1, 0.2]), alpha=alpha)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [-0.01, 1.01, np.inf])
def test_bh_rejects_p_values_outside_unit_interval(bad: float) -> None:
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        benjamini_hochberg(np.array([0.1, bad]))


# ----------------------------------------------------------------------------------------------------------
# Permutation and max-statistic p-values
# ----------------------------------------------------------------------------------------------------------
def brute_force_pvalues(observed: np.ndarray, null: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n_perm = null.shape[0]
    flat_obs, flat_null = observed.ravel(), null.reshape(n_perm, -1)
    per_component = np.empty(flat_obs.size)
    fwe = np.empty(flat_obs.size)
    for j in range(flat_obs.size):
        count = count_max = 0
        for p in range(n_perm):
            count += abs(flat_null[p, j]) >= abs(flat_obs[j])
            count_max += max(abs(v) for v in flat_null[p]) >= abs(flat_obs[j])
        per_component[j] = (1 + count) / (n_perm + 1)
        fwe[j] = (1 + count_max) / (n_perm + 1)
    return per_component.reshape(observed.shape), fwe.reshape(observed.shape)


@pytest.mark.parametrize("shape", [(), (5,), (3, 4)])
def test_pvalues_equal_brute_force_loops_with_ties(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(len(shape))
    null = np.round(rng.normal(size=(30, *shape)), 1)  # rounding creates ties within the null
    observed = np.round(rng.normal(scale=1.5, size=shape), 1)
    if shape:
        observed.flat[0] = -null.flat[0]  # an exact tie |observed| == |null| counts as exceeding
    per_component = permutation_pvalues(observed, null)
    fwe = max_statistic_pvalues(observed, null)
    expected_per_component, expected_fwe = brute_force_pvalues(observed, null)
    assert per_component.shape == fwe.shape == shape
    np.testing.assert_array_equal(per_component, expected_per_component)
    np.testing.assert_array_equal(fwe, expected_fwe)
    assert (fwe >= per_component).all()
    assert (per_component >= 1 / 31).all() and (fwe <= 1.0).all()


def test_max_statistic_pvalues_dominate_per_component_ones() -> None:
    rng = np.random.default_rng(11)
    for _ in range(20):
        observed = rng.normal(scale=2.0, size=(4, 6))
        null = rng.standard_t(df=3, size=(50, 4, 6))
        assert (max_statistic_pvalues(observed, null) >= permutation_pvalues(observed, null)).all()
    # torch tensors are accepted as well
    observed_t, null_t = torch.from_numpy(observed), torch.from_numpy(null)
    np.testing.assert_array_equal(max_statistic_pvalues(observed_t, null_t), max_statistic_pvalues(observed, null))


def test_nan_observed_components_get_nan_pvalues() -> None:
    rng = np.random.default_rng(5)
    observed = rng.normal(size=6)
    null = rng.normal(size=(40, 6))
    observed[2] = np.nan
    null[:, 2] = np.nan  # undefined in the null too; ignored
    null[0, 2] = 1e6  # would dominate every maximum if it were used
    per_component = permutation_pvalues(observed, null)
    fwe = max_statistic_pvalues(observed, null)
    assert np.isnan(per_component[2]) and np.isnan(fwe[2])
    keep = np.arange(6) != 2
    np.testing.assert_array_equal(per_component[keep], permutation_pvalues(observed[keep], null[:, keep]))
    np.testing.assert_array_equal(fwe[keep], max_statistic_pvalues(observed[keep], null[:, keep]))
    assert np.isnan(max_statistic_pvalues(np.full(3, np.nan), rng.normal(size=(5, 3)))).all()
    # together with BH, undefined components are simply left out
    rejected, adjusted = benjamini_hochberg(per_component)
    assert np.isnan(adjusted[2]) and not rejected[2]


@pytest.mark.parametrize("function", [permutation_pvalues, max_statistic_pvalues])
def test_permutation_argument_errors(function) -> None:
    observed = np.zeros((3, 2))
    with pytest.raises(ShapeError, match=r"\(P, 3, 2\)"):
        function(observed, np.zeros((10, 2, 3)))
    with pytest.raises(ShapeError, match="one row per permutation"):
        function(observed, np.zeros((3, 2)))
    with pytest.raises(InputError, match="P >= 1"):
        function(observed, np.zeros((0, 3, 2)))
    with pytest.raises(NonFiniteError, match="null"):
        function(observed, np.full((4, 3, 2), np.nan))
    with pytest.raises(NonFiniteError, match="observed"):
        function(np.full((3, 2), np.inf), np.zeros((4, 3, 2)))
    with pytest.raises(InputError, match="real-valued"):
        function(np.array(["a"]), np.zeros((4, 1)))


def test_permutation_pvalues_are_uniform_under_the_null() -> None:
    rng = np.random.default_rng(2024)
    n_components, n_perm = 2000, 199
    # observed and null drawn from the same distribution: they are exchangeable, as under a true null
    observed = rng.standard_t(df=5, size=n_components)
    null = rng.standard_t(df=5, size=(n_perm, n_components))
    p = permutation_pvalues(observed, null)
    # p is uniform on {1, ..., P + 1} / (P + 1); the KS test against U(0, 1) tolerates that 1/200 granularity
    assert scipy.stats.kstest(p, "uniform").pvalue > 1e-3
    assert abs(np.mean(p <= 0.05) - 0.05) < 4 * np.sqrt(0.05 * 0.95 / n_components)


def test_max_statistic_controls_the_family_wise_error_rate() -> None:
    rng = np.random.default_rng(7)
    n_experiments, n_perm, n_components, alpha = 2000, 99, 20, 0.05
    observed = rng.normal(size=(n_experiments, n_components))
    null = rng.normal(size=(n_experiments, n_perm, n_components))
    any_fwe = np.empty(n_experiments, dtype=bool)
    any_uncorrected = np.empty(n_experiments, dtype=bool)
    for e in range(n_experiments):
        any_fwe[e] = (max_statistic_pvalues(observed[e], null[e]) <= alpha).any()
        any_uncorrected[e] = (permutation_pvalues(observed[e], null[e]) <= alpha).any()
    standard_error = np.sqrt(alpha * (1 - alpha) / n_experiments)
    rate = any_fwe.mean()
    assert rate <= alpha + 3 * standard_error  # controlled (the exact rate is floor(alpha (P+1)) / (P+1) = 0.05)
    assert rate >= alpha - 4 * standard_error  # and not grossly conservative
    assert any_uncorrected.mean() > 0.4  # without correction, about 1 - 0.95^20 = 0.64 of the experiments


# ----------------------------------------------------------------------------------------------------------
# Percentile interval
# ----------------------------------------------------------------------------------------------------------
def test_percentile_interval_on_a_normal_sample() -> None:
    rng = np.random.default_rng(3)
    means, sds = np.array([2.0, -1.0, 0.0]), np.array([3.0, 0.5, 1.0])
    replicates = means + sds * rng.normal(size=(100_000, 3))
    low, high = percentile_interval(replicates, level=0.95)
    z = scipy.stats.norm.ppf(0.975)
    np.testing.assert_allclose(low, means - z * sds, atol=0.04 * sds.max())
    np.testing.assert_allclose(high, means + z * sds, atol=0.04 * sds.max())
    np.testing.assert_allclose(low, np.quantile(replicates, 0.025, axis=0), rtol=1e-12)
    inner_low, inner_high = percentile_interval(replicates, level=0.5)
    assert (low < inner_low).all() and (inner_low < inner_high).all() and (inner_high < high).all()
    coverage = np.mean((replicates >= low) & (replicates <= high), axis=0)
    np.testing.assert_allclose(coverage, 0.95, atol=0.005)


def test_percentile_interval_shapes_nan_and_errors() -> None:
    rng = np.random.default_rng(4)
    replicates = rng.normal(size=(50, 2, 3))
    replicates[7, 1, 2] = np.nan
    low, high = percentile_interval(torch.from_numpy(replicates))
    assert low.shape == high.shape == (2, 3) and low.dtype == np.float64
    assert np.isnan(low[1, 2]) and np.isnan(high[1, 2]) and np.isfinite(low[0]).all()
    low, high = percentile_interval(np.arange(11.0), level=0.8)
    assert (float(low), float(high)) == pytest.approx((1.0, 9.0))
    for level in (0.0, 1.0, 95, float("nan")):
        with pytest.raises(InputError, match="level"):
            percentile_interval(replicates, level=level)
    with pytest.raises(InputError, match="at least 2"):
        percentile_interval(np.zeros((1, 4)))
    with pytest.raises(InputError, match=r"\(B, \.\.\.\)"):
        percentile_interval(np.float64(1.0))
    with pytest.raises(NonFiniteError, match="infinite"):
        percentile_interval(np.array([0.0, np.inf, 1.0]))
