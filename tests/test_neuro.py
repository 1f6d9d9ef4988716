"""Brain-imaging workflow: voxel vectors ↔ NIfTI, atlas regions, and the fMRI decoding example."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest

nibabel = pytest.importorskip("nibabel")
pytest.importorskip("nilearn")

from nilearn import datasets, image
from nilearn.maskers import NiftiMasker

import igcorr
from igcorr.errors import InputError, ShapeError
from igcorr.neuro import atlas_regions, mask_array, masked_data, sphere_atlas, to_nifti


@pytest.fixture
def mask_img():
    mask = np.zeros((6, 7, 5), dtype=np.uint8)
    mask[1:5, 1:6, 1:4] = 1
    return nibabel.Nifti1Image(mask, np.diag([2.0, 2.0, 2.0, 1.0]))


def test_voxel_vectors_round_trip(mask_img, tmp_path):
    n_voxels = int(mask_array(mask_img).sum())
    maps = np.random.default_rng(0).normal(size=(3, n_voxels))
    image = to_nifti(maps, mask_img)
    assert image.shape == (6, 7, 5, 3)
    np.testing.assert_allclose(masked_data(image, mask_img), maps.astype(np.float32))
    single = to_nifti(maps[0], mask_img)
    assert single.shape == (6, 7, 5)
    path = tmp_path / "map.nii.gz"
    single.to_filename(str(path))
    np.testing.assert_allclose(masked_data(str(path), mask_img)[0], maps[0].astype(np.float32))
    with pytest.raises(ShapeError, match="voxels"):
        to_nifti(maps[:, :-1], mask_img)


def test_atlas_and_sphere_regions(mask_img):
    atlas = sphere_atlas(mask_img, [(4.0, 4.0, 4.0), (8.0, 8.0, 4.0)], radius_mm=2.1)
    regions = atlas_regions(atlas, mask_img, {1: "first", 2: "second"})
    assert set(regions) == {"first", "second"}
    assert all(mask.dtype == bool and mask.shape == (int(mask_array(mask_img).sum()),) for mask in regions.values())
    assert not np.any(regions["first"] & regions["second"])
    assert 1 <= regions["first"].sum() <= 7


def test_result_to_nifti(mask_img, tmp_path):
    n_voxels = int(mask_array(mask_img).sum())
    result = igcorr.Result("igc", np.arange(n_voxels, dtype=np.float64)[None])
    image = result.to_nifti(mask_img, tmp_path / "igc.nii.gz")
    assert (tmp_path / "igc.nii.gz").exists() and image.shape == (6, 7, 5)
    np.testing.assert_allclose(masked_data(image, mask_img)[0], np.arange(n_voxels))


@pytest.fixture(scope="module")
def mni_mask_4mm():
    """The bundled MNI152 brain mask (no download) on a 4 mm grid, as the fMRI example uses it."""
    return image.resample_img(datasets.load_mni152_brain_mask(resolution=2), target_affine=np.diag([4.0] * 3),
                              interpolation="nearest", force_resample=True, copy_header=True)


def fitted_masker(mask_img):
    """nilearn's own masker, the reference for masking and unmasking (its default, no standardising, kept)."""
    return NiftiMasker(mask_img).fit()


