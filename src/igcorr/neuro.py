"""Brain-imaging helpers: voxel inputs inside a brain mask, maps as NIfTI images, regions from label atlases.

Inputs of a brain model are usually the voxels inside a 3-D brain mask, flattened to vectors of n_voxels
values in the mask's C order (``data[mask]`` with numpy). These helpers move between that vector space and
NIfTI images in the mask's space. They need the optional dependencies ``nibabel`` and ``nilearn``:
``pip install "igcorr[neuro]"``; both are imported only when a helper is called.

The image work is nilearn's: masking images to voxel vectors (:func:`nilearn.masking.apply_mask`), putting
vectors back into images (:func:`nilearn.masking.unmask`), reading a label atlas at the mask's voxels, and the
spheres of :func:`sphere_atlas` (the voxel neighbourhoods that ``nilearn.maskers.NiftiSpheresMasker`` averages).
Three small steps stay here, each for a reason:

* :func:`mask_array` reads every non-zero voxel as inside. nilearn refuses a mask holding more than two values,
  so igcorr binarises the mask itself and hands nilearn the binary image.
* :func:`atlas_regions` splits the masked label vector into one boolean mask per label; nilearn's label maskers
  average signals over the regions and give no per-region voxel masks.
* :func:`sphere_atlas` gives a voxel claimed by several spheres to the first of them (nilearn keeps overlaps).

:func:`to_nifti` also takes a fitted nilearn masker and then returns exactly what the masker's own
``inverse_transform`` returns. :func:`write_maps` writes a result's maps (and its p-value, q-value and interval
maps) as NIfTI files named in the style of BIDS derivatives and NiMARE (``<value>_<key>-<label>...``), each with
a JSON sidecar recording the method and its parameters.
"""

from __future__ import annotations

import gzip
import importlib
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from igcorr._validation import check_int, check_number
from igcorr.errors import InputError, ShapeError

_INSTALL = 'pip install "igcorr[neuro]"'


