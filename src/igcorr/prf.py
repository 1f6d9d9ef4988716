"""Population receptive fields (pRFs) from attribution maps: a 2-D Gaussian fitted to every output's map.

An encoding model predicts many voxels (or neurons) from images. Each voxel's IGC map over the image says which
pixels carry the model's correlation with that voxel's measured response: its receptive field. This module
summarises every map by the parameters of a circular 2-D Gaussian

    g(x, y) = A · exp(−((x − x₀)² + (y − y₀)²) / (2σ²)),

fitted by least squares: the centre (x₀, y₀) and size σ in pixels, the amplitude A and its sign (a voxel whose
response falls with the contrast in its field has A < 0), and the explained variance of the fit, 1 − SS_res /
SS_tot, over the map's pixels. Given the geometry of the visual field (:class:`VisualField`: pixels per degree
and the fixation point) the centre is also expressed as eccentricity and polar angle, and the size in degrees.

The fit is vectorised over voxels: all maps of a block are fitted together by Levenberg–Marquardt iterations
whose 4 × 4 normal equations are solved at once (numpy), starting from the centre of mass of the map's part of
the dominant sign above a fifth of its peak. Maps are read block by block, so maps held on disk (memory-mapped)
are never loaded whole. Multi-channel maps (C, H, W) are summed over channels first.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any

import numpy as np

from igcorr._validation import check_int, check_number, check_positive_int
from igcorr.errors import InputError, ShapeError

__all__ = ["VisualField", "PRFFits", "fit_prf", "gaussian_maps", "plot_prf_centres", "plot_prf_fits"]

#: columns of :meth:`PRFFits.rows` and of the CSV file, in order
COLUMNS = ("output", "x", "y", "sigma", "amplitude", "sign", "r2", "x_deg", "y_deg", "eccentricity",
           "polar_angle", "sigma_deg", "iterations")


@dataclass(frozen=True)
class VisualField:
    """Where the image lies in the visual field.

    Parameters
    ----------
    pixels_per_degree : float
        Image pixels per degree of visual angle.
    fixation : (x, y) in pixels, optional
        The fixation point in pixel coordinates (x = column, y = row, 0 at the centre of the first pixel);
        default: the image centre.
    """

    pixels_per_degree: float
    fixation: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        check_number(self.pixels_per_degree, "pixels_per_degree", positive=True,
                     hint="image pixels per degree of visual angle")
        if self.fixation is not None:
            try:
                values = [float(value) for value in self.fixation]
            except (TypeError, ValueError):
                values = []
            if len(values) != 2:
                raise InputError(f"fixation must be two pixel coordinates (x, y), got {self.fixation!r}")
            for axis, value in zip("xy", values):
                check_number(value, f"fixation {axis}")

    def to_degrees(self, x: np.ndarray, y: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates → degrees from fixation, x to the right and y upwards (image rows grow
        downwards)."""
        fx, fy = self.fixation if self.fixation is not None else ((shape[1] - 1) / 2, (shape[0] - 1) / 2)
        return (np.asarray(x) - fx) / self.pixels_per_degree, (fy - np.asarray(y)) / self.pixels_per_degree


