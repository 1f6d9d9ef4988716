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
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Sequence
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


def mask_array(mask_img: Any) -> np.ndarray:
    """The boolean 3-D array of a brain mask image (non-zero voxels are inside)."""
    data = np.asarray(load_image(mask_img).dataobj)
    if data.ndim != 3:
        raise ShapeError(f"a brain mask must be a 3-D image, got shape {data.shape}")
    mask = data != 0
    if not mask.any():
        raise InputError("the brain mask is empty")
    return mask


def _binary_mask(mask_img: Any) -> tuple[Any, np.ndarray]:
    """The mask as a 0/1 image nilearn accepts (same affine), and its boolean array."""
    nibabel = _nibabel()
    image = load_image(mask_img)
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
        Values in the mask's C order (as from :func:`masked_data`).

    Returns
    -------
    nibabel.Nifti1Image
        3-D for one map, 4-D (x, y, z, K) for several; zero outside the mask.
    """
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
    """
    binary, mask = _binary_mask(mask_img)
    names = dict(names or {})
    for label in names:
        check_int(label, "a label in names", hint="names maps atlas labels (integers) to region names")
    atlas = load_image(atlas_img)
    if tuple(atlas.shape) != mask.shape:
        raise ShapeError(f"the atlas grid {tuple(atlas.shape)} differs from the mask grid {mask.shape}; resample it")
    inside = np.rint(_apply_mask(atlas, binary, mask, "the atlas labels", np.float64)).astype(np.int64)
    regions = {}
    for value in np.unique(inside):
        if value == 0:
            continue
        regions[names.get(int(value), f"label_{value}")] = inside == value
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
