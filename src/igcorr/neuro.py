"""Brain-imaging helpers: voxel inputs inside a brain mask, maps as NIfTI images, regions from label atlases.

Inputs of a brain model are usually the voxels inside a 3-D brain mask, flattened to vectors of n_voxels
values in the mask's C order (``data[mask]`` with numpy). These helpers move between that vector space and
NIfTI images in the mask's space. They need the optional dependencies ``nibabel`` (and ``nilearn`` for
resampling and the example): ``pip install igcorr[neuro]``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from igcorr.errors import InputError, ShapeError


def _nibabel() -> Any:
    try:
        import nibabel
    except ImportError as error:  # pragma: no cover - exercised only without the optional dependency
        raise InputError("brain-imaging helpers need nibabel: pip install 'igcorr[neuro]'") from error
    return nibabel


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


def masked_data(images: Any, mask_img: Any) -> np.ndarray:
    """Voxel values inside the mask: a 4-D image (or a list of 3-D images) → (N, n_voxels) float32."""
    mask = mask_array(mask_img)
    if isinstance(images, (list, tuple)):
        volumes = [np.asarray(load_image(image).dataobj, dtype=np.float32) for image in images]
        data = np.stack(volumes, axis=-1)
    else:
        data = np.asarray(load_image(images).dataobj, dtype=np.float32)
    if data.ndim == 3:
        data = data[..., None]
    if data.shape[:3] != mask.shape:
        raise ShapeError(f"images of shape {data.shape[:3]} are not on the mask's grid {mask.shape}; resample them")
    return data[mask].T.copy()


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
    nibabel = _nibabel()
    mask_image = load_image(mask_img)
    mask = mask_array(mask_image)
    values = np.asarray(maps, dtype=np.float32)
    single = values.ndim == 1
    values = values.reshape(1, -1) if single else values.reshape(len(values), -1)
    if values.shape[1] != int(mask.sum()):
        raise ShapeError(f"maps have {values.shape[1]} values per map but the mask has {int(mask.sum())} voxels")
    volume = np.zeros(mask.shape + (len(values),), dtype=np.float32)
    volume[mask] = values.T
    return nibabel.Nifti1Image(volume[..., 0] if single else volume, mask_image.affine)


def atlas_regions(atlas_img: Any, mask_img: Any, names: dict[int, str] | None = None) -> dict[str, np.ndarray]:
    """Regions of a label atlas as boolean masks over the brain mask's voxels.

    The atlas must be on the mask's grid (resample it with nilearn's ``resample_to_img(..., interpolation=
    "nearest")`` otherwise). Label 0 is background; labels without any voxel inside the mask are skipped.

    Returns
    -------
    dict
        Region name (from ``names`` or "label_<v>") → bool array of shape (n_voxels,).
    """
    mask = mask_array(mask_img)
    labels = np.asarray(load_image(atlas_img).dataobj)
    if labels.shape != mask.shape:
        raise ShapeError(f"the atlas grid {labels.shape} differs from the mask grid {mask.shape}; resample it")
    inside = np.rint(labels[mask]).astype(np.int64)
    regions = {}
    for value in np.unique(inside):
        if value == 0:
            continue
        regions[(names or {}).get(int(value), f"label_{value}")] = inside == value
    if not regions:
        raise InputError("no atlas label falls inside the brain mask")
    return regions


def sphere_atlas(mask_img: Any, centres_mm: Sequence[Sequence[float]], radius_mm: float) -> Any:
    """A label atlas of spheres (labels 1, 2, ...) around world coordinates, on the mask's grid and inside it."""
    nibabel = _nibabel()
    mask_image = load_image(mask_img)
    mask = mask_array(mask_image)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in mask.shape], indexing="ij"), axis=-1)
    world = grid @ mask_image.affine[:3, :3].T + mask_image.affine[:3, 3]
    labels = np.zeros(mask.shape, dtype=np.int16)
    for label, centre in enumerate(centres_mm, start=1):
        inside = (np.linalg.norm(world - np.asarray(centre, dtype=float), axis=-1) <= radius_mm) & mask
        labels[inside & (labels == 0)] = label
    return nibabel.Nifti1Image(labels, mask_image.affine)
