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

    Maps that are vectors (D,) (voxels inside a brain mask, features) are drawn as lines over the component
    index, one panel per map stacked vertically on a shared symmetric value axis: as a one-pixel-high image
    they would be invisible.

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

    if len(maps) and all(np.ndim(m) == 1 for m in maps):
        return _plot_vectors([np.asarray(m, dtype=np.float64) for m in maps], titles, limit=limit,
                             panel_size=panel_size, suptitle=suptitle)
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


def _plot_vectors(vectors: list[np.ndarray], titles: Sequence[str] | None, *, limit: float | None,
                  panel_size: float, suptitle: str | None) -> Any:
    """One line panel per vector map (value against component index), on a shared symmetric value axis."""
    import matplotlib.pyplot as plt

    limit = symmetric_limit(np.concatenate(vectors)) if limit is None else float(limit)
    height = max(0.9, 0.6 * panel_size)
    figure, axes = plt.subplots(len(vectors), 1, figsize=(9.0, height * len(vectors) + 0.6), squeeze=False,
                                sharex=True)
    for index, (axis, values) in enumerate(zip(axes[:, 0], vectors)):
        position = np.arange(len(values))
        axis.plot(position, np.where(values >= 0, values, np.nan), color="#b2182b", linewidth=0.6)
        axis.plot(position, np.where(values < 0, values, np.nan), color="#2166ac", linewidth=0.6)
        axis.vlines(position, 0.0, values, colors=np.where(values >= 0, "#b2182b", "#2166ac"), linewidth=0.6)
        axis.axhline(0.0, color="black", linewidth=0.5)
        axis.set_ylim(-limit, limit)
        axis.set_xlim(-0.5, len(values) - 0.5)
        axis.tick_params(labelsize=7)
        if titles is not None and index < len(titles):
            axis.set_title(titles[index], fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("input component (e.g. voxel index inside the mask)")
    if suptitle:
        figure.suptitle(suptitle)
    figure.tight_layout()
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


#: above this many outputs the diagnostics are drawn as a scatter and a histogram instead of bars per output
MAX_BAR_OUTPUTS = 40


def plot_diagnostics(result: Any) -> Any:
    """Completeness panel of a result: Σ map against the correlation (and the baseline term) per output, and
    the quadrature error |Σ IG − (f(x) − mean f(b))| per output on a log scale.

    With more than :data:`MAX_BAR_OUTPUTS` outputs (voxel-wise encoding models), Σ map is plotted against
    correlation + baseline term, one point per output, and the quadrature errors as a histogram."""
    import matplotlib.pyplot as plt

    if len(result.maps) > MAX_BAR_OUTPUTS:
        return _plot_many_diagnostics(result)
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


def _plot_many_diagnostics(result: Any) -> Any:
    import matplotlib.pyplot as plt

    diagnostics = result.diagnostics
    sums = np.asarray(diagnostics["map_sum"]) if "map_sum" in diagnostics else result.map_sums
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    if "correlation" in diagnostics:
        expected = np.asarray(diagnostics["correlation"]) + np.asarray(diagnostics.get("baseline_term", 0.0))
        left.scatter(expected, sums, s=3, alpha=0.4, linewidths=0)
        low, high = float(min(expected.min(), sums.min())), float(max(expected.max(), sums.max()))
        left.plot([low, high], [low, high], color="black", linewidth=0.8)
        left.set_xlabel("correlation r + baseline term")
    else:
        left.hist(sums, bins=60)
        left.set_xlabel("Σ map")
    left.set_ylabel("Σ map")
    left.set_title(f"completeness of {len(sums)} outputs")
    if "completeness_mean" in diagnostics:
        errors = np.maximum(np.asarray(diagnostics["completeness_max"], dtype=np.float64), 1e-300)
        right.hist(np.log10(errors), bins=60)
        right.set_xlabel("log10 of the largest per-sample quadrature error of an output")
        right.set_ylabel("outputs")
        right.set_title("IG quadrature error")
    else:
        right.set_axis_off()
    figure.tight_layout()
    return figure


def plot_glass_brains(result: Any, mask: Any, *, which: str | None = None, outputs: Sequence[int] | None = None,
                      max_outputs: int = 6, threshold: float | None = None, title: str | None = None) -> Any:
    """Glass-brain views (nilearn) of a result's maps over a brain mask's voxels, one row per output.

    Parameters
    ----------
    result : Result
        Maps over the voxels inside ``mask`` (C order).
    mask : NIfTI image or path, or a fitted nilearn masker
    which : str, optional
        An extra map (e.g. ``"p_value"``) instead of the maps.
    outputs : sequence of int, optional
        Model output indices to draw (default: the first ``max_outputs``).
    threshold : float, optional
        Values below it in magnitude are not drawn (nilearn's ``threshold``).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    from igcorr.neuro import _optional

    nilearn_plotting = _optional("nilearn.plotting")
    image_module = _optional("nilearn.image")
    rows = list(range(len(result.maps)))
    if outputs is not None:
        where = {output: row for row, output in enumerate(result.outputs)}
        rows = [where[output] for output in outputs if output in where]
    rows = rows[:max_outputs]
    if not rows:
        raise ShapeError("there are no maps to draw")
    image = result.to_nifti(mask, which=which)
    if image.ndim == 3:
        image = image_module.new_img_like(image, np.asarray(image.dataobj)[..., None], copy_header=True)
    values = np.asarray(result.maps if which is None else result.extra_maps[which])
    limit = symmetric_limit(values[rows])
    figure = plt.figure(figsize=(9.0, 2.6 * len(rows)))
    for position, row in enumerate(rows):
        axis = figure.add_axes([0.0, 1 - (position + 1) / len(rows), 1.0, 1 / len(rows)])
        label = f"output {result.outputs[row]}" + (f" ({which})" if which else "")
        nilearn_plotting.plot_glass_brain(image_module.index_img(image, row), figure=figure, axes=axis,
                                          colorbar=True, plot_abs=False, cmap="RdBu_r", vmin=-limit, vmax=limit,
                                          threshold=threshold, title=label)
    if title:
        figure.suptitle(title, y=1.02)
    return figure
