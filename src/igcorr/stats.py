"""Inference over attribution maps: permutation p-values, bootstrap intervals, multiple-comparison control.

These are pure functions of already computed statistics; the permutation and bootstrap accumulators that
produce the null and replicate arrays call them at the end.

NaN convention
--------------
A NaN statistic marks an undefined component (for example the correlation of a constant input component).
Such components get NaN p-values and bounds, and NaN p-values are left out of multiple-comparison control:
:func:`benjamini_hochberg` counts only the non-NaN p-values and leaves NaN entries NaN and not rejected.
Infinite values are always an error.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
from scipy.stats import false_discovery_control

from igcorr._validation import check_fraction
from igcorr.errors import InputError, NonFiniteError, ShapeError

__all__ = ["benjamini_hochberg", "max_statistic_pvalues", "percentile_interval", "permutation_pvalues"]


def _as_float_array(value: Any, name: str) -> np.ndarray:
    """Convert an array-like or torch tensor to a float64 numpy array, rejecting non-real dtypes."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise InputError(f"{name} must be a real-valued array, got dtype {array.dtype}")
    return array.astype(np.float64, copy=False)


def _check_permutation_args(observed: Any, null: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate (observed, null); return them as float64 and the mask of defined (non-NaN) observed components."""
    obs = _as_float_array(observed, "observed")
    nul = _as_float_array(null, "null")
    if nul.ndim != obs.ndim + 1 or nul.shape[1:] != obs.shape:
        raise ShapeError(
            f"null must have shape (P, *observed.shape) = (P, {', '.join(map(str, obs.shape))}) with one row per "
            f"permutation, got null {nul.shape} for observed {obs.shape}"
        )
    if nul.shape[0] < 1:
        raise InputError("null has no permutation (P = 0); run at least one permutation (P >= 1)")
    if np.isinf(obs).any():
        raise NonFiniteError("observed contains infinite values; statistics must be finite (NaN = undefined)")
    defined = ~np.isnan(obs)
    used = nul[:, defined]
    if not np.isfinite(used).all():
        raise NonFiniteError(
            "null contains NaN or infinite values at components where observed is defined; every permutation "
            "must give a finite statistic wherever the observed statistic is finite (check the null computation)"
        )
    return obs, nul, defined


def permutation_pvalues(observed: Any, null: Any) -> np.ndarray:
    """Per-component two-sided permutation p-values (no multiple-comparison correction).

    ``p_j = (1 + #{p : |null[p, j]| >= |observed[j]|}) / (P + 1)``, which is never 0 and is exactly valid
    (P(p_j <= a) <= a) when observed and the P null rows are exchangeable under the null hypothesis.

    Parameters
    ----------
    observed : array-like, shape S (any, including ())
        The observed statistic per component, e.g. an IGC map.
    null : array-like, shape (P, *S)
        The statistic recomputed under P permutations (P >= 1).

    Returns
    -------
    numpy.ndarray of float64, shape S
        p-values in [1/(P+1), 1]; NaN where observed is NaN (the null is then not used for that component).

    Raises
    ------
    ShapeError
        If null does not have shape (P, *S).
    InputError
        If P = 0 or the arrays are not real-valued.
    NonFiniteError
        If observed has infinite values, or null is NaN/infinite where observed is defined.
    """
    obs, nul, defined = _check_permutation_args(observed, null)
    n_perm = nul.shape[0]
    exceed = (np.abs(nul) >= np.abs(obs)).sum(axis=0)
    return np.where(defined, (1.0 + exceed) / (n_perm + 1.0), np.nan)


def max_statistic_pvalues(observed: Any, null: Any) -> np.ndarray:
    """Family-wise error corrected two-sided p-values by the max-statistic permutation method.

    The family is every component where observed is defined (not NaN). For each permutation p the null
    maximum is ``m_p = max_i |null[p, i]|`` over the family, and

    ``p_fwe_j = (1 + #{p : m_p >= |observed[j]|}) / (P + 1)``.

    Rejecting every component with ``p_fwe_j <= alpha`` controls the family-wise error rate at alpha (strong
    control under subset pivotality). Since ``m_p >= |null[p, j]|``, these p-values are never smaller than
    those of :func:`permutation_pvalues`.

    Parameters
    ----------
    observed : array-like, shape S (any, including ())
        The observed statistic per component.
    null : array-like, shape (P, *S)
        The statistic under P permutations (P >= 1), computed over the same components.

    Returns
    -------
    numpy.ndarray of float64, shape S
        FWE-corrected p-values in [1/(P+1), 1]; NaN where observed is NaN.

    Raises
    ------
    ShapeError
        If null does not have shape (P, *S).
    InputError
        If P = 0 or the arrays are not real-valued.
    NonFiniteError
        If observed has infinite values, or null is NaN/infinite where observed is defined.
    """
    obs, nul, defined = _check_permutation_args(observed, null)
    n_perm = nul.shape[0]
    result = np.full(obs.shape, np.nan)
    if not defined.any():
        return result
    null_max = np.sort(np.abs(nul[:, defined]).max(axis=1))  # (P,), ascending
    # number of null maxima >= |observed_j| = P - (number strictly below it)
    exceed = n_perm - np.searchsorted(null_max, np.abs(obs[defined]), side="left")
    result[defined] = (1.0 + exceed) / (n_perm + 1.0)
    return result


def benjamini_hochberg(p_values: Any, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Benjamini–Hochberg false discovery rate control over an array of p-values of any shape.

    The adjusted p-values (BH q-values) are ``q_(i) = min_{j >= i} min(1, m p_(j) / j)`` for the sorted
    p-values ``p_(1) <= ... <= p_(m)``, computed by ``scipy.stats.false_discovery_control(method="bh")`` over
    the flattened array; they are monotone in p, equal for tied p-values, and capped at 1. Rejecting
    ``q <= alpha`` is the BH step-up procedure, which controls the FDR at alpha for independent or positively
    dependent tests.

    NaN p-values (undefined components) are ignored: m counts only the non-NaN ones, their adjusted value stays
    NaN and they are never rejected.

    Parameters
    ----------
    p_values : array-like, any shape S
        p-values in [0, 1] or NaN.
    alpha : float, default 0.05
        Target false discovery rate, strictly between 0 and 1.

    Returns
    -------
    rejected : numpy.ndarray of bool, shape S
        True where the null hypothesis is rejected (``adjusted <= alpha``).
    adjusted : numpy.ndarray of float64, shape S
        BH-adjusted p-values; NaN where the input is NaN.

    Raises
    ------
    InputError
        If alpha is not in (0, 1), or a p-value is outside [0, 1] or infinite.
    """
    level = check_fraction(alpha, "alpha", hint="the false discovery rate, e.g. 0.05")
    p = _as_float_array(p_values, "p_values")
    valid = ~np.isnan(p)
    values = p[valid]
    if ((values < 0.0) | (values > 1.0)).any():
        bad = values[(values < 0.0) | (values > 1.0)]
        raise InputError(f"p-values must lie in [0, 1] (or be NaN), got e.g. {bad[:3].tolist()}")
    adjusted = np.full(p.shape, np.nan)
    if values.size:
        adjusted[valid] = false_discovery_control(values, method="bh")
    rejected = np.zeros(p.shape, dtype=bool)
    rejected[valid] = adjusted[valid] <= level
    return rejected, adjusted


def percentile_interval(replicates: Any, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap confidence interval per component.

    The bounds are the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the replicates along axis 0
    (numpy's default linear interpolation between order statistics).

    Parameters
    ----------
    replicates : array-like, shape (B, *S)
        B >= 2 bootstrap replicates of a statistic of shape S.
    level : float, default 0.95
        Confidence level, strictly between 0 and 1.

    Returns
    -------
    low, high : numpy.ndarray of float64, shape S
        Lower and upper bounds. A component with any NaN replicate gets NaN bounds (drop or handle NaN
        replicates before calling if they should be ignored).

    Raises
    ------
    InputError
        If level is not in (0, 1), replicates is 0-d or B < 2.
    NonFiniteError
        If replicates contain infinite values.
    """
    conf = check_fraction(level, "level", hint="the confidence level, e.g. 0.95")
    reps = _as_float_array(replicates, "replicates")
    if reps.ndim == 0:
        raise InputError(
            "replicates must have shape (B, ...) with the bootstrap replicates along axis 0, got a scalar"
        )
    if reps.shape[0] < 2:
        raise InputError(f"a percentile interval needs at least 2 bootstrap replicates, got B = {reps.shape[0]}")
    if np.isinf(reps).any():
        raise NonFiniteError("replicates contain infinite values; bootstrap statistics must be finite or NaN")
    low, high = np.quantile(reps, [(1.0 - conf) / 2.0, (1.0 + conf) / 2.0], axis=0)
    return np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
