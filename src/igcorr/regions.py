"""Regions of interest: masks, label maps and region-level sums of attribution maps.

A dataset-wise map of shape (K, *x_shape) answers "how much does each input component carry"; scientists
usually want "how much does region R carry". This module turns every usual way of describing regions into one
boolean stack of shape (R, *x_shape) (:func:`as_region_masks`) and sums maps over it (:func:`region_sums`),
returning a small pandas-free table (:class:`RegionTable`).

Accepted region forms
---------------------
* a boolean mask (one region, named ``"region"``);
* a stack of boolean masks of shape (R, *x_shape) (regions named ``"region_0"``, ``"region_1"``, ...);
* an integer label map, 0 = background, one region per non-zero label in increasing order (named
  ``"label_<v>"``); labels must be non-negative;
* a dict ``{name: boolean mask}`` (regions in the dict's order);
* any of the arrays above as a numpy array, a torch tensor (any device) or a nested list.

Broadcasting rule
-----------------
A mask or label map is matched to x_shape from the *trailing* dimensions, exactly as numpy broadcasting does:
it may have fewer dimensions than x_shape (the missing leading ones are repeated), and each of its dimensions
must equal the matching dimension of x_shape or be 1 (repeated). So for x_shape (3, 8, 8) the masks of shape
(8, 8), (1, 8, 8) and (3, 8, 8) are accepted, and an (8, 8) mask selects the same pixels in all 3 channels.
A mask may not have more dimensions than x_shape. Whether a boolean array is one mask or a stack is decided by
its number of dimensions alone: ``ndim <= len(x_shape)`` is one mask, ``ndim == len(x_shape) + 1`` is a stack
whose masks (of shape ``array.shape[1:]``) are each broadcast by the same rule. A stack of (8, 8) masks for
x_shape (1, 8, 8) must therefore be given as (R, 1, 8, 8) (``stack[:, None]``) or as a dict.

Regions may overlap; their shares then need not add up to 1.

This module is plain numpy and stays hand-written: regions here are arrays over the model's input, of any shape
and modality, while nilearn's maskers work on NIfTI images in world space. For brain images,
:mod:`igcorr.neuro` builds such arrays with nilearn (label and sphere atlases over a brain mask's voxels).
"""

from __future__ import annotations

import csv
import io
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from igcorr._validation import check_positive_int
from igcorr.errors import InputError, NonFiniteError, ShapeError

__all__ = ["CORE_COLUMNS", "RegionTable", "as_region_masks", "region_sums"]

#: The columns every :class:`RegionTable` has, in this order.
CORE_COLUMNS: tuple[str, ...] = ("output", "region", "sum", "share", "mean", "size")

_CORE_DTYPES = {
    "output": np.int64,
    "region": np.str_,
    "sum": np.float64,
    "share": np.float64,
    "mean": np.float64,
    "size": np.int64,
}


# ----------------------------------------------------------------------------------------------------------
# Conversion helpers
# ----------------------------------------------------------------------------------------------------------
def _is_torch_tensor(value: Any) -> bool:
    torch = sys.modules.get("torch")  # a tensor can only exist if torch was imported
    return torch is not None and isinstance(value, torch.Tensor)


def _to_numpy(value: Any, what: str) -> np.ndarray:
    """Convert a numpy array, torch tensor or (nested) list to a numpy array, without copying when possible."""
    if _is_torch_tensor(value):
        return value.detach().cpu().numpy()
    if isinstance(value, (list, tuple)):
        parts = [_to_numpy(part, what) for part in value]
        try:
            return np.asarray(parts)
        except ValueError as error:  # ragged nesting
            raise ShapeError(
                f"{what} is a list of arrays of different shapes ({error}); give one array, a stack of masks of "
                "equal shape, or a dict name -> mask"
            ) from None
    return np.asarray(value)


