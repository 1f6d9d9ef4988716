"""Localisation of dataset-wise maps against a known truth (a mask or weights)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from igcorr._validation import check_choice
from igcorr.errors import InputError, ShapeError
from igcorr.evaluation.similarity import roc_auc

__all__ = ["Localisation", "localisation", "named_maps"]

#: how a map's values count as mass
MODES = ("absolute", "positive")


def named_maps(maps: Any, what: str = "maps") -> dict[str, np.ndarray]:
    """A map, a Result, or a dict of them → {name: float64 array}; one unnamed map is called "map"."""
    from igcorr.result import Result

    if isinstance(maps, Mapping):
        if not maps:
            raise InputError(f"{what} is an empty dict; give at least one name → map entry")
        items = list(maps.items())
    else:
        items = [("map", maps)]
    named: dict[str, np.ndarray] = {}
    for name, value in items:
        if not isinstance(name, str) or not name:
            raise InputError(f"map names must be non-empty strings, got {name!r}")
        raw = value.maps if isinstance(value, Result) else value
        try:
            array = np.asarray(raw.detach().cpu() if hasattr(raw, "detach") else raw, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise InputError(f"the map {name!r} is not an array of numbers: {error}") from error
        if array.ndim == 0 or array.size == 0:
            raise ShapeError(f"the map {name!r} has shape {array.shape}; give (K, *x_shape) or (*x_shape)")
        if not np.isfinite(array).all():
            raise InputError(f"the map {name!r} contains NaN or Inf")
        named[name] = array
    return named


@dataclass
class Localisation:
    """Localisation scores of one or several maps against one truth.

    Attributes
    ----------
    share : dict of str → ndarray (K,)
        Share of each output's map mass inside the truth: Σ m·w / (max(w) Σ m), with m = |map| ("absolute") or
        max(map, 0) ("positive") and w the truth (0/1 for a mask); NaN for a map without mass.
    auc : dict of str → ndarray (K,)
        ROC AUC of the map (|map| or the signed map) against the mask w > 0.
    mode : str
        "absolute" or "positive".
    truth_size : int
        Elements inside the truth (w > 0).
    """

    share: dict[str, np.ndarray]
    auc: dict[str, np.ndarray]
    mode: str
    truth_size: int
    metadata: dict[str, Any] = field(default_factory=dict)

    def table(self) -> list[dict[str, Any]]:
        """One row per map: ``method``, ``share_in_truth`` and ``roc_auc`` (means over outputs)."""
        return [{"method": name, "share_in_truth": float(np.nanmean(self.share[name])) if np.isfinite(
                    self.share[name]).any() else float("nan"),
                 "roc_auc": float(np.mean(self.auc[name]))} for name in self.share]


def localisation(maps: Any, truth: Any, *, mode: str = "absolute") -> Localisation:
    """How much of each map lies inside a known truth, and how well the map ranks the truth first.

    Parameters
    ----------
    maps : array (K, *x_shape) or (*x_shape), Result, or dict of name → array or Result
        Dataset-wise maps (one per output).
    truth : array of shape x_shape
        Boolean mask (True where the signal is) or non-negative weights (how much each element matters; the
        ROC curve uses the mask weight > 0). Shared by all outputs.
    mode : {"absolute", "positive"}
        Which part of a map counts: its absolute value (maps whose negative values also mean "relevant", such
        as IGC of a signed model) or only its positive part.

    Returns
    -------
    Localisation
        ``share`` and ``auc`` per map and output; ``table()`` for one row per map.

    Raises
    ------
    ShapeError
        If a map is neither of shape x_shape nor (K, *x_shape).
    InputError
        If the truth has negative or non-finite weights, or marks nothing or everything.
    """
    check_choice(mode, "mode", MODES)
    named = named_maps(maps)
    raw = np.asarray(truth.detach().cpu() if hasattr(truth, "detach") else truth)
    if raw.dtype == bool:
        weights = raw.astype(np.float64)
    else:
        try:
            weights = raw.astype(np.float64)
        except (TypeError, ValueError) as error:
            raise InputError(f"truth must be a boolean mask or an array of weights: {error}") from error
        if not np.isfinite(weights).all() or (weights < 0).any():
            raise InputError("truth weights must be finite and non-negative (0 outside the truth)")
    inside = weights > 0
    if not inside.any() or inside.all():
        raise InputError("the truth must mark some elements but not all of them")
    x_shape = weights.shape
    share: dict[str, np.ndarray] = {}
    auc: dict[str, np.ndarray] = {}
    for name, array in named.items():
        if array.shape == x_shape:
            array = array[None]
        elif array.shape[1:] != x_shape:
            raise ShapeError(f"the map {name!r} has shape {array.shape} but the truth {x_shape}; give maps of shape "
                             f"{x_shape} or (K, {', '.join(map(str, x_shape))})")
        mass = np.abs(array) if mode == "absolute" else np.clip(array, 0.0, None)
        totals = mass.reshape(len(mass), -1).sum(axis=1)
        inside_mass = (mass * weights).reshape(len(mass), -1).sum(axis=1) / weights.max()
        with np.errstate(invalid="ignore", divide="ignore"):
            share[name] = np.where(totals > 0, inside_mass / np.where(totals > 0, totals, 1.0), np.nan)
        scores = np.abs(array) if mode == "absolute" else array
        auc[name] = np.array([roc_auc(scores[k], inside) for k in range(len(array))])
    return Localisation(share, auc, mode, int(inside.sum()))
