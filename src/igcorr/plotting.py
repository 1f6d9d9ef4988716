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