def _check_x_shape(x_shape: Any) -> tuple[int, ...]:
    if isinstance(x_shape, (int, np.integer)) and not isinstance(x_shape, bool):
        x_shape = (x_shape,)
    try:
        items = tuple(x_shape)
    except TypeError:
        items = ()
    try:
        dims = tuple(check_positive_int(n, "x_shape entry") for n in items)
    except InputError:
        dims = ()
    if not dims:
        raise ShapeError(
            "x_shape must be a non-empty sequence of positive integers (the shape of one input, e.g. (1, 8, 8) "
            f"or (n_voxels,)), got {x_shape!r}"
        )
    return dims


def _broadcastable(shape: tuple[int, ...], x_shape: tuple[int, ...]) -> bool:
    if len(shape) > len(x_shape):
        return False
    trailing = x_shape[len(x_shape) - len(shape) :]
    return all(a == b or a == 1 for a, b in zip(shape, trailing))


def _broadcast_to_input(array: np.ndarray, x_shape: tuple[int, ...], what: str) -> np.ndarray:
    """Broadcast a mask or label map to x_shape by the trailing-dimension rule, or raise a ShapeError."""
    if array.ndim == 0:
        raise ShapeError(
            f"{what} is a scalar; give an array broadcastable to the input shape {x_shape} (e.g. of shape "
            f"{x_shape[-1:] if len(x_shape) == 1 else x_shape[-2:]} or {x_shape})"
        )
    if not _broadcastable(array.shape, x_shape):
        hint = ""
        if array.ndim >= 2 and _broadcastable(array.shape[1:], x_shape):
            hint = (
                f"; if it is a stack of {array.shape[0]} masks of shape {array.shape[1:]}, give it the shape "
                f"({array.shape[0]}, *x_shape) with size-1 dimensions where needed (e.g. stack[:, None]) or pass "
                "a dict name -> mask"
            )
        raise ShapeError(
            f"{what} has shape {array.shape}, which cannot be broadcast to the input shape {x_shape}: its "
            "dimensions are matched to the trailing dimensions of x_shape and each must equal them or be 1 "
            f"(missing leading dimensions are repeated){hint}"
        )
    return np.broadcast_to(array, x_shape)


def _bad_dtype_message(array: np.ndarray, what: str) -> str:
    return (
        f"{what} has dtype {array.dtype}; regions must be boolean masks or an integer label map. Convert a "
        "0/1 or probability mask with `mask > 0.5`, or a label map stored as floats with `labels.astype(int)`"
    )


def _mask_from_array(array: np.ndarray, x_shape: tuple[int, ...], what: str) -> np.ndarray:
    if array.dtype.kind in "iu":
        raise InputError(
            f"{what} has integer dtype {array.dtype}; masks in a dict must be boolean. Use `mask != 0` for a "
            "0/1 mask, or pass an integer label map on its own (not inside a dict)"
        )
    if array.dtype.kind != "b":
        raise InputError(_bad_dtype_message(array, what))
    return _broadcast_to_input(array, x_shape, what)


# ----------------------------------------------------------------------------------------------------------
# Region masks
# ----------------------------------------------------------------------------------------------------------
def as_region_masks(regions: Any, x_shape: Sequence[int]) -> tuple[list[str], np.ndarray]:
    """Normalise any accepted description of regions to names and a boolean stack of masks.

    Parameters
    ----------
    regions : array-like, torch.Tensor or dict
        One of (see the module documentation for the broadcasting rule):

        * boolean mask, at most ``len(x_shape)`` dimensions, broadcastable to x_shape: one region ``"region"``;
        * boolean stack of shape (R, *s) with ``len(s) == len(x_shape)`` and s broadcastable to x_shape:
          regions ``"region_0"``, ..., ``"region_<R-1>"``;
        * integer label map (any signed or unsigned integer dtype), at most ``len(x_shape)`` dimensions,
          broadcastable to x_shape, values >= 0 with 0 = background: one region per distinct non-zero label
          v, in increasing order, named ``"label_<v>"``;
        * dict ``{name (str): boolean mask}``: regions in the dict's order.
    x_shape : sequence of int
        Shape of one input (without the batch or output axis), e.g. (1, 8, 8) or (n_voxels,). An int n is read
        as (n,).

    Returns
    -------
    names : list of str
        The R region names.
    masks : numpy.ndarray of bool, shape (R, *x_shape)
        ``masks[r]`` is True on the input components that belong to region r (a fresh, writable array).

    Raises
    ------
    ShapeError
        If a mask or label map cannot be broadcast to x_shape, has too many dimensions, or x_shape is invalid.
    InputError
        If a region has no component (an all-False mask, or a label map without non-zero labels), the array is
        neither boolean nor integer, a label is negative, or a dict is empty or has non-string names.
    """
    shape = _check_x_shape(x_shape)

    if isinstance(regions, Mapping):
        if len(regions) == 0:
            raise InputError("regions is an empty dict; give at least one entry name -> boolean mask")
        names: list[str] = []
        masks = []
        for name, value in regions.items():
            if not isinstance(name, str):
                raise InputError(
                    f"region names must be strings, got {name!r} ({type(name).__name__}); use str keys"
                )
            what = f"the mask of region {name!r}"
            array = _to_numpy(value, what)
            if array.ndim > len(shape):
                raise ShapeError(
                    f"{what} has shape {array.shape} with more dimensions than the input shape {shape}; each dict "
                    "value must be one mask broadcastable to x_shape"
                )
            names.append(name)
            masks.append(_mask_from_array(array, shape, what))
        stack = np.stack(masks)
    else:
        if regions is None:
            raise InputError("regions is None; give a boolean mask, a stack of masks, a label map or a dict")
        array = _to_numpy(regions, "regions")
        kind = array.dtype.kind
        if kind == "b":
            if array.ndim == len(shape) + 1:
                if array.shape[0] == 0:
                    raise InputError("regions is a stack of zero masks; give at least one region")
                names = [f"region_{r}" for r in range(array.shape[0])]
                stack = np.stack(
                    [_broadcast_to_input(mask, shape, f"mask {r} of the stack") for r, mask in enumerate(array)]
                )
            elif array.ndim > len(shape) + 1:
                raise ShapeError(
                    f"the boolean regions array has shape {array.shape}: too many dimensions for the input shape "
                    f"{shape} (one mask has at most {len(shape)} dimensions, a stack of masks {len(shape) + 1})"
                )
            else:
                names = ["region"]
                stack = _broadcast_to_input(array, shape, "the region mask")[None]
        elif kind in "iu":
            if array.ndim > len(shape):
                raise ShapeError(
                    f"the integer label map has shape {array.shape} with more dimensions than the input shape "
                    f"{shape}; a label map has one label per component (0 = background). For a stack of masks "
                    "use a boolean array"
                )
            labels = _broadcast_to_input(array, shape, "the label map")
            if kind == "i" and array.size and array.min() < 0:
                negative = np.unique(array[array < 0])
                raise InputError(
                    f"the label map has negative labels {negative[:5].tolist()}; labels must be >= 0 with 0 = "
                    "background"
                )
            values = np.unique(array)  # the same labels as the broadcast map, without expanding it
            values = values[values != 0]
            if values.size == 0:
                raise InputError(
                    "the label map has no non-zero label, so it defines no region (0 = background); check that "
                    "the right array was passed"
                )
            names = [f"label_{int(v)}" for v in values]
            stack = labels[None] == values.reshape((-1,) + (1,) * len(shape))
        else:
            raise InputError(_bad_dtype_message(array, "regions"))

    stack = np.array(stack, dtype=bool, order="C")  # a fresh array, also when stack was a broadcast view
    empty = [names[r] for r in np.flatnonzero(~stack.reshape(len(names), -1).any(axis=1))]
    if empty:
        raise InputError(
            f"region(s) {empty} have no component (their mask is all False after broadcasting to {shape}); "
            "remove them or fix the masks"
        )
    return names, stack


# ----------------------------------------------------------------------------------------------------------
# Region table
# ----------------------------------------------------------------------------------------------------------
def _format_cell(value: Any, floatfmt: str) -> str:
    if isinstance(value, float):
        return format(value, floatfmt)
    return str(value)


def _python_scalar(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


class RegionTable:
    """A small column table of region-level results, one row per (output, region) pair.

    Columns are 1-D numpy arrays of equal length n_rows, read-only. The core columns, always present and first,
    are:

    ========  =======  ==============================================================================
    column    dtype    meaning
    ========  =======  ==============================================================================
    output    int64    output index k (row of the (K, *x_shape) maps)
    region    str      region name
    sum       float64  sum of the map over the region's components
    share     float64  sum / total (the map's sum over all components unless a total was given); NaN
                       where the total is 0
    mean      float64  sum / size, the mean attribution per component of the region
    size      int64    number of input components in the region (after broadcasting)
    ========  =======  ==============================================================================

    Extra columns (confidence bounds, p-values, ...) are added with :meth:`with_columns`. Tables made by
    :func:`region_sums` list rows output-major: all regions of output 0, then of output 1, ...

    Parameters
    ----------
    columns : mapping of str to array-like
        The columns; must contain the core columns, each of shape (n_rows,). Other columns follow in the
        mapping's order and may be numeric, boolean or str.
    """

    def __init__(self, columns: Mapping[str, Any]) -> None:
        missing = [name for name in CORE_COLUMNS if name not in columns]
        if missing:
            raise InputError(f"a RegionTable needs the columns {list(CORE_COLUMNS)}; missing {missing}")
        ordered = list(CORE_COLUMNS) + [name for name in columns if name not in CORE_COLUMNS]
        n_rows = None
        data: dict[str, np.ndarray] = {}
        for name in ordered:
            if not isinstance(name, str):
                raise InputError(f"column names must be strings, got {name!r}")
            array = _to_numpy(columns[name], f"column {name!r}")
            if name in _CORE_DTYPES:
                array = array.astype(_CORE_DTYPES[name])
            elif array.dtype.kind not in "biufU":
                raise InputError(
                    f"column {name!r} has dtype {array.dtype}; columns must be numeric, boolean or str arrays"
                )
            if array.ndim != 1:
                raise ShapeError(f"column {name!r} must be one-dimensional, got shape {array.shape}")
            if n_rows is None:
                n_rows = array.shape[0]
            elif array.shape[0] != n_rows:
                raise ShapeError(f"column {name!r} has {array.shape[0]} rows but column 'output' has {n_rows}")
            array = array.copy()
            array.setflags(write=False)
            data[name] = array
        self._columns = data
        self._n_rows = int(n_rows or 0)

    # -- access ------------------------------------------------------------------------------------------
    @property
    def columns(self) -> tuple[str, ...]:
        """Column names, core columns first."""
        return tuple(self._columns)

    def column(self, name: str) -> np.ndarray:
        """Return the column ``name`` as a read-only numpy array of shape (n_rows,)."""
        try:
            return self._columns[name]
        except (KeyError, TypeError):
            raise InputError(f"no column {name!r}; the columns are {list(self._columns)}") from None

    def __len__(self) -> int:
        return self._n_rows

    def rows(self) -> list[dict[str, Any]]:
        """Return the rows as a list of dicts column name -> Python scalar (int, float, str or bool)."""
        names = list(self._columns)
        values = [self._columns[name].tolist() for name in names]
        return [dict(zip(names, row)) for row in zip(*values)]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows())

    def to_dict(self) -> dict[str, np.ndarray]:
        """Return a dict column name -> writable copy of the column (e.g. for ``pandas.DataFrame(...)``)."""
        return {name: array.copy() for name, array in self._columns.items()}

    # -- derived tables ----------------------------------------------------------------------------------
    def _grid(self) -> tuple[int, int] | None:
        """(K, R) when the rows are the full output-major grid of K outputs by R regions, else None."""
        n = self._n_rows
        if n == 0:
            return None
        outputs, regions = self._columns["output"], self._columns["region"]
        n_regions = int(np.argmax(outputs != outputs[0])) or n
        if n % n_regions:
            return None
        n_outputs = n // n_regions
        grid_outputs = outputs.reshape(n_outputs, n_regions)
        grid_regions = regions.reshape(n_outputs, n_regions)
        if (grid_outputs == grid_outputs[:, :1]).all() and (grid_regions == grid_regions[:1]).all():
            if len(np.unique(grid_outputs[:, 0])) == n_outputs:
                return n_outputs, n_regions
        return None

    def with_columns(self, **arrays: Any) -> RegionTable:
        """Return a new table with extra columns added (or earlier extra columns replaced).

        Parameters
        ----------
        **arrays : array-like
            Each value is one of: an array of shape (n_rows,) in the table's row order; an array of shape
            (K, R) indexed [output, region] when the table is the full output-major grid made by
            :func:`region_sums` (it is flattened in row order); or a scalar, repeated on every row.
            Core columns cannot be replaced.

        Returns
        -------
        RegionTable
            A new table; this one is unchanged.
        """
        protected = [name for name in arrays if name in CORE_COLUMNS]
        if protected:
            raise InputError(
                f"cannot replace the core column(s) {protected}; give the new column(s) another name"
            )
        new = dict(self._columns)
        for name, value in arrays.items():
            array = _to_numpy(value, f"column {name!r}")
            if array.ndim == 0:
                array = np.full(self._n_rows, array.item())
            elif array.ndim == 2:
                grid = self._grid()
                if grid is None:
                    raise ShapeError(
                        f"column {name!r} has shape {array.shape}, but a 2-D column is only accepted for a table "
                        f"holding the full output-major grid of outputs x regions, which this one is not; give "
                        f"shape ({self._n_rows},)"
                    )
                if array.shape != grid:
                    raise ShapeError(
                        f"column {name!r} has shape {array.shape}; a 2-D column must have shape "
                        f"(n_outputs, n_regions) = {grid}, or give shape ({self._n_rows},)"
                    )
                array = array.reshape(-1)
            elif array.ndim != 1 or array.shape[0] != self._n_rows:
                raise ShapeError(
                    f"column {name!r} has shape {array.shape}; give one value per row (shape ({self._n_rows},)), "
                    "an (n_outputs, n_regions) array, or a scalar"
                )
            new[name] = array
        return RegionTable(new)

    # -- output ------------------------------------------------------------------------------------------
    def to_csv(self, path: str | os.PathLike[str]) -> None:
        """Write the table to ``path`` as CSV with a header row.

        Floats are written with ``repr`` so they read back exactly (``float(text)``); NaN is written ``nan``.
        """
        with open(path, "w", newline="", encoding="utf-8") as handle:
            handle.write(self.csv_text())

    def csv_text(self) -> str:
        """The table as CSV text (see :meth:`to_csv`)."""
        buffer = io.StringIO(newline="")
        writer = csv.writer(buffer)
        writer.writerow(self.columns)
        for row in self.rows():
            writer.writerow([repr(v) if isinstance(v, float) else v for v in row.values()])
        return buffer.getvalue()

    def _markdown_lines(self, row_indices: Sequence[int | None], floatfmt: str) -> list[str]:
        names = list(self._columns)
        numeric = [self._columns[name].dtype.kind in "iuf" for name in names]
        lists = {name: self._columns[name].tolist() for name in names}
        body = []
        for index in row_indices:
            if index is None:
                body.append(["…"] * len(names))
            else:
                body.append([_format_cell(lists[name][index], floatfmt).replace("|", "\\|") for name in names])
        widths = [max([len(name), 3] + [len(row[c]) for row in body]) for c, name in enumerate(names)]

        def line(cells: Sequence[str]) -> str:
            padded = [
                cell.rjust(width) if is_num else cell.ljust(width)
                for cell, width, is_num in zip(cells, widths, numeric)
            ]
            return "| " + " | ".join(padded) + " |"

        rule = ["-" * (w - 1) + ":" if is_num else "-" * w for w, is_num in zip(widths, numeric)]
        return [line(names), "| " + " | ".join(rule) + " |"] + [line(row) for row in body]

    def to_markdown(self, floatfmt: str = ".6g") -> str:
        """Return the whole table as a GitHub-flavoured markdown table (numbers right-aligned).

        Parameters
        ----------
        floatfmt : str
            Format spec for float cells (``format(value, floatfmt)``), default ``".6g"``.
        """
        return "\n".join(self._markdown_lines(range(self._n_rows), floatfmt))

    def __repr__(self) -> str:
        n = self._n_rows
        shown: list[int | None] = list(range(n)) if n <= 20 else [*range(10), None, *range(n - 10, n)]
        header = f"RegionTable({n} rows x {len(self._columns)} columns)"
        return "\n".join([header, *self._markdown_lines(shown, ".4g")])


# ----------------------------------------------------------------------------------------------------------
# Region sums
# ----------------------------------------------------------------------------------------------------------
def region_sums(maps: Any, regions: Any, total: Any = None) -> RegionTable:
    """Sum attribution maps over regions: per output and region, the sum, share, mean and size.

    Parameters
    ----------
    maps : array-like or torch.Tensor, shape (K, *x_shape)
        K attribution maps (e.g. ``Result.maps``), real-valued and finite. A single map of shape x_shape must be
        given as ``maps[None]``.
    regions : any form accepted by :func:`as_region_masks`
        Masks, a stack, a label map or a dict, broadcast to x_shape = ``maps.shape[1:]``. The output of
        :func:`as_region_masks` can be passed back as ``dict(zip(names, masks))``.
    total : float or array-like of shape (K,), optional
        Denominator of the share column, per output. Default: each map's sum over all its components (for a
        complete method such as IGC this equals the explained correlation). Pass e.g. the measured correlation
        to express shares of it instead.

    Returns
    -------
    RegionTable
        K * R rows, output-major (all regions of output 0 first), with columns output, region, sum, share
        (= sum / total, NaN without any warning where total is 0; attributions are signed so shares may be
        negative or exceed 1), mean (= sum / size) and size (components in the region).

    Raises
    ------
    ShapeError
        If maps has fewer than 2 dimensions, a region cannot be broadcast to its x_shape, or total has the
        wrong shape.
    InputError
        If maps is not real-valued, or a region is invalid (see :func:`as_region_masks`).
    NonFiniteError
        If maps or total contain NaN or infinite values.
    """
    values = _to_numpy(maps, "maps")
    if values.dtype.kind not in "biuf":
        raise InputError(f"maps must be a real-valued array, got dtype {values.dtype}")
    if values.ndim < 2:
        raise ShapeError(
            f"maps must have shape (K, *x_shape) with a leading output axis, got shape {values.shape}; for a "
            "single map use maps[None]"
        )
    values = values.astype(np.float64, copy=False)
    n_outputs, x_shape = values.shape[0], values.shape[1:]
    flat = values.reshape(n_outputs, -1)
    bad = ~np.isfinite(flat)
    if bad.any():
        raise NonFiniteError(
            f"maps contain {int(bad.sum())} NaN or infinite value(s); region sums would be undefined. Replace "
            "them first, e.g. with numpy.nan_to_num(maps) if undefined components should count as 0"
        )

    names, masks = as_region_masks(regions, x_shape)
    flat_masks = masks.reshape(len(names), -1)
    sums = np.stack([flat[:, mask].sum(axis=1) for mask in flat_masks], axis=1)  # (K, R), plain float64 sums
    sizes = flat_masks.sum(axis=1).astype(np.int64)  # (R,)

    if total is None:
        totals = flat.sum(axis=1)
    else:
        totals = _to_numpy(total, "total")
        if totals.dtype.kind not in "biuf":
            raise InputError(f"total must be real-valued, got dtype {totals.dtype}")
        totals = totals.astype(np.float64)
        if totals.ndim == 0:
            totals = np.full(n_outputs, float(totals))
        elif totals.shape != (n_outputs,):
            raise ShapeError(f"total must be a scalar or have shape (K,) = ({n_outputs},), got {totals.shape}")
        if not np.isfinite(totals).all():
            raise NonFiniteError("total contains NaN or infinite values; give finite totals")
    nonzero = totals != 0
    shares = np.full_like(sums, np.nan)
    np.divide(sums, totals[:, None], out=shares, where=nonzero[:, None])

    n_regions = len(names)
    return RegionTable(
        {
            "output": np.repeat(np.arange(n_outputs), n_regions),
            "region": np.tile(np.asarray(names, dtype=np.str_), n_outputs),
            "sum": sums.reshape(-1),
            "share": shares.reshape(-1),
            "mean": (sums / sizes).reshape(-1),
            "size": np.tile(sizes, n_outputs),
        }
    )
