"""The Result of a dataset-wise attribution: maps, per-output diagnostics and metadata; saving and loading."""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from igcorr._files import atomic_write
from igcorr.errors import InputError, ResultFileError

if TYPE_CHECKING:
    from igcorr.regions import RegionTable

FORMAT_VERSION = 1
#: maps larger than this are saved beside the result file as an uncompressed ``.npy`` (``<name>.maps.npy``),
#: which :func:`load` opens lazily (memory-mapped) instead of reading it into memory
EXTERNAL_MAPS_BYTES = 256 * 2**20


@dataclass
class Result:
    """Maps and diagnostics of a dataset-wise attribution.

    Attributes
    ----------
    method : str
        Name of the method that produced it ("igc", ...).
    maps : ndarray, float64, shape (K, *x_shape)
        One map per attributed output. Maps larger than the run's memory budget are held in a file on disk and
        mapped into memory (``metadata["maps_storage"] == "disk"``); a loaded result whose maps were saved
        beside it (:data:`EXTERNAL_MAPS_BYTES`) opens them the same way, read-only.
    diagnostics : dict of str → ndarray of shape (K,)
        Per-output numbers, e.g. ``correlation``, ``baseline_term``, ``map_sum``, ``completeness_mean``.
    extra_maps : dict of str → ndarray
        Further maps some methods produce (e.g. a standard deviation or p-value map).
    metadata : dict
        Everything needed to re-run: method, parameters, seed, data size, library versions, run time.
    region_inference : dict of str → ndarray
        When the run tested regions (``permutations``/``bootstrap`` with ``regions``): per-region statistics of
        shape (K, R) (``p_value``, ``p_fwe``, ``q_value``, ``low``, ``high``, ``se``) and the region ``masks``
        (R, *x_shape); the region names are in ``metadata["inference"]["regions"]``.
    """

    method: str
    maps: np.ndarray
    diagnostics: dict[str, np.ndarray] = field(default_factory=dict)
    extra_maps: dict[str, np.ndarray] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    region_inference: dict[str, np.ndarray] = field(default_factory=dict)

    # ------------------------------------------------------------------ views
    @property
    def outputs(self) -> list[int]:
        """Model output index of each map."""
        return list(self.metadata.get("outputs", range(len(self.maps))))

    @property
    def x_shape(self) -> tuple[int, ...]:
        """Shape of one input sample."""
        return tuple(self.maps.shape[1:])

    def input_maps(self, name: str | None = None) -> dict[str, np.ndarray] | np.ndarray:
        """Maps per model input: {name: (K, *input_shape)} (or one input's maps if ``name`` is given).

        For a model with one input this is ``{"input": maps}``; for several inputs (samples given as tuples or
        dicts of tensors) the attributed vector is split back into the inputs.
        """
        from igcorr.inputs import MultipleInputs

        layout = self.metadata.get("inputs") or {"kind": "SingleInput", "names": ["input"]}
        if layout.get("kind") == "MultipleInputs":
            splitter = MultipleInputs()
            splitter.names = list(layout["names"])
            splitter.shapes = [tuple(shape) for shape in layout["shapes"]]
            splitter.sizes = [int(np.prod(shape, dtype=np.int64)) for shape in splitter.shapes]
            split = splitter.split(self.maps)
        else:
            split = {layout["names"][0]: self.maps}
        if name is None:
            return split
        if name not in split:
            raise KeyError(f"no input named {name!r}; inputs: {list(split)}")
        return split[name]

    def __getitem__(self, name: str) -> "Result":
        """The result restricted to one input of a multi-input model (maps and extra maps of that input)."""
        maps = self.input_maps(name)
        extra = {}
        for key, values in self.extra_maps.items():
            extra[key] = Result(self.method, values, metadata=self.metadata).input_maps(name)
        metadata = {**self.metadata, "inputs": {"kind": "SingleInput", "names": [name],
                                                "shapes": [list(maps.shape[1:])]}, "input": name}
        return Result(self.method, maps, dict(self.diagnostics), extra, metadata)

    def _diagnostic(self, name: str) -> np.ndarray:
        if name not in self.diagnostics:
            raise AttributeError(f"the {self.method} result has no {name!r} diagnostic")
        return self.diagnostics[name]

    @property
    def correlation(self) -> np.ndarray:
        """(K,) Pearson r between the attributed score and the target of each output."""
        return self._diagnostic("correlation")

    @property
    def baseline_term(self) -> np.ndarray:
        """(K,) −Cov_n(mean f(baselines of n), y)/(σ_y σ_ŷ): Σ map = correlation + baseline_term (+ quadrature error).

        Exactly zero when all samples share their baselines.
        """
        return self._diagnostic("baseline_term")

    @property
    def map_sums(self) -> np.ndarray:
        """(K,) sum of each map over all input components."""
        return self.maps.reshape(len(self.maps), -1).sum(axis=1)

    @property
    def ig_completeness(self) -> dict[str, float]:
        """Mean and max over samples and outputs of |Σ IG − (f(x) − mean f(b))|: the quadrature error."""
        return {
            "mean": float(np.mean(self._diagnostic("completeness_mean"))),
            "max": float(np.max(self._diagnostic("completeness_max"))),
        }

    def summary(self, max_rows: int | None = 50) -> str:
        """A short markdown table of the per-output diagnostics (the first ``max_rows`` outputs, then a line
        saying how many more there are; None: all)."""
        names = [n for n in ("correlation", "baseline_term", "completeness_mean", "completeness_max")
                 if n in self.diagnostics]
        sums = self.map_sums
        lines = ["| output | Σ map | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
        shown = self.outputs if max_rows is None else self.outputs[:max_rows]
        for k, output in enumerate(shown):
            cells = [f"{sums[k]:.4f}"] + [f"{self.diagnostics[n][k]:.4g}" for n in names]
            lines.append(f"| {output} | " + " | ".join(cells) + " |")
        if len(shown) < len(self.outputs):
            lines.append(f"\n… and {len(self.outputs) - len(shown)} more outputs (summary(max_rows=None) lists all)")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"Result(method={self.method!r}, maps shape={self.maps.shape}, "
                f"diagnostics={sorted(self.diagnostics)}, extra_maps={sorted(self.extra_maps)})")

    def region_sums(self, regions: Any = None, total: Any = None) -> "RegionTable":
        """Sum every map over regions: the region's sum, its share of the map's total, its per-component mean.

        For IGC a region's sum is the part of the correlation it carries, and its share is that part relative
        to Σ map.

        Without ``regions``, the regions the run tested are used, and the table gains their inference columns
        computed in the same pass: ``p_value``, ``p_fwe`` (max-statistic family-wise), ``q_value``
        (Benjamini–Hochberg) from the permutation test, ``low``, ``high``, ``se`` from the bootstrap.

        Parameters
        ----------
        regions : bool mask (x_shape or broadcastable), stack of masks (R, ...), integer label map (0 =
            background), or dict name → mask; optional when the run tested regions
        total : float or (K,) array, optional
            Denominator of the share column (default: each map's sum).

        Returns
        -------
        RegionTable
            One row per (map row k, region) with columns output, region, sum, share, mean, size.
        """
        from igcorr.regions import region_sums

        if regions is not None:
            return region_sums(self.maps, regions, total=total)
        if "masks" not in self.region_inference:
            raise InputError("this result has no tested regions: pass regions=...")
        names = (self.metadata.get("inference") or {}).get("regions") or []
        masks = self.region_inference["masks"]
        table = region_sums(self.maps, dict(zip(names, masks.astype(bool))), total=total)
        extra = {name: values for name, values in self.region_inference.items() if name != "masks"}
        return table.with_columns(**extra) if extra else table

    def to_nifti(self, mask: Any, path: str | os.PathLike | None = None, which: str | None = None) -> Any:
        """The maps as a NIfTI image in the brain mask's space (inputs were the mask's voxels, in C order).

        Parameters
        ----------
        mask : NIfTI image or path, or a fitted nilearn masker
            With a mask image, one map gives a 3-D float32 image and several a 4-D image (x, y, z, K). With a
            fitted masker (``NiftiMasker(...).fit()``), the image is the masker's own
            ``inverse_transform`` of the (K, n_voxels) maps: 4-D float64, one volume per output, also for one
            map.
        path : path, optional
            Also written there.
        which : str, optional
            An extra map (``"p_value"``, ``"ci_low"``, ...) instead of the maps.
        """
        from igcorr.neuro import is_masker, to_nifti

        values = self.maps if which is None else self.extra_maps.get(which)
        if values is None:
            raise InputError(f"the result has no extra map {which!r}; it has {sorted(self.extra_maps)}")
        flat = values.reshape(len(values), -1)
        image = to_nifti(flat if is_masker(mask) or len(flat) > 1 else flat[0], mask)
        if path is not None:
            image.to_filename(str(path))
        return image

    def plot(self, **kwargs: Any):
        """Figure of the maps on a shared symmetric colour scale; see :func:`igcorr.plotting.plot_maps`.

        ``outputs=[...]`` (model output indices) draws those maps only.
        """
        from igcorr.plotting import plot_maps

        chosen = kwargs.pop("outputs", None)
        rows = list(range(len(self.maps)))
        if chosen is not None:
            where = {output: row for row, output in enumerate(self.outputs)}
            missing = [output for output in chosen if output not in where]
            if missing:
                raise InputError(f"the result has no map of output(s) {missing}")
            rows = [where[output] for output in chosen]
        titles = kwargs.pop("titles", [f"output {self.outputs[row]}" for row in rows])
        maps = self.maps if chosen is None else np.stack([np.asarray(self.maps[row]) for row in rows])
        return plot_maps(maps, titles=titles, **kwargs)

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> Path:
        """Write the result to an ``.npz`` file (arrays plus JSON metadata) atomically; returns the path.

        The file is written under a unique temporary name and renamed over ``path``; a failure (full disk,
        read-only folder) raises an :class:`~igcorr.errors.InputError` and leaves no partial file. Maps larger
        than :data:`EXTERNAL_MAPS_BYTES` go to ``<name>.maps.npy`` beside it (uncompressed, written in pieces),
        which :func:`load` maps into memory lazily; the ``.npz`` names that file.
        """
        path = _npz_path(path)
        header = {"format_version": FORMAT_VERSION, "method": self.method, "metadata": self.metadata}
        arrays: dict[str, np.ndarray] = {}
        if self.saves_maps_beside():
            beside = maps_path(path)
            atomic_write(beside, lambda handle: _write_npy(handle, self.maps), "result maps")
            header["maps_file"] = beside.name
        else:
            arrays["maps"] = np.asarray(self.maps)
        arrays.update({f"diagnostic/{k}": v for k, v in self.diagnostics.items()})
        arrays.update({f"extra/{k}": v for k, v in self.extra_maps.items()})
        arrays.update({f"region/{k}": v for k, v in self.region_inference.items()})
        arrays["header"] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
        return atomic_write(path, lambda handle: np.savez_compressed(handle, **arrays), "result file")

    def saves_maps_beside(self) -> bool:
        """Whether :meth:`save` writes the maps beside the result file (:func:`maps_path`): maps larger than
        :data:`EXTERNAL_MAPS_BYTES`."""
        return self.maps.nbytes > EXTERNAL_MAPS_BYTES


def _npz_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(".npz")
    return path


def maps_path(path: str | os.PathLike) -> Path:
    """Where :meth:`Result.save` puts large maps for a result saved at ``path``: ``<name>.maps.npy`` beside it."""
    path = _npz_path(path)
    return path.with_name(path.name[: -len(".npz")] + ".maps.npy")


def _write_npy(handle: Any, maps: np.ndarray, rows_per_piece: int | None = None) -> None:
    """An ``.npy`` file of ``maps`` written piece by piece (a few tens of MiB in memory at a time)."""
    maps = maps if maps.dtype == np.float64 else maps.astype(np.float64)
    np.lib.format.write_array_header_1_0(handle, {"descr": np.lib.format.dtype_to_descr(maps.dtype),
                                                  "fortran_order": False, "shape": tuple(maps.shape)})
    row_bytes = max(1, maps[0].nbytes if len(maps) else 1)
    step = rows_per_piece or max(1, (32 * 2**20) // row_bytes)
    for start in range(0, len(maps), step):
        handle.write(np.ascontiguousarray(maps[start : start + step]).tobytes())


def load(path: str | os.PathLike) -> Result:
    """Load a :class:`Result` saved with :meth:`Result.save`.

    Raises
    ------
    ResultFileError
        If the file is missing, truncated, corrupted or not an igcorr result.
    """
    path = Path(path)
    if not path.exists():
        raise ResultFileError(f"no result file at {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as error:
        raise ResultFileError(f"{path} is not a readable igcorr result (truncated or corrupted?): {error}") from error
    if "header" not in arrays:
        raise ResultFileError(f"{path} is an npz file but not an igcorr result (no header or maps)")
    try:
        header = json.loads(arrays.pop("header").tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ResultFileError(f"the metadata of {path} is corrupted: {error}") from error
    if "maps" not in arrays:
        arrays["maps"] = _external_maps(header, path)
    method, metadata = _check_header(header, path, len(arrays["maps"]))
    diagnostics = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("diagnostic/")}
    extra = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("extra/")}
    regions = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("region/")}
    return Result(method, arrays["maps"], diagnostics, extra, metadata, regions)