def _optional(module: str) -> Any:
    """Import an optional brain-imaging dependency, or raise an InputError naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        package = module.split(".")[0]
        raise InputError(f"brain-imaging helpers need {package}: {_INSTALL}") from error


def _nibabel() -> Any:
    return _optional("nibabel")


def load_image(image: Any) -> Any:
    """A NIfTI image from a path or an image object."""
    nibabel = _nibabel()
    if isinstance(image, (str, os.PathLike)):
        if not os.path.exists(image):
            raise InputError(f"no image at {image}")
        return nibabel.load(image)
    if not hasattr(image, "affine") or not hasattr(image, "get_fdata"):
        raise InputError(f"expected a NIfTI image or a path to one, got {type(image).__name__}")
    return image


def is_masker(value: Any) -> bool:
    """Whether ``value`` is a nilearn masker (an object with ``transform`` and ``inverse_transform``), as opposed
    to an image or a path."""
    return (not isinstance(value, (str, os.PathLike)) and not hasattr(value, "get_fdata")
            and callable(getattr(value, "inverse_transform", None)) and callable(getattr(value, "transform", None)))


def _fitted_mask_image(masker: Any) -> Any:
    image = getattr(masker, "mask_img_", None)
    if image is None:
        raise InputError(f"the {type(masker).__name__} is not fitted: call its fit() (or fit_transform) first")
    return image


def mask_array(mask_img: Any) -> np.ndarray:
    """The boolean 3-D array of a brain mask image, or of a fitted nilearn masker's mask.

    Non-zero voxels are inside. The mask must hold whole numbers (0/1, or labels whose non-zero voxels are all
    inside): a probability or other non-integer map is refused, as are NaN and infinite values.

    Raises
    ------
    ShapeError
        If the image is not 3-D.
    InputError
        If it is empty or not a mask (values that are not whole numbers).
    """
    if is_masker(mask_img):
        mask_img = _fitted_mask_image(mask_img)
    data = np.asarray(load_image(mask_img).dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ShapeError(f"a brain mask must be a 3-D image, got shape {data.shape}")
    if data.dtype.kind == "f":
        bad = ~np.isfinite(data)
        if bad.any():
            raise InputError(f"the brain mask is not boolean: it holds {int(bad.sum())} NaN or infinite values")
        fractional = data != np.rint(data)
        if fractional.any():
            example = float(data[fractional].flat[0])
            raise InputError(
                f"the brain mask is not boolean: {int(fractional.sum())} voxels hold values that are not whole "
                f"numbers (such as {example:.3g}; a probability map?). Threshold it first, e.g. "
                "nilearn.image.math_img('img > 0.5', img=mask)")
    elif data.dtype.kind not in "biu":
        raise InputError(f"the brain mask is not boolean: its values are of type {data.dtype}")
    mask = data != 0
    if not mask.any():
        raise InputError("the brain mask is empty")
    return mask


def check_voxels(n_values: int, mask_img: Any, what: str = "the data") -> int:
    """The number of voxels in the mask, or a ShapeError if it is not ``n_values`` (the values per sample or
    per map of ``what``)."""
    n_voxels = int(mask_array(mask_img).sum())
    if int(n_values) != n_voxels:
        raise ShapeError(f"{what} have {int(n_values)} values each but the brain mask has {n_voxels} voxels; "
                         "give the mask the inputs were taken with (masked_data or NiftiMasker.transform)")
    return n_voxels


def _binary_mask(mask_img: Any) -> tuple[Any, np.ndarray]:
    """The mask as a 0/1 image nilearn accepts (same affine), and its boolean array (a fitted masker's mask
    too)."""
    nibabel = _nibabel()
    image = load_image(_fitted_mask_image(mask_img) if is_masker(mask_img) else mask_img)
    mask = mask_array(image)
    return nibabel.Nifti1Image(mask.astype(np.uint8), image.affine), mask


def _apply_mask(image: Any, binary_mask: Any, mask: np.ndarray, what: str, dtype: Any) -> np.ndarray:
    """nilearn's masking of an image on the mask's grid: (n_voxels,) for a 3-D image, (N, n_voxels) for a 4-D one."""
    masking = _optional("nilearn.masking")
    if tuple(image.shape[:3]) != mask.shape:
        raise ShapeError(f"{what} of shape {tuple(image.shape[:3])} are not on the mask's grid {mask.shape}; "
                         "resample them")
    try:
        return masking.apply_mask(image, binary_mask, dtype=dtype, ensure_finite=False)
    except ValueError as error:
        if "affine" not in str(error):
            raise
        raise ShapeError(f"{what} are not in the mask's space: their affine differs from the mask's; resample "
                         "them (nilearn.image.resample_to_img)") from None


def masked_data(images: Any, mask_img: Any) -> np.ndarray:
    """Voxel values inside the mask: a 4-D image (or a list of 3-D images) → (N, n_voxels) float32."""
    binary, mask = _binary_mask(mask_img)
    if isinstance(images, (list, tuple)):
        loaded = [load_image(image) for image in images]
        for image in loaded:
            if tuple(image.shape[:3]) != mask.shape:
                raise ShapeError(f"images of shape {tuple(image.shape[:3])} are not on the mask's grid "
                                 f"{mask.shape}; resample them")
        image = _optional("nilearn.image").concat_imgs(loaded, ensure_ndim=4)
    else:
        image = load_image(images)
    values = _apply_mask(image, binary, mask, "images", np.float32)
    return np.ascontiguousarray(values.reshape(-1, int(mask.sum())))


def to_nifti(maps: np.ndarray, mask_img: Any) -> Any:
    """Maps over the mask's voxels as a NIfTI image in the mask's space.

    Parameters
    ----------
    maps : array (n_voxels,) or (K, n_voxels)
        Values in the mask's C order (as from :func:`masked_data` or ``NiftiMasker.transform``).
    mask_img : NIfTI image or path, or a fitted nilearn masker
        With a mask image the values are stored as float32 (zero outside the mask). With a fitted masker the
        image is the masker's own ``inverse_transform(maps)``: its conventions hold (the dtype of ``maps``,
        4-D for a 2-D array even of one row).

    Returns
    -------
    nibabel.Nifti1Image
        3-D for a 1-D array, 4-D (x, y, z, K) for a 2-D one (of several rows, with a mask image).

    Raises
    ------
    ShapeError
        If the maps do not have one value per voxel of the mask.
    """
    if is_masker(mask_img):
        masker = mask_img
        expected = getattr(masker, "n_elements_", None)
        if expected is None:
            expected = int(mask_array(_fitted_mask_image(masker)).sum())
        values = np.asarray(maps)
        if values.ndim not in (1, 2) or values.shape[-1] != int(expected):
            raise ShapeError(f"maps of shape {values.shape} do not have one value per voxel of the masker "
                             f"({int(expected)} voxels)")
        return masker.inverse_transform(values)
    binary, mask = _binary_mask(mask_img)
    masking = _optional("nilearn.masking")
    values = np.asarray(maps, dtype=np.float32)
    single = values.ndim == 1
    values = values.reshape(1, -1) if single else values.reshape(len(values), -1)
    if values.shape[1] != int(mask.sum()):
        raise ShapeError(f"maps have {values.shape[1]} values per map but the mask has {int(mask.sum())} voxels")
    return masking.unmask(values[0] if single else values, binary, order="C")


def atlas_regions(atlas_img: Any, mask_img: Any, names: dict[int, str] | None = None) -> dict[str, np.ndarray]:
    """Regions of a label atlas as boolean masks over the brain mask's voxels.

    The atlas must be on the mask's grid, with the mask's affine (resample it with nilearn's
    ``resample_to_img(..., interpolation="nearest")`` otherwise). Label values are rounded to integers; label 0
    is background; labels without any voxel inside the mask are skipped.

    Returns
    -------
    dict
        Region name (from ``names`` or "label_<v>") → bool array of shape (n_voxels,).

    Raises
    ------
    InputError
        If no label falls inside the mask, if a label named in ``names`` has no voxel inside it (an empty region,
        e.g. a small region lost when the atlas was resampled), or if the labels are negative or not finite.
    """
    binary, mask = _binary_mask(mask_img)
    names = dict(names or {})
    for label in names:
        check_int(label, "a label in names", hint="names maps atlas labels (integers) to region names")
    atlas = load_image(atlas_img)
    if tuple(atlas.shape) != mask.shape:
        raise ShapeError(f"the atlas grid {tuple(atlas.shape)} differs from the mask grid {mask.shape}; resample it")
    raw = _apply_mask(atlas, binary, mask, "the atlas labels", np.float64)
    if not np.isfinite(raw).all() or (raw < 0).any():
        raise InputError("the atlas holds negative, NaN or infinite labels inside the mask; a label atlas holds "
                         "whole numbers >= 0 (0 = background)")
    inside = np.rint(raw).astype(np.int64)
    regions = {}
    for value in np.unique(inside):
        if value == 0:
            continue
        regions[names.get(int(value), f"label_{value}")] = inside == value
    empty = sorted(label for label in names if label != 0 and not (inside == label).any())
    if empty:
        listed = ", ".join(f"{label} ({names[label]})" for label in empty[:8]) + (" ..." if len(empty) > 8 else "")
        raise InputError(f"atlas label(s) {listed} have no voxel inside the brain mask: empty regions cannot be "
                         "tested; leave them out of the names, or resample the atlas to the mask with "
                         "interpolation='nearest' on a finer grid")
    if not regions:
        raise InputError("no atlas label falls inside the brain mask")
    return regions


def _sphere_adjacency() -> Any:
    """nilearn's sphere membership function (public name since nilearn 0.11, private before)."""
    spheres = _optional("nilearn.maskers.nifti_spheres_masker")
    function = getattr(spheres, "apply_mask_and_get_affinity", None) or getattr(
        spheres, "_apply_mask_and_get_affinity", None)
    if function is None:  # pragma: no cover - depends on the installed nilearn
        raise InputError(f"this nilearn version has no sphere masker helper; update it: {_INSTALL}")
    return function