@dataclass
class PRFFits:
    """Fitted pRF parameters, one entry per output (all arrays of shape (K,)).

    Attributes
    ----------
    outputs : int array
        Model output index of each fit.
    x, y : float arrays
        Centre in pixel coordinates (x = column, y = row).
    sigma : float array
        Gaussian standard deviation in pixels (the pRF size).
    amplitude : float array
        Signed peak of the fitted Gaussian (in map units); ``sign`` is its sign (+1 or −1).
    r2 : float array
        Explained variance of the fit over the map's pixels (NaN for a map that is constant).
    iterations : int array
        Levenberg–Marquardt iterations until convergence.
    shape : (H, W)
        Image shape of the maps.
    field : VisualField, optional
        When given: ``x_deg``, ``y_deg``, ``eccentricity`` (degrees), ``polar_angle`` (degrees, counter-clockwise
        from the right horizontal meridian, in [0, 360)) and ``sigma_deg``.
    """

    outputs: np.ndarray
    x: np.ndarray
    y: np.ndarray
    sigma: np.ndarray
    amplitude: np.ndarray
    r2: np.ndarray
    iterations: np.ndarray
    shape: tuple[int, int]
    field: VisualField | None = None
    degrees: dict[str, np.ndarray] = dataclass_field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.field is not None and not self.degrees:
            x_deg, y_deg = self.field.to_degrees(self.x, self.y, self.shape)
            self.degrees = {
                "x_deg": x_deg, "y_deg": y_deg, "eccentricity": np.hypot(x_deg, y_deg),
                "polar_angle": np.mod(np.degrees(np.arctan2(y_deg, x_deg)), 360.0),
                "sigma_deg": self.sigma / self.field.pixels_per_degree,
            }

    @property
    def sign(self) -> np.ndarray:
        """+1 for a pRF that raises the response, −1 for one that lowers it."""
        return np.where(self.amplitude < 0, -1, 1).astype(np.int64)

    def __len__(self) -> int:
        return len(self.outputs)

    def __getattr__(self, name: str) -> np.ndarray:
        degrees = self.__dict__.get("degrees") or {}
        if name in degrees:
            return degrees[name]
        if name in ("x_deg", "y_deg", "eccentricity", "polar_angle", "sigma_deg"):
            raise AttributeError(f"{name} needs the visual-field geometry: fit_prf(..., field=VisualField(...))")
        raise AttributeError(name)

    def column(self, name: str) -> np.ndarray:
        """One column of :data:`COLUMNS` as an array (NaN for the degree columns without a visual field)."""
        if name not in COLUMNS:
            raise KeyError(f"no column {name!r}; columns: {COLUMNS}")
        if name == "sign":
            return self.sign
        if name == "output":
            return np.asarray(self.outputs)
        if name in ("x_deg", "y_deg", "eccentricity", "polar_angle", "sigma_deg"):
            return self.degrees.get(name, np.full(len(self), np.nan))
        return np.asarray(getattr(self, name))

    def rows(self) -> list[dict[str, Any]]:
        """One dict per output with every column."""
        columns = {name: self.column(name) for name in COLUMNS}
        return [{name: values[k].item() for name, values in columns.items()} for k in range(len(self))]

    def csv_text(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(COLUMNS)
        columns = [self.column(name) for name in COLUMNS]
        for k in range(len(self)):
            writer.writerow([repr(column[k].item()) if column.dtype.kind == "f" else column[k].item()
                             for column in columns])
        return buffer.getvalue()

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write the table (one row per output) as CSV."""
        from igcorr._files import atomic_write

        text = self.csv_text()
        return atomic_write(Path(path), lambda handle: handle.write(text.encode("utf-8")), "pRF table")

    def model_maps(self, rows: Sequence[int] | None = None) -> np.ndarray:
        """The fitted Gaussians as maps (n, H, W), for the fits ``rows`` (default: all)."""
        rows = np.arange(len(self)) if rows is None else np.asarray(rows, dtype=np.int64)
        params = np.stack([self.x[rows], self.y[rows], self.sigma[rows], self.amplitude[rows]], axis=1)
        return gaussian_maps(params, self.shape)


def _pixel_grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.meshgrid(np.arange(shape[0], dtype=np.float64), np.arange(shape[1], dtype=np.float64),
                             indexing="ij")
    return cols.reshape(-1), rows.reshape(-1)


def gaussian_maps(params: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Circular 2-D Gaussians A·exp(−((x − x₀)² + (y − y₀)²)/(2σ²)) on the pixel grid of ``shape``.

    Parameters
    ----------
    params : array (n, 4)
        Rows (x₀, y₀, σ, A), in pixels (x = column, y = row).
    shape : (H, W)

    Returns
    -------
    ndarray (n, H, W), float64
    """
    params = np.asarray(params, dtype=np.float64).reshape(-1, 4)
    x, y = _pixel_grid(tuple(shape))
    distance = (x[None] - params[:, :1]) ** 2 + (y[None] - params[:, 1:2]) ** 2
    values = params[:, 3:4] * np.exp(-distance / (2 * params[:, 2:3] ** 2))
    return values.reshape(len(params), *shape)


def _as_images(maps: Any) -> tuple[Any, tuple[int, int]]:
    """(K, H, W) or (K, C, H, W) maps → a K-indexable source and the image shape."""
    shape = tuple(np.shape(maps))
    if len(shape) == 3:
        return maps, (int(shape[1]), int(shape[2]))
    if len(shape) == 4:
        return maps, (int(shape[2]), int(shape[3]))
    raise ShapeError(f"pRF fits need image maps of shape (K, H, W) or (K, C, H, W), got {shape}")


def _block(maps: Any, rows: slice) -> np.ndarray:
    values = np.asarray(maps[rows], dtype=np.float64)
    if values.ndim == 4:
        values = values.sum(axis=1)
    if not np.isfinite(values).all():
        raise InputError("the maps hold NaN or infinite values; a pRF cannot be fitted to them")
    return values.reshape(len(values), -1)


def _start(values: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Centre of mass of the part of the dominant sign above a fifth of its peak, the matching σ, and the
    peak: starting points (n, 4) of the fit."""
    peak_index = np.argmax(np.abs(values), axis=1)
    sign = np.sign(values[np.arange(len(values)), peak_index])
    sign[sign == 0] = 1.0
    signed = values * sign[:, None]
    peak = signed.max(axis=1)
    weights = np.clip(signed - 0.2 * peak[:, None], 0.0, None)
    total = weights.sum(axis=1)
    empty = total <= 0
    total[empty] = 1.0
    cx = (weights * x[None]).sum(axis=1) / total
    cy = (weights * y[None]).sum(axis=1) / total
    spread = (weights * ((x[None] - cx[:, None]) ** 2 + (y[None] - cy[:, None]) ** 2)).sum(axis=1) / total
    sigma = np.sqrt(np.maximum(spread / 2, 0.25))
    cx[empty], cy[empty] = x.mean(), y.mean()
    sigma[empty] = 1.0
    return np.stack([cx, cy, sigma, sign * np.maximum(peak, 0)], axis=1)


def _fit_block(values: np.ndarray, x: np.ndarray, y: np.ndarray, max_iterations: int, tolerance: float,
               sigma_bounds: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Levenberg–Marquardt on (x₀, y₀, log σ, A) for every row of ``values`` (n, P) at once."""
    n = len(values)
    start = _start(values, x, y)
    theta = np.column_stack([start[:, 0], start[:, 1], np.log(np.clip(start[:, 2], *sigma_bounds)), start[:, 3]])
    low, high = np.log(sigma_bounds[0]), np.log(sigma_bounds[1])

    def evaluate(theta: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        dx, dy = x[None] - theta[:, :1], y[None] - theta[:, 1:2]
        inverse_variance = np.exp(-2 * theta[:, 2:3])
        squared = (dx * dx + dy * dy) * inverse_variance
        unit = np.exp(-0.5 * squared)
        return theta[:, 3:4] * unit - target, unit, dx * inverse_variance, squared

    residual, unit, _, _ = evaluate(theta, values)
    # the amplitude that is best for the starting centre and size (a linear least-squares step)
    theta[:, 3] = (unit * values).sum(axis=1) / np.maximum((unit * unit).sum(axis=1), 1e-300)
    residual, unit, scaled_x, squared = evaluate(theta, values)
    cost = (residual * residual).sum(axis=1)
    damping = np.full(n, 1e-3)
    active = np.ones(n, dtype=bool)
    iterations = np.zeros(n, dtype=np.int64)
    for _ in range(max_iterations):
        if not active.any():
            break
        rows = np.flatnonzero(active)
        r, g = residual[rows], unit[rows]
        amplitude = theta[rows, 3:4]
        dy = (y[None] - theta[rows, 1:2]) * np.exp(-2 * theta[rows, 2:3])
        jacobian = np.stack([amplitude * g * scaled_x[rows], amplitude * g * dy, amplitude * g * squared[rows], g],
                            axis=2)  # (m, P, 4)
        transposed = jacobian.transpose(0, 2, 1)
        normal = transposed @ jacobian
        gradient = (transposed @ r[:, :, None])[:, :, 0]
        diagonal = np.einsum("mii->mi", normal)
        augmented = normal + (damping[rows, None] * np.maximum(diagonal, 1e-12))[:, :, None] * np.eye(4)[None]
        try:
            step = -np.linalg.solve(augmented, gradient[:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:
            step = -np.linalg.lstsq(augmented.reshape(-1, 4), gradient.reshape(-1), rcond=None)[0].reshape(-1, 4)
        trial = theta[rows] + step
        trial[:, 2] = np.clip(trial[:, 2], low, high)
        trial_residual, trial_unit, trial_scaled, trial_squared = evaluate(trial, values[rows])
        trial_cost = (trial_residual * trial_residual).sum(axis=1)
        better = trial_cost < cost[rows]
        accepted = rows[better]
        theta[accepted] = trial[better]
        residual[accepted], unit[accepted] = trial_residual[better], trial_unit[better]
        scaled_x[accepted], squared[accepted] = trial_scaled[better], trial_squared[better]
        improvement = (cost[rows] - np.where(better, trial_cost, cost[rows])) / np.maximum(cost[rows], 1e-300)
        cost[accepted] = trial_cost[better]
        damping[rows] = np.where(better, np.maximum(damping[rows] / 3, 1e-9), np.minimum(damping[rows] * 4, 1e9))
        iterations[rows] += 1
        scale = np.maximum(np.abs(theta[rows, 3]), 1e-300)
        small_step = ((np.abs(step[:, :2]).max(axis=1) < tolerance) & (np.abs(step[:, 2]) < tolerance)
                      & (np.abs(step[:, 3]) < tolerance * scale))
        done = (small_step & (~better | (improvement < tolerance ** 2))) | (damping[rows] >= 1e9)
        active[rows[done]] = False
    return np.column_stack([theta[:, 0], theta[:, 1], np.exp(theta[:, 2]), theta[:, 3]]), iterations


def fit_prf(maps: Any, *, field: VisualField | None = None, outputs: Sequence[int] | None = None,
            block: int = 1024, max_iterations: int = 100, tolerance: float = 1e-6,
            sigma_bounds: tuple[float, float] | None = None) -> PRFFits:
    """Fit a circular 2-D Gaussian to every map: the pRF centre, size, amplitude and sign, and the explained
    variance of the fit.

    Parameters
    ----------
    maps : Result, or array (K, H, W) or (K, C, H, W)
        A result of an image model (its maps and output indices are used), or maps; a memory-mapped array is
        read ``block`` maps at a time.
    field : VisualField, optional
        The visual-field geometry: adds eccentricity, polar angle and sizes in degrees.
    outputs : sequence of int, optional
        Output index of each map (default: the result's outputs, or 0..K−1).
    block : int
        Maps fitted together (memory about 80 · block · H · W bytes).
    max_iterations : int
        Levenberg–Marquardt iterations at most per map.
    tolerance : float
        Convergence: relative decrease of the squared error below tolerance², and a centre step below
        ``tolerance`` pixels.
    sigma_bounds : (low, high), optional
        Range of σ in pixels (default: 0.2 to twice the larger image side).

    Returns
    -------
    PRFFits

    Examples
    --------
    >>> fits = fit_prf(result, field=VisualField(pixels_per_degree=4.0))  # doctest: +SKIP
    >>> fits.x, fits.y, fits.sigma, fits.eccentricity, fits.r2             # doctest: +SKIP
    """
    metadata_outputs = None
    if hasattr(maps, "maps") and hasattr(maps, "outputs"):
        metadata_outputs = list(maps.outputs)
        maps = maps.maps
    source, shape = _as_images(maps)
    count = int(np.shape(source)[0])
    if count == 0:
        raise ShapeError("there are no maps to fit")
    block = check_positive_int(block, "block", hint="maps fitted together")
    max_iterations = check_int(max_iterations, "max_iterations", minimum=1)
    tolerance = check_number(tolerance, "tolerance", positive=True)
    if field is not None and not isinstance(field, VisualField):
        raise InputError(f"field must be an igcorr.prf.VisualField, got {type(field).__name__}")
    bounds = sigma_bounds if sigma_bounds is not None else (0.2, 2.0 * max(shape))
    low = check_number(bounds[0], "sigma_bounds[0]", positive=True)
    high = check_number(bounds[1], "sigma_bounds[1]", positive=True)
    if not low < high:
        raise InputError(f"sigma_bounds must be (low, high) with low < high, got {sigma_bounds!r}")
    if outputs is None:
        outputs = metadata_outputs if metadata_outputs is not None else range(count)
    output_array = np.asarray([check_int(o, "every entry of outputs") for o in outputs], dtype=np.int64)
    if len(output_array) != count:
        raise ShapeError(f"outputs has {len(output_array)} entries but there are {count} maps")
    x, y = _pixel_grid(shape)
    params = np.empty((count, 4))
    r2 = np.empty(count)
    iterations = np.empty(count, dtype=np.int64)
    for start in range(0, count, block):
        rows = slice(start, min(start + block, count))
        values = _block(source, rows)
        fitted, used = _fit_block(values, x, y, max_iterations, tolerance, (low, high))
        model = gaussian_maps(fitted, shape).reshape(len(values), -1)
        total = ((values - values.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
        residual = ((values - model) ** 2).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            r2[rows] = np.where(total > 0, 1 - residual / total, np.nan)
        params[rows], iterations[rows] = fitted, used
    return PRFFits(output_array, params[:, 0], params[:, 1], params[:, 2], params[:, 3], r2, iterations, shape,
                   field)


# ----------------------------------------------------------------------------------------------------------
# figures
# ----------------------------------------------------------------------------------------------------------
def plot_prf_centres(fits: PRFFits, *, min_r2: float | None = None, truth: PRFFits | None = None,
                     title: str | None = None, max_points: int = 20000, seed: int = 0) -> Any:
    """The fitted centres on the visual field (or the image), coloured by pRF size.

    Parameters
    ----------
    fits : PRFFits
    min_r2 : float, optional
        Leave out fits that explain less of their map than this.
    truth : PRFFits, optional
        Known centres (simulations): drawn as small grey points, with a line to each fitted centre.
    max_points : int
        At most this many voxels are drawn (a seeded random subset).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    keep = np.ones(len(fits), dtype=bool) if min_r2 is None else np.nan_to_num(fits.r2, nan=-np.inf) >= min_r2
    chosen = np.flatnonzero(keep)
    if len(chosen) > max_points:
        chosen = np.sort(np.random.default_rng(seed).choice(chosen, max_points, replace=False))
    in_degrees = fits.field is not None

    def place(f: PRFFits) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if in_degrees:
            return f.x_deg, f.y_deg, f.sigma_deg
        return f.x, f.y, f.sigma

    x, y, size = place(fits)
    figure, axis = plt.subplots(figsize=(5.6, 4.8))
    if truth is not None:
        tx, ty, _ = place(truth)
        axis.plot(np.stack([tx[chosen], x[chosen]]), np.stack([ty[chosen], y[chosen]]), color="0.75",
                  linewidth=0.4, zorder=1)
        axis.scatter(tx[chosen], ty[chosen], s=3, color="0.55", zorder=2, label="true centre")
    shown = axis.scatter(x[chosen], y[chosen], c=size[chosen], s=6, cmap="viridis", zorder=3,
                         label="fitted centre")
    figure.colorbar(shown, ax=axis, label="pRF size σ (" + ("deg" if in_degrees else "px") + ")")
    height, width = fits.shape
    if in_degrees:
        corners_x, corners_y = fits.field.to_degrees(np.array([-0.5, width - 0.5]), np.array([-0.5, height - 0.5]),
                                                     fits.shape)
        axis.add_patch(plt.Rectangle((corners_x[0], corners_y[1]), corners_x[1] - corners_x[0],
                                     corners_y[0] - corners_y[1], fill=False, color="black", linewidth=0.8))
        axis.axhline(0, color="0.6", linewidth=0.5)
        axis.axvline(0, color="0.6", linewidth=0.5)
        axis.set_xlabel("x (deg from fixation)")
        axis.set_ylabel("y (deg from fixation)")
    else:
        axis.add_patch(plt.Rectangle((-0.5, -0.5), width, height, fill=False, color="black", linewidth=0.8))
        axis.invert_yaxis()
        axis.set_xlabel("x (pixel column)")
        axis.set_ylabel("y (pixel row)")
    axis.set_aspect("equal")
    if truth is not None:
        axis.legend(fontsize=7, loc="upper right")
    axis.set_title(title or f"pRF centres of {len(chosen)} outputs", fontsize=10)
    figure.tight_layout()
    return figure


def plot_prf_fits(maps: Any, fits: PRFFits, rows: Sequence[int], *, truth: PRFFits | None = None,
                  title: str | None = None) -> Any:
    """A few maps beside their fitted Gaussians: one row per map (the map with the fit's 1σ and 2σ circles, the
    fitted Gaussian, the residual), on the map's symmetric colour scale.

    Parameters
    ----------
    maps : Result or array (K, H, W) / (K, C, H, W)
        The maps that were fitted.
    fits : PRFFits
    rows : sequence of int
        Which maps (row numbers, not output indices).
    truth : PRFFits, optional
        Known pRFs: their 1σ circle is drawn dashed.
    """
    import matplotlib.pyplot as plt

    from igcorr.plotting import symmetric_limit

    if hasattr(maps, "maps"):
        maps = maps.maps
    rows = [int(row) for row in rows]
    if not rows:
        raise ShapeError("there are no maps to draw")
    images = np.stack([_block(maps, slice(row, row + 1)).reshape(fits.shape) for row in rows])
    models = fits.model_maps(rows)
    figure, axes = plt.subplots(len(rows), 3, figsize=(6.6, 2.2 * len(rows)), squeeze=False)
    for line, (row, image, model) in enumerate(zip(rows, images, models)):
        limit = symmetric_limit(image)
        for column, (values, label) in enumerate([(image, "map"), (model, "fit"), (image - model, "residual")]):
            axis = axes[line, column]
            axis.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if column == 0:
                for scale, style in ((1, "-"), (2, ":")):
                    axis.add_patch(plt.Circle((fits.x[row], fits.y[row]), scale * fits.sigma[row], fill=False,
                                              color="black", linestyle=style, linewidth=0.8))
                if truth is not None:
                    axis.add_patch(plt.Circle((truth.x[row], truth.y[row]), truth.sigma[row], fill=False,
                                              color="#1b9e77", linestyle="--", linewidth=0.9))
                axis.set_ylabel(f"output {fits.outputs[row]}\nR² {fits.r2[row]:.2f}", fontsize=8)
            if line == 0:
                axis.set_title(label, fontsize=9)
            axis.set_xlim(-0.5, fits.shape[1] - 0.5)
            axis.set_ylim(fits.shape[0] - 0.5, -0.5)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure
