"""Figures of attribution maps (matplotlib, imported lazily so the library works without a display)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from igcorr.errors import ShapeError


def symmetric_limit(maps: np.ndarray, percentile: float = 99.0, factor: float = 1.25) -> float:
    """Colour limit ``factor`` × the ``percentile``-th percentile of |maps| (the IGC paper's convention)."""
    magnitude = np.abs(np.asarray(maps, dtype=np.float64))
    limit = factor * float(np.percentile(magnitude, percentile)) if magnitude.size else 0.0
    return limit if limit > 0 else float(magnitude.max(initial=0.0)) or 1.0


def as_image(single_map: np.ndarray) -> np.ndarray:
    """A 2-D view of one map: (H, W) as is, (C, H, W) summed over channels, (D,) as one row."""
    single_map = np.asarray(single_map)
    if single_map.ndim == 1:
        return single_map[None, :]
    if single_map.ndim == 2:
        return single_map
    if single_map.ndim == 3:
        return single_map.sum(axis=0)
    raise ShapeError(f"cannot draw a map of shape {single_map.shape}: expected (D,), (H, W) or (C, H, W)")


def plot_maps(maps: np.ndarray | Sequence[np.ndarray], titles: Sequence[str] | None = None, *,
              columns: int | None = None, limit: float | None = None, cmap: str = "RdBu_r",
              panel_size: float = 1.8, colorbar: bool = True, suptitle: str | None = None) -> Any:
    """Draw maps side by side on one shared diverging colour scale centred on zero.

    Parameters
    ----------
    maps : array (K, *x_shape) or sequence of arrays
        Maps to draw; multi-channel maps are summed over channels.
    titles : sequence of str, optional
        One title per map.
    columns : int, optional
        Panels per row (default: all in one row up to 10).
    limit : float, optional
        Colour limit; default ±1.25 × the 99th percentile of |maps|.
    """
    import matplotlib.pyplot as plt

    images = [as_image(m) for m in maps]
    if not images:
        raise ShapeError("there are no maps to draw")
    limit = symmetric_limit(np.concatenate([i.ravel() for i in images])) if limit is None else float(limit)
    columns = columns or min(len(images), 10)
    rows = int(np.ceil(len(images) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(panel_size * columns + 0.8, panel_size * rows + 0.4),
                                squeeze=False)
    shown = None
    for index, axis in enumerate(axes.ravel()):
        axis.set_axis_off()
        if index >= len(images):
            continue
        shown = axis.imshow(images[index], cmap=cmap, vmin=-limit, vmax=limit, interpolation="nearest")
        if titles is not None and index < len(titles):
            axis.set_title(titles[index], fontsize=9)
    if colorbar and shown is not None:
        figure.colorbar(shown, ax=axes.ravel().tolist(), shrink=0.8, fraction=0.03)
    if suptitle:
        figure.suptitle(suptitle)
    return figure


def plot_region_bars(table: Any, value: str = "sum", *, low: str | None = "low", high: str | None = "high",
                     p_value: str | None = "p_value", alpha: float = 0.05, output_names: Sequence[str] | None = None,
                     title: str | None = None) -> Any:
    """Bar chart of a region table: one group of bars per region, one bar per output.

    Parameters
    ----------
    table : RegionTable
        From :func:`igcorr.regions.region_sums` or ``Result.region_sums``; extra columns are used when present.
    value : str
        Column drawn as bar height ("sum", "share" or "mean").
    low, high : str, optional
        Columns of a confidence interval drawn as error bars (skipped if absent).
    p_value : str, optional
        Column of p-values; bars with p < ``alpha`` get a star (skipped if absent).
    """
    import matplotlib.pyplot as plt

    columns = set(table.columns)
    regions = list(dict.fromkeys(table.column("region").tolist()))
    outputs = list(dict.fromkeys(table.column("output").tolist()))
    width = 0.8 / len(outputs)
    figure, axis = plt.subplots(figsize=(max(4.0, 1.1 * len(regions) * max(1, len(outputs)) ** 0.5 + 2), 3.6))
    heights = table.column(value)
    for position, output in enumerate(outputs):
        rows = [i for i, o in enumerate(table.column("output")) if o == output]
        centres = np.arange(len(regions)) + (position - (len(outputs) - 1) / 2) * width
        bar_heights = heights[rows]
        errors = None
        if low in columns and high in columns:
            errors = np.vstack([bar_heights - table.column(low)[rows], table.column(high)[rows] - bar_heights])
            errors = np.clip(errors, 0, None)
        label = output_names[position] if output_names is not None else f"output {output}"
        axis.bar(centres, bar_heights, width=width, yerr=errors, capsize=3, label=label)
        if p_value in columns:
            tips = np.where(bar_heights >= 0, bar_heights + (errors[1] if errors is not None else 0),
                            bar_heights - (errors[0] if errors is not None else 0))
            for centre, tip, p in zip(centres, tips, table.column(p_value)[rows]):
                if np.isfinite(p) and p < alpha:
                    axis.annotate("*", (centre, tip), ha="center", va="bottom" if tip >= 0 else "top", fontsize=12)
    axis.axhline(0.0, color="black", linewidth=0.8)
    axis.set_xticks(np.arange(len(regions)))
    axis.set_xticklabels(regions, rotation=30, ha="right")
    axis.set_ylabel(value)
    if len(outputs) > 1:
        axis.legend(fontsize=8)
    if title:
        axis.set_title(title)
    figure.tight_layout()
    return figure


def plot_diagnostics(result: Any) -> Any:
    """Completeness panel of a result: Σ map against the correlation (and the baseline term) per output, and
    the quadrature error |Σ IG − (f(x) − mean f(b))| per output on a log scale."""
    import matplotlib.pyplot as plt

    outputs = np.arange(len(result.maps))
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    diagnostics = result.diagnostics
    width = 0.27
    left.bar(outputs - width, result.map_sums, width, label="Σ map")
    if "correlation" in diagnostics:
        left.bar(outputs, diagnostics["correlation"], width, label="correlation r")
    if "baseline_term" in diagnostics:
        left.bar(outputs + width, diagnostics["baseline_term"], width, label="baseline term")
    left.axhline(0.0, color="black", linewidth=0.8)
    left.set_xticks(outputs)
    left.set_xticklabels([str(o) for o in result.outputs])
    left.set_xlabel("output")
    left.set_title("completeness: Σ map = r + baseline term")
    left.legend(fontsize=8)
    if "completeness_mean" in diagnostics:
        right.semilogy(outputs, np.maximum(diagnostics["completeness_mean"], 1e-300), "o-", label="mean")
        right.semilogy(outputs, np.maximum(diagnostics["completeness_max"], 1e-300), "s--", label="max")
        right.set_xticks(outputs)
        right.set_xticklabels([str(o) for o in result.outputs])
        right.set_xlabel("output")
        right.set_title("IG quadrature error per sample")
        right.legend(fontsize=8)
    else:
        right.set_axis_off()
    figure.tight_layout()
    return figure