def _external_maps(header: Any, path: Path) -> np.ndarray:
    """The maps a result file names in its header (``maps_file``), memory-mapped read-only."""
    name = header.get("maps_file") if isinstance(header, dict) else None
    if not isinstance(name, str) or not name or Path(name).name != name:
        raise ResultFileError(f"{path} is an npz file but not an igcorr result (no header or maps)")
    beside = path.with_name(name)
    if not beside.is_file():
        raise ResultFileError(f"the maps of {path} are saved beside it in {name}, which is missing; keep the two "
                              "files together")
    try:
        maps = np.load(beside, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise ResultFileError(f"{beside} is not a readable maps file (truncated or corrupted?): {error}") from error
    if maps.dtype != np.float64 or maps.ndim < 2:
        raise ResultFileError(f"{beside} holds an array of dtype {maps.dtype} and shape {maps.shape}, not maps "
                              "(K, ...) of float64")
    return maps


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check_header(header: Any, path: Path, n_maps: int) -> tuple[str, dict[str, Any]]:
    """The method and metadata of a result file's JSON header; ResultFileError naming any field that is
    missing or of the wrong type (including the metadata entries a Result reads back)."""
    def bad(field_name: str, expected: str, value: Any) -> ResultFileError:
        shown = "" if value is None else " " + repr(value)[:60]
        return ResultFileError(
            f"the header of {path} is malformed: field {field_name!r} must be {expected}, "
            f"got {_type_name(value)}{shown}"
        )

    def missing(field_name: str) -> ResultFileError:
        return ResultFileError(f"the header of {path} is malformed: field {field_name!r} is missing")

    if not isinstance(header, dict):
        raise ResultFileError(f"the header of {path} is malformed: it must be a JSON object, got {_type_name(header)}")
    for name in ("format_version", "method", "metadata"):
        if name not in header:
            raise missing(name)
    version = header["format_version"]
    if isinstance(version, bool) or not isinstance(version, int):
        raise bad("format_version", "an integer", version)
    if version != FORMAT_VERSION:
        raise ResultFileError(f"{path} has result format {version}, this igcorr reads {FORMAT_VERSION}")
    method, metadata = header["method"], header["metadata"]
    if not isinstance(method, str) or not method:
        raise bad("method", "a non-empty string", method)
    if not isinstance(metadata, dict):
        raise bad("metadata", "a JSON object", metadata)
    outputs = metadata.get("outputs")
    if outputs is not None and (not isinstance(outputs, list) or len(outputs) != n_maps
                                or any(isinstance(o, bool) or not isinstance(o, int) for o in outputs)):
        raise bad("metadata.outputs", f"a list of {n_maps} integers (one per map)", outputs)
    layout = metadata.get("inputs")
    if layout is not None:
        if not isinstance(layout, dict):
            raise bad("metadata.inputs", "a JSON object", layout)
        names = layout.get("names")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise bad("metadata.inputs.names", "a non-empty list of strings", names)
        if layout.get("kind") == "MultipleInputs":
            shapes = layout.get("shapes")
            if (not isinstance(shapes, list) or len(shapes) != len(names) or not all(
                    isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
                    for shape in shapes)):
                raise bad("metadata.inputs.shapes", f"a list of {len(names)} shapes (lists of integers)", shapes)
    inference = metadata.get("inference")
    if inference is not None:
        if not isinstance(inference, dict):
            raise bad("metadata.inference", "a JSON object", inference)
        tested = inference.get("regions")
        if tested is not None and (not isinstance(tested, list) or not all(isinstance(r, str) for r in tested)):
            raise bad("metadata.inference.regions", "a list of region names", tested)
    seconds = metadata.get("seconds")
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float))):
        raise bad("metadata.seconds", "a number", seconds)
    return method, metadata