def nilearn_call(method, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # notice about the spelling of standardize=False
        return method(*args)


def world_coordinates(shape, affine):
    """World coordinates (mm) of every voxel centre, computed with the affine alone."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(float)
    return grid @ np.asarray(affine)[:3, :3].T + np.asarray(affine)[:3, 3]


def spheres_by_hand(mask_img, centres, radius):
    """Labels over the mask's voxels: voxel centres within the radius, the first sphere winning overlaps."""
    mask = np.asarray(mask_img.dataobj) != 0
    world = world_coordinates(mask.shape, mask_img.affine)[mask]
    labels = np.zeros(len(world), dtype=np.int64)
    for label, centre in enumerate(centres, start=1):
        inside = np.linalg.norm(world - np.asarray(centre, dtype=float), axis=-1) <= radius
        labels[inside & (labels == 0)] = label
    return labels


def test_masking_matches_boolean_indexing_and_nilearn():
    template = datasets.load_mni152_template(resolution=2)
    mask_img = datasets.load_mni152_brain_mask(resolution=2)
    mask = np.asarray(mask_img.dataobj) != 0
    data = np.asarray(template.dataobj, dtype=np.float32)
    voxels = masked_data(template, mask_img)
    assert voxels.shape == (1, int(mask.sum())) and voxels.dtype == np.float32 and voxels.flags.c_contiguous
    np.testing.assert_array_equal(voxels[0], data[mask])
    reference = nilearn_call(fitted_masker(mask_img).transform, template)
    np.testing.assert_array_equal(voxels[0], reference.astype(np.float32).reshape(-1))
    # 4-D images and lists of 3-D images: one row per volume, NaN kept (not replaced by 0)
    volumes = np.random.default_rng(1).normal(size=mask.shape + (3,))
    volumes[mask.nonzero()[0][0], mask.nonzero()[1][0], mask.nonzero()[2][0], 1] = np.nan
    four_d = nibabel.Nifti1Image(volumes, mask_img.affine)
    expected = volumes.astype(np.float32)[mask].T
    np.testing.assert_array_equal(masked_data(four_d, mask_img), expected)
    listed = [nibabel.Nifti1Image(volumes[..., t], mask_img.affine) for t in range(3)]
    np.testing.assert_array_equal(masked_data(listed, mask_img), expected)
    assert np.isnan(masked_data(four_d, mask_img)[1, 0])


def test_a_mask_with_several_non_zero_values_keeps_every_non_zero_voxel(mask_img):
    values = np.asarray(mask_img.dataobj).astype(np.int16)
    values[1:3] *= 2  # values 0, 1 and 2: nilearn alone refuses such a mask
    several = nibabel.Nifti1Image(values, mask_img.affine)
    data = np.random.default_rng(2).normal(size=values.shape)
    found = masked_data(nibabel.Nifti1Image(data, mask_img.affine), several)
    np.testing.assert_array_equal(found[0], data.astype(np.float32)[values != 0])
    np.testing.assert_array_equal(np.asarray(to_nifti(found[0], several).dataobj)[values != 0], found[0])


def test_images_off_the_mask_grid_raise_shape_error(mask_img):
    data = np.zeros((6, 7, 5))
    with pytest.raises(ShapeError, match="grid"):
        masked_data(nibabel.Nifti1Image(np.zeros((6, 7, 4)), mask_img.affine), mask_img)
    with pytest.raises(ShapeError, match="affine"):
        masked_data(nibabel.Nifti1Image(data, np.diag([3.0, 3.0, 3.0, 1.0])), mask_img)
    with pytest.raises(ShapeError, match="affine"):
        atlas_regions(nibabel.Nifti1Image(np.ones((6, 7, 5), np.int16), np.eye(4)), mask_img)
    with pytest.raises(ShapeError, match="grid"):
        atlas_regions(nibabel.Nifti1Image(np.ones((6, 7, 4), np.int16), mask_img.affine), mask_img)


def test_unmasking_matches_nilearn_inverse_transform_and_a_direct_fill():
    mask_img = datasets.load_mni152_brain_mask(resolution=2)
    mask = np.asarray(mask_img.dataobj) != 0
    maps = (1e-2 * np.random.default_rng(3).normal(size=(2, int(mask.sum())))).astype(np.float32)
    found = to_nifti(maps, mask_img)
    reference = nilearn_call(fitted_masker(mask_img).inverse_transform, maps)
    assert found.shape == mask.shape + (2,) and np.array_equal(found.affine, mask_img.affine)
    np.testing.assert_allclose(found.get_fdata(), reference.get_fdata(), rtol=0, atol=4.6e-10)
    direct = np.zeros(mask.shape + (2,), dtype=np.float32)
    direct[mask] = maps.T
    np.testing.assert_array_equal(np.asarray(found.dataobj), direct)
    single = to_nifti(maps[1].astype(np.float64), mask_img)  # stored as float32, as before
    assert single.shape == mask.shape and single.get_data_dtype() == np.float32
    np.testing.assert_array_equal(np.asarray(single.dataobj), direct[..., 1])


def test_label_atlas_gives_one_mask_per_non_zero_label_inside_the_mask(mni_mask_4mm):
    mask = np.asarray(mni_mask_4mm.dataobj) != 0
    labels = np.random.default_rng(4).integers(0, 6, size=mask.shape).astype(np.float32)
    labels[~mask & (np.arange(mask.shape[0]) == 0)[:, None, None]] = 9  # label 9 only outside the mask
    labels[labels == 5] = 5.0000005  # labels stored as floats are rounded
    atlas_img = nibabel.Nifti1Image(labels, mni_mask_4mm.affine)
    regions = atlas_regions(atlas_img, mni_mask_4mm, {2: "two"})
    inside = np.rint(labels[mask]).astype(np.int64)
    assert list(regions) == ["label_1", "two", "label_3", "label_4", "label_5"]
    for value, name in zip([1, 2, 3, 4, 5], regions):
        assert regions[name].dtype == bool
        np.testing.assert_array_equal(regions[name], inside == value)


def test_spheres_hold_the_voxel_centres_within_the_radius(mni_mask_4mm):
    centres = [(-6.0, -52.0, 40.0), (0.0, -48.0, 36.0), (40.0, -72.0, 14.0), (30.0, 20.0, -10.0),
               (-200.0, 0.0, 0.0)]  # the first two overlap; the last is far outside the brain
    for radius in (6.0, 10.0):
        atlas = sphere_atlas(mni_mask_4mm, centres, radius)
        mask = np.asarray(mni_mask_4mm.dataobj) != 0
        assert np.array_equal(atlas.affine, mni_mask_4mm.affine) and atlas.shape == mask.shape
        labels = np.asarray(atlas.dataobj)
        assert not labels[~mask].any()
        expected = spheres_by_hand(mni_mask_4mm, centres, radius)
        np.testing.assert_array_equal(labels[mask], expected)
        assert set(np.unique(expected)) == {0, 1, 2, 3, 4}  # overlap resolved, empty sphere left out


def test_spheres_follow_the_affine_and_include_the_boundary():
    mask = np.ones((12, 12, 12), dtype=np.uint8)
    mask[0] = 0
    oblique = np.array([[2.0, 0.4, 0.0, -10.0], [0.0, 2.0, 0.3, 4.0], [0.2, 0.0, 2.0, -6.0], [0, 0, 0, 1]])
    for affine, centres in [(np.diag([2.0, 2.0, 2.0, 1.0]), [(8.0, 8.0, 8.0), (16.0, 10.0, 12.0)]),
                            (oblique, [(0.0, 14.0, 2.0), (5.5, 9.0, 7.5)])]:
        mask_img = nibabel.Nifti1Image(mask, affine)
        expected = spheres_by_hand(mask_img, centres, 10.0)
        labels = np.asarray(sphere_atlas(mask_img, centres, 10.0).dataobj)[mask != 0]
        np.testing.assert_array_equal(labels, expected)
    world = world_coordinates(mask.shape, np.diag([2.0, 2.0, 2.0, 1.0]))[mask != 0]
    assert (np.linalg.norm(world - np.array([8.0, 8.0, 8.0]), axis=-1) == 10.0).any()  # the boundary was tested


def test_sphere_and_atlas_arguments_are_checked(mask_img):
    for radius in (-1.0, float("nan"), True, "2"):
        with pytest.raises(InputError, match="radius_mm"):
            sphere_atlas(mask_img, [(4.0, 4.0, 4.0)], radius)
    with pytest.raises(InputError, match="centre 1"):
        sphere_atlas(mask_img, [(4.0, 4.0, 4.0), (4.0, 4.0)], 2.0)
    with pytest.raises(InputError, match="coordinate z of centre 0"):
        sphere_atlas(mask_img, [(4.0, 4.0, float("inf"))], 2.0)
    atlas = sphere_atlas(mask_img, [(4.0, 4.0, 4.0)], 2.1)
    with pytest.raises(InputError, match="label"):
        atlas_regions(atlas, mask_img, {"1": "first"})


def test_missing_nilearn_names_the_extra(mask_img, monkeypatch):
    for name in [name for name in sys.modules if name == "nilearn" or name.startswith("nilearn.")]:
        monkeypatch.setitem(sys.modules, name, None)
    n_voxels = int(mask_array(mask_img).sum())  # reading the mask needs nibabel only
    calls = [lambda: to_nifti(np.zeros(n_voxels), mask_img), lambda: masked_data(mask_img, mask_img),
             lambda: sphere_atlas(mask_img, [(4.0, 4.0, 4.0)], 2.1), lambda: atlas_regions(mask_img, mask_img)]
    for call in calls:
        with pytest.raises(InputError, match=r'pip install "igcorr\[neuro\]"'):
            call()


def test_fmri_example_recovers_the_encoding_regions(tmp_path):
    from igcorr_examples.fmri import run_fmri_example

    report = run_fmri_example(tmp_path, n_samples=450, voxel_size=6.0, n_steps=8, n_baselines=4, permutations=100,
                              bootstrap=50, progress=False)
    for name in ("igc_map.nii.gz", "glass_brain.png", "regions.png", "regions.csv", "summary.md", "result.npz"):
        assert (tmp_path / name).stat().st_size > 0, name
    sums = report["region_sums"]
    encoding = [sums[name] for name in report["encoding_regions"]]
    control = [value for name, value in sums.items() if name not in report["encoding_regions"]]
    assert report["correlation"] > 0.2
    assert min(encoding) > 5 * max(abs(value) for value in control)
    assert all(report["region_p_fwe"][name] < 0.05 for name in report["encoding_regions"])
    assert all(report["region_intervals"][name][0] > 0 for name in report["encoding_regions"])


def test_example_command(tmp_path, capsys):
    from igcorr.cli import main

    assert main(["example", "fmri-decoding", "--out", str(tmp_path), "--samples", "300", "--voxel-size", "8",
                 "--permutations", "20", "--bootstrap", "10", "--no-progress"]) == 0
    assert "encoding ROI 1" in capsys.readouterr().out
    assert (tmp_path / "igc_map.nii.gz").exists()
