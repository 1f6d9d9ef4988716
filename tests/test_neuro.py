"""Brain-imaging workflow: voxel vectors ↔ NIfTI, atlas regions, and the fMRI decoding example."""

from __future__ import annotations

import numpy as np
import pytest

nibabel = pytest.importorskip("nibabel")
pytest.importorskip("nilearn")

import igcorr
from igcorr.errors import ShapeError
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
