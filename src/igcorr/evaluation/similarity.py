"""Comparing maps with each other and with a known truth: rank correlation, structural similarity, ROC AUC.

Everything is computed in float64 with numpy and scipy's rank statistics and filters.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage, stats

from igcorr._validation import check_bool, check_int, check_number
from igcorr.errors import InputError, ShapeError

__all__ = ["rank_correlation", "roc_auc", "ssim"]

#: constants of the structural similarity index (Wang et al. 2004)
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _array(value: Any, name: str) -> np.ndarray:
    try:
        array = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InputError(f"{name} must be an array of numbers: {error}") from error
    if array.size and not np.isfinite(array).all():
        raise InputError(f"{name} contains NaN or Inf; compare finite maps only")
    return array


def _pair(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    first, second = _array(a, "the first map"), _array(b, "the second map")
    if first.shape != second.shape:
        raise ShapeError(f"the two maps have shapes {first.shape} and {second.shape}; compare maps of one shape")
    return first, second


def rank_correlation(a: Any, b: Any) -> float:
    """Spearman rank correlation of two maps of the same shape, over all their elements.

    The Pearson correlation of the average ranks (ties share the mean of their ranks), as
    ``scipy.stats.spearmanr`` of the flattened maps.

    Returns
    -------
    float
        In [−1, 1]; NaN when either map is constant (no ranking).

    Raises
    ------
    ShapeError
        If the shapes differ.
    """
    first, second = _pair(a, b)
    first, second = first.ravel(), second.ravel()
    if first.size < 2 or np.ptp(first) == 0 or np.ptp(second) == 0:
        return float("nan")
    ranks_a, ranks_b = stats.rankdata(first), stats.rankdata(second)
    ranks_a -= ranks_a.mean()
    ranks_b -= ranks_b.mean()
    return float(np.dot(ranks_a, ranks_b) / np.sqrt(np.dot(ranks_a, ranks_a) * np.dot(ranks_b, ranks_b)))


def _spatial(array: np.ndarray) -> np.ndarray:
    """Drop axes of length 1; maps of one or two remaining axes, or (C, H, W), are accepted."""
    squeezed = array.reshape([size for size in array.shape if size != 1]) if array.size > 1 else array.reshape(1)
    if squeezed.ndim not in (1, 2, 3):
        raise ShapeError(
            f"structural similarity compares 1-D or 2-D maps (or (C, H, W) maps channel by channel); got a map of "
            f"shape {array.shape}"
        )
    return squeezed


def ssim(a: Any, b: Any, *, window: int = 7, normalise: bool = True, data_range: float | None = None) -> float:
    """Structural similarity (SSIM) of two 1-D or 2-D maps, in float64.

    The index of Wang et al. (2004) with a uniform ``window``: local means, sample variances and covariance
    over each window, K1 = 0.01, K2 = 0.03, and the mean over the positions whose window lies inside the map
    (the map is mirrored at its edges for the local statistics):

        SSIM = mean over windows of (2 μ_a μ_b + C1)(2 σ_ab + C2) / ((μ_a² + μ_b² + C1)(σ_a² + σ_b² + C2)),

    with C1 = (K1 L)², C2 = (K2 L)² and L the data range. Axes of length 1 are dropped first; a (C, H, W) map
    is compared channel by channel and the channel values averaged.

    Parameters
    ----------
    a, b : array-like
        Maps of one shape.
    window : int
        Side of the uniform window (odd, >= 3; reduced to the largest odd size that fits a short axis).
    normalise : bool
        Divide each map by its largest absolute value first (so maps on different scales, e.g. before and after
        a model is randomised, are compared by their structure); the data range is then 2. With False, the data
        range is ``data_range`` or, by default, the range of the two maps together.
    data_range : float, optional
        L when ``normalise`` is False.

    Returns
    -------
    float
        1 for identical maps; near 0 for unrelated ones; NaN when a window does not fit (an axis shorter than 3).

    Raises
    ------
    ShapeError
        If the shapes differ or the maps have more than two axes longer than 1 (other than (C, H, W)).
    """
    first, second = _pair(a, b)
    window = check_int(window, "window", minimum=3, hint="the side of the SSIM window")
    normalise = check_bool(normalise, "normalise")
    first, second = _spatial(first), _spatial(second)
    if normalise:
        first = first / (np.abs(first).max() or 1.0)
        second = second / (np.abs(second).max() or 1.0)
        value_range = 2.0
    elif data_range is not None:
        value_range = check_number(data_range, "data_range", positive=True)
    else:
        value_range = float(max(first.max(), second.max()) - min(first.min(), second.min())) or 1.0
    if first.ndim == 3:
        return float(np.mean([_ssim(x, y, window, value_range) for x, y in zip(first, second)]))
    return _ssim(first, second, window, value_range)


def _ssim(first: np.ndarray, second: np.ndarray, window: int, value_range: float) -> float:
    size = min(window, min(first.shape))
    size -= 1 - size % 2  # the largest odd size that fits
    if size < 3:
        return float("nan")
    count = size**first.ndim
    correction = count / (count - 1.0)  # sample (co)variances, as in the original index

    def local_mean(values: np.ndarray) -> np.ndarray:
        return ndimage.uniform_filter(values, size=size, mode="reflect")

    mean_a, mean_b = local_mean(first), local_mean(second)
    var_a = correction * (local_mean(first * first) - mean_a * mean_a)
    var_b = correction * (local_mean(second * second) - mean_b * mean_b)
    covariance = correction * (local_mean(first * second) - mean_a * mean_b)
    c1, c2 = (SSIM_K1 * value_range) ** 2, (SSIM_K2 * value_range) ** 2
    index = ((2 * mean_a * mean_b + c1) * (2 * covariance + c2)) / ((mean_a**2 + mean_b**2 + c1) * (var_a + var_b + c2))
    pad = (size - 1) // 2
    inside = tuple(slice(pad, length - pad) for length in index.shape)
    return float(index[inside].mean())


def roc_auc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve of ``scores`` against boolean ``labels`` (the Mann–Whitney statistic).

        AUC = (Σ ranks of the positives − n₊(n₊ + 1)/2) / (n₊ n₋),

    with average ranks for ties (a tie between a positive and a negative counts one half): the probability that
    a random positive element scores above a random negative one.

    Parameters
    ----------
    scores : array-like
        Any shape; flattened.
    labels : array-like of bool (or 0/1)
        Same shape as ``scores``.

    Returns
    -------
    float
        In [0, 1]; 0.5 for scores unrelated to the labels.

    Raises
    ------
    ShapeError
        If the shapes differ.
    InputError
        If the labels are all True or all False (no ROC curve), or are not 0/1.
    """
    values = _array(scores, "scores").ravel()
    raw = np.asarray(labels.detach().cpu() if hasattr(labels, "detach") else labels)
    if raw.shape != np.shape(_array(scores, "scores")):
        raise ShapeError(f"labels have shape {raw.shape} but scores {np.shape(scores)}; give one label per score")
    if raw.dtype != bool:
        if raw.size and not np.isin(raw, (0, 1)).all():
            raise InputError("labels must be booleans (or 0/1): True where the truth is")
        raw = raw.astype(bool)
    positive = raw.ravel()
    n_positive = int(positive.sum())
    n_negative = positive.size - n_positive
    if n_positive == 0 or n_negative == 0:
        raise InputError("the truth must mark some elements but not all of them: an ROC curve needs both classes")
    ranks = stats.rankdata(values)
    return float((ranks[positive].sum() - n_positive * (n_positive + 1) / 2.0) / (n_positive * n_negative))