def _sphere_members(centres: list[list[float]], radius: float, binary_mask: Any) -> list[np.ndarray]:
    """For each centre, the indices (in the mask's voxel order) of the voxels of its sphere; empty if none."""
    adjacency = _sphere_adjacency()

    def attempt(indices: list[int]) -> tuple[dict[int, np.ndarray] | None, set[int]]:
        """The members of the spheres ``indices``, or None and the spheres nilearn reports empty."""
        try:
            _, rows = adjacency([centres[i] for i in indices], None, radius, True, mask_img=binary_mask)
        except ValueError as error:  # nilearn refuses spheres without any voxel in the mask and lists them
            if "empty" not in str(error):
                raise
            if len(indices) == 1:
                return None, set(indices)
            listed = {int(n) for n in re.findall(r"\d+", str(error).rpartition(":")[2])}
            return None, {indices[n] for n in listed if n < len(indices)}
        rows = rows.tocsr()
        return {i: np.sort(rows.indices[rows.indptr[r] : rows.indptr[r + 1]]).astype(np.int64)
                for r, i in enumerate(indices)}, set()

    found: dict[int, np.ndarray] = {}
    pending = list(range(len(centres)))
    while pending:
        members, empty = attempt(pending)
        if members is not None:
            found.update(members)
            break
        suspects = sorted(empty) or pending  # all of them if nilearn's list could not be read
        checked, confirmed = attempt(suspects)
        if checked is not None:  # none was empty after all
            found.update(checked)
        elif confirmed == set(suspects):
            found.update({index: np.zeros(0, dtype=np.int64) for index in suspects})
        else:
            for index in suspects:
                single, _ = attempt([index])
                found[index] = single[index] if single is not None else np.zeros(0, dtype=np.int64)
        pending = [index for index in pending if index not in found]
    return [found[index] for index in range(len(centres))]


def sphere_atlas(mask_img: Any, centres_mm: Sequence[Sequence[float]], radius_mm: float) -> Any:
    """A label atlas of spheres (labels 1, 2, ...) around world coordinates, on the mask's grid and inside it.

    A sphere holds the mask's voxels whose centres lie within ``radius_mm`` of its centre (in world
    coordinates), as nilearn's ``NiftiSpheresMasker`` defines it; nilearn also counts the voxel whose world
    coordinates truncate to the centre's whole millimetres, which matters only for radii below about 3.5 mm. A
    voxel in several spheres gets the first sphere's label; a sphere without any voxel in the mask gets none.
    """
    radius = check_number(radius_mm, "radius_mm", non_negative=True, hint="the sphere radius in millimetres")
    centres = []
    for index, centre in enumerate(centres_mm):
        try:
            coordinates = list(centre)
        except TypeError:
            coordinates = []
        if len(coordinates) != 3:
            raise InputError(f"centre {index} must be three world coordinates (x, y, z) in mm, got {centre!r}")
        centres.append([check_number(value, f"coordinate {axis} of centre {index}")
                        for axis, value in zip("xyz", coordinates)])
    binary, mask = _binary_mask(mask_img)
    labels = np.zeros(int(mask.sum()), dtype=np.int16)
    if centres:
        for label, members in enumerate(_sphere_members(centres, radius, binary), start=1):
            free = members[labels[members] == 0]
            labels[free] = label
    return _optional("nilearn.masking").unmask(labels, binary, order="C")


# ----------------------------------------------------------------------------------------------------------
# brain files of a result
# ----------------------------------------------------------------------------------------------------------
#: what each map of a result is called in file names (``<value>_desc-<method>_<key>-<label>...``, the style of
#: BIDS derivatives and NiMARE: the value first, then entities) and how its sidecar describes it. ``None`` is
#: the main map. Extra maps not listed here are written as ``<name>_desc-<method>``.
MAP_FILES: dict[str | None, tuple[str, str]] = {
    None: ("stat_desc-{method}", "the {method_upper} map of each output: the part of the correlation between the "
                                 "model's prediction and its target carried by each voxel (IGC), or the method's "
                                 "own statistic"),
    "p_value": ("p_desc-{method}_method-permutation", "two-sided permutation p-value of each voxel's map value"),
    "p_fwe": ("p_desc-{method}_level-voxel_corr-FWE_method-permutation",
              "family-wise error corrected p-value (maximum statistic over the voxels of each output)"),
    "q_value": ("p_desc-{method}_corr-FDR_method-bh",
                "Benjamini-Hochberg q-value (false discovery rate over the voxels of each output)"),
    "ci_low": ("lower_desc-{method}_ci-{level}_method-bootstrap",
               "lower bound of the {level} % percentile bootstrap interval of each voxel's map value"),
    "ci_high": ("upper_desc-{method}_ci-{level}_method-bootstrap",
                "upper bound of the {level} % percentile bootstrap interval of each voxel's map value"),
    "bootstrap_se": ("se_desc-{method}_method-bootstrap", "bootstrap standard error of each voxel's map value"),
    "standard_error": ("se_desc-{method}_method-montecarlo",
                       "Monte-Carlo standard error of each voxel's map value (integration noise)"),
}


def _label(text: str) -> str:
    """A BIDS label: letters and digits only."""
    return re.sub(r"[^A-Za-z0-9]", "", str(text)) or "map"


def _map_kind(result: Any, which: str | None) -> tuple[str, str]:
    """(file pattern, description) of a map: a p-value map comes from the permutation test only when the run
    had one (correlation and t-test maps carry their own analytic p-values)."""
    permuted = bool((result.metadata.get("inference") or {}).get("permutations"))
    if which in MAP_FILES and (which != "p_value" or permuted):
        return MAP_FILES[which]
    if which == "p_value":
        return "p_desc-{method}", "p-value of each voxel's map value, as the method computes it"
    return f"{_label(which)}_desc-{{method}}", f"the {which} map of each output"


def map_file_stem(result: Any, which: str | None = None) -> str:
    """File name, without extension, of the main map (``which=None``) or of an extra map of ``result``."""
    inference = result.metadata.get("inference") or {}
    level = int(round(100 * float(inference.get("level") or 0.95)))
    return _map_kind(result, which)[0].format(method=_label(result.method), level=level)


def write_maps(result: Any, mask: Any, out_dir: str | os.PathLike, *, mask_name: str | None = None,
               source: str | None = "result.npz") -> dict[str, Path]:
    """Write the maps of ``result`` and its per-voxel extra maps (p-values, q-values, intervals, standard errors)
    as NIfTI images in the mask's space, each with a JSON sidecar.

    Every image holds one volume per attributed output (4-D, also for one output), in the order of
    ``result.outputs``; the sidecar records which output each volume is, the method, its parameters, the
    baselines, the inference settings, the number of samples, the seed, the mask, the source result file and the
    igcorr version. File names follow the BIDS-derivatives / NiMARE style: ``stat_desc-igc.nii.gz``,
    ``p_desc-igc_method-permutation.nii.gz``, ``p_desc-igc_level-voxel_corr-FWE_method-permutation.nii.gz``,
    ``p_desc-igc_corr-FDR_method-bh.nii.gz``, ``lower_desc-igc_ci-95_method-bootstrap.nii.gz`` and so on
    (:data:`MAP_FILES`).

    Parameters
    ----------
    result : Result
        Maps over the mask's voxels (inputs were voxel vectors in the mask's C order).
    mask : NIfTI image or path, or a fitted nilearn masker
    out_dir : path
    mask_name : str, optional
        How the sidecars name the mask (default: its file name when given as a path).
    source : str, optional
        The result file the images come from, recorded in the sidecars.

    Returns
    -------
    dict
        ``"nifti"`` / ``"nifti_<extra map>"`` and ``"sidecar"`` / ``"sidecar_<extra map>"`` → path.

    Raises
    ------
    ShapeError
        If the maps do not have one value per voxel of the mask (checked before anything is written).
    """
    from igcorr._files import atomic_write

    if not is_masker(mask):
        check_voxels(int(np.prod(result.x_shape, dtype=np.int64)), mask, "the maps")
    elif mask_name is None:
        mask_name = f"a fitted {type(mask).__name__}"
    if mask_name is None:
        mask_name = Path(mask).name if isinstance(mask, (str, os.PathLike)) else "a mask image"
    out = Path(out_dir)
    meta = result.metadata
    written: dict[str, Path] = {}
    kinds = [None] + [name for name in sorted(result.extra_maps)
                      if np.shape(result.extra_maps[name]) == np.shape(result.maps)]
    for which in kinds:
        stem = map_file_stem(result, which)
        image = result.to_nifti(mask if is_masker(mask) else load_image(mask), which=which)
        if not is_masker(mask) and image.ndim == 3:  # one output: still one volume per output
            image = _nibabel().Nifti1Image(np.asarray(image.dataobj)[..., None], image.affine, image.header)
        key = "nifti" if which is None else f"nifti_{which}"
        written[key] = atomic_write(out / f"{stem}.nii.gz",
                                    lambda handle, image=image: handle.write(gzip.compress(image.to_bytes(), 6)),
                                    "NIfTI map")
        inference = meta.get("inference") or {}
        level = int(round(100 * float(inference.get("level") or 0.95)))
        describe = _map_kind(result, which)[1].format(method_upper=result.method.upper(), level=level)
        sidecar = {
            "Description": describe[:1].upper() + describe[1:],
            "Map": "map" if which is None else which,
            "Method": result.method,
            "Outputs": [int(output) for output in result.outputs],
            "VolumeIndexIsOutput": "volume v of the image is the map of model output Outputs[v]",
            "Correlation": (None if "correlation" not in result.diagnostics
                            else [float(value) for value in np.asarray(result.diagnostics["correlation"])]),
            "Parameters": meta.get("parameters"),
            "Baselines": meta.get("baselines"),
            "Score": meta.get("score"),
            "Inference": ({key: inference.get(key) for key in ("permutations", "bootstrap", "level")}
                          if inference else None),
            "NumberOfSamples": meta.get("n_samples"),
            "Seed": meta.get("seed"),
            "Mask": mask_name,
            "Sources": [source] if source else [],
            "GeneratedBy": [{"Name": "igcorr", "Version": (meta.get("versions") or {}).get("igcorr")}],
        }
        text = json.dumps(sidecar, indent=2, default=str) + "\n"
        written["sidecar" if which is None else f"sidecar_{which}"] = atomic_write(
            out / f"{stem}.json", lambda handle, text=text: handle.write(text.encode("utf-8")), "NIfTI sidecar")
    return written
