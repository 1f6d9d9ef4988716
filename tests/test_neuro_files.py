"""Brain files as neuroimaging users expect them: NIfTI maps with sidecars, masks and atlases checked before any
compute, nilearn maskers, region p-values in every report file, glass brains and vector maps that are drawn."""

from __future__ import annotations

import json
import sys
import textwrap
import warnings

import numpy as np
import pytest

nibabel = pytest.importorskip("nibabel")
pytest.importorskip("nilearn")

import matplotlib

matplotlib.use("Agg")
from matplotlib import image as mpimg
from nilearn.maskers import NiftiMasker

import igcorr
from igcorr.cli import main
from igcorr.errors import InputError, ShapeError
from igcorr.neuro import atlas_regions, mask_array, masked_data, to_nifti, write_maps

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
GRID = (6, 7, 5)


def mask_data() -> np.ndarray:
    mask = np.zeros(GRID, dtype=np.uint8)
    mask[1:5, 1:6, 1:4] = 1  # 60 voxels
    return mask


@pytest.fixture
def mask_img():
    return nibabel.Nifti1Image(mask_data(), AFFINE)


def fitted(mask_img):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return NiftiMasker(mask_img).fit()


def quiet(call, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return call(*args)


# ------------------------------------------------------------------------------------------------------------
# to_nifti with a masker, masks that are not masks
# ------------------------------------------------------------------------------------------------------------
def test_to_nifti_with_a_masker_is_the_maskers_inverse_transform(mask_img):
    masker = fitted(mask_img)
    maps = np.random.default_rng(0).normal(size=(3, 60))
    for values in (maps, maps[:1], maps[0], maps.astype(np.float32)):
        found = to_nifti(values, masker)
        expected = quiet(masker.inverse_transform, values)
        assert found.shape == expected.shape and found.get_data_dtype() == expected.get_data_dtype()
        assert np.array_equal(np.asarray(found.dataobj), np.asarray(expected.dataobj))
        assert np.array_equal(found.affine, expected.affine)
    result = igcorr.Result("igc", maps[:1].copy(), metadata={"outputs": [4]})
    image = result.to_nifti(masker)  # one map: 4-D float64, as the masker gives for (1, n_voxels)
    assert image.shape == GRID + (1,) and image.get_data_dtype() == np.float64
    assert np.array_equal(image.get_fdata()[..., 0][mask_data() != 0], maps[0])
    plain = result.to_nifti(mask_img)  # a mask image: 3-D float32, as before
    assert plain.shape == GRID and plain.get_data_dtype() == np.float32
    with pytest.raises(ShapeError, match="one value per voxel"):
        to_nifti(maps[:, :-1], masker)
    with pytest.raises(InputError, match="not fitted"):
        to_nifti(maps, NiftiMasker(mask_img))


def test_masks_must_be_boolean_3d_images(mask_img):
    probability = mask_data() * 0.7
    with pytest.raises(InputError, match="not boolean.*probability map"):
        mask_array(nibabel.Nifti1Image(probability, AFFINE))
    with_nan = mask_data().astype(np.float32)
    with_nan[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        mask_array(nibabel.Nifti1Image(with_nan, AFFINE))
    with pytest.raises(ShapeError, match="3-D"):
        mask_array(nibabel.Nifti1Image(np.ones(GRID + (2,), np.uint8), AFFINE))
    as_floats = nibabel.Nifti1Image(mask_data().astype(np.float64), AFFINE)  # 0.0/1.0 stored as floats: fine
    assert np.array_equal(mask_array(as_floats), mask_data() != 0)
    assert np.array_equal(mask_array(fitted(mask_img)), mask_data() != 0)


def test_atlas_labels_that_are_empty_or_negative_are_refused(mask_img):
    labels = np.zeros(GRID, np.int16)
    labels[1:3, 1:6, 1:4], labels[3:5, 1:6, 1:4] = 1, 2
    labels[0, 0, 0] = 3  # only outside the mask
    atlas = nibabel.Nifti1Image(labels, AFFINE)
    assert list(atlas_regions(atlas, mask_img)) == ["label_1", "label_2"]  # unnamed labels outside: skipped
    with pytest.raises(InputError, match=r"label\(s\) 3 \(far\) have no voxel inside the brain mask"):
        atlas_regions(atlas, mask_img, {1: "left", 2: "right", 3: "far"})
    negative = labels.copy()
    negative[2, 2, 2] = -1
    with pytest.raises(InputError, match="negative"):
        atlas_regions(nibabel.Nifti1Image(negative, AFFINE), mask_img)


# ------------------------------------------------------------------------------------------------------------
# NIfTI files of a result
# ------------------------------------------------------------------------------------------------------------
def inference_result() -> igcorr.Result:
    rng = np.random.default_rng(1)
    maps = rng.normal(size=(2, 60))
    extra = {name: rng.uniform(size=(2, 60)) for name in ("p_value", "p_fwe", "q_value", "ci_low", "ci_high",
                                                          "bootstrap_se")}
    metadata = {"outputs": [3, 7], "n_samples": 80, "seed": 5, "parameters": {"n_steps": 8, "method": "trapezoid"},
                "baselines": {"kind": "constant", "value": 0.0}, "inference": {"permutations": 99, "bootstrap": 50,
                                                                             "level": 0.9, "regions": []},
                "versions": {"igcorr": igcorr.__version__}}
    return igcorr.Result("igc", maps, {"correlation": np.array([0.4, 0.2])}, extra, metadata)


EXPECTED_FILES = {
    None: "stat_desc-igc",
    "p_value": "p_desc-igc_method-permutation",
    "p_fwe": "p_desc-igc_level-voxel_corr-FWE_method-permutation",
    "q_value": "p_desc-igc_corr-FDR_method-bh",
    "ci_low": "lower_desc-igc_ci-90_method-bootstrap",
    "ci_high": "upper_desc-igc_ci-90_method-bootstrap",
    "bootstrap_se": "se_desc-igc_method-bootstrap",
}


def test_maps_and_inference_maps_are_written_as_nifti_with_sidecars(mask_img, tmp_path):
    result = inference_result()
    written = write_maps(result, mask_img, tmp_path, mask_name="mask.nii.gz")
    inside = mask_data() != 0
    for which, stem in EXPECTED_FILES.items():
        image = nibabel.load(tmp_path / f"{stem}.nii.gz")
        assert image.shape == GRID + (2,) and np.array_equal(image.affine, AFFINE)
        values = result.maps if which is None else result.extra_maps[which]
        np.testing.assert_allclose(image.get_fdata()[inside].T, values, rtol=1e-6)  # float32 on disk
        assert not image.get_fdata()[~inside].any()
        sidecar = json.loads((tmp_path / f"{stem}.json").read_text())
        assert sidecar["Method"] == "igc" and sidecar["Outputs"] == [3, 7] and sidecar["Mask"] == "mask.nii.gz"
        assert sidecar["Map"] == ("map" if which is None else which)
        assert sidecar["Parameters"] == {"n_steps": 8, "method": "trapezoid"} and sidecar["Seed"] == 5
        assert sidecar["Inference"] == {"permutations": 99, "bootstrap": 50, "level": 0.9}
        assert sidecar["NumberOfSamples"] == 80 and sidecar["Correlation"] == [0.4, 0.2]
        assert sidecar["GeneratedBy"][0] == {"Name": "igcorr", "Version": igcorr.__version__}
        assert sidecar["Sources"] == ["result.npz"] and sidecar["Description"]
        key = "nifti" if which is None else f"nifti_{which}"
        assert written[key] == tmp_path / f"{stem}.nii.gz"
    assert len(list(tmp_path.glob("*.nii.gz"))) == len(EXPECTED_FILES)
    # through a fitted masker: the masker's own images (float64)
    masked = write_maps(result, fitted(mask_img), tmp_path / "masker")
    image = nibabel.load(masked["nifti"])
    assert image.get_data_dtype() == np.float64
    np.testing.assert_array_equal(image.get_fdata()[inside].T, result.maps)
    # one output: still one volume per output
    single = igcorr.Result("igc", result.maps[:1].copy(), metadata={"outputs": [3]})
    assert nibabel.load(write_maps(single, mask_img, tmp_path / "one")["nifti"]).shape == GRID + (1,)
    with pytest.raises(ShapeError, match="60 values each but the brain mask has 40 voxels"):
        smaller = mask_data()
        smaller[1:5, 1:6, 3] = 0
        write_maps(result, nibabel.Nifti1Image(smaller, AFFINE), tmp_path / "never")
    assert not (tmp_path / "never").exists()


# ------------------------------------------------------------------------------------------------------------
# the command line
# ------------------------------------------------------------------------------------------------------------
VOXEL_STUDY = textwrap.dedent('''
    import torch
    from torch import nn

    CALLS = []

    def build_model():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(60, 6), nn.Tanh(), nn.Linear(6, 2))
        model.register_forward_hook(lambda *_: CALLS.append(1))
        return model

    def build_data():
        generator = torch.Generator().manual_seed(1)
        x = torch.randn(80, 60, generator=generator)
        return x, torch.stack([x[:, :30].sum(1), x[:, 30:].sum(1)], 1) + torch.randn(80, 2, generator=generator)

    def build_linear():
        """A linear decoder fitted by least squares, so that it correlates with the targets."""
        generator = torch.Generator().manual_seed(1)
        x = torch.randn(80, 60, generator=generator)
        y = torch.stack([x[:, :30].sum(1), x[:, 30:].sum(1)], 1) + torch.randn(80, 2, generator=generator)
        solution = torch.linalg.lstsq(torch.cat([x, torch.ones(80, 1)], 1), y).solution
        model = nn.Linear(60, 2)
        with torch.no_grad():
            model.weight.copy_(solution[:60].T)
            model.bias.copy_(solution[60])
        model.register_forward_hook(lambda *_: CALLS.append(1))
        return model
''')


@pytest.fixture
def study(tmp_path, monkeypatch):
    (tmp_path / "voxel_study.py").write_text(VOXEL_STUDY)
    monkeypatch.syspath_prepend(str(tmp_path))
    nibabel.Nifti1Image(mask_data(), AFFINE).to_filename(tmp_path / "mask.nii.gz")
    labels = np.zeros(GRID, np.int16)
    labels[1:3, 1:6, 1:4], labels[3:5, 1:6, 1:4] = 1, 2
    nibabel.Nifti1Image(labels, AFFINE).to_filename(tmp_path / "atlas.nii.gz")
    (tmp_path / "atlas.tsv").write_text("index\tname\n1\tfirst half\n2\tsecond half\n")
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    sys.modules.pop("voxel_study", None)


def drawn_share(path) -> float:
    """Share of a PNG's pixels that are neither white nor transparent: a blank figure has almost none."""
    pixels = mpimg.imread(path)
    rgb, alpha = pixels[..., :3], pixels[..., 3] if pixels.shape[-1] == 4 else np.ones(pixels.shape[:2])
    return float(np.mean((rgb.min(axis=-1) < 0.9) & (alpha > 0)))


def test_run_with_a_mask_and_an_atlas_writes_every_file(study, capsys):
    code = main(["run", "--model", "voxel_study:build_linear", "--data", "voxel_study:build_data",
                 "--mask", "mask.nii.gz", "--regions", "atlas.nii.gz", "--permutations", "99", "--bootstrap", "40",
                 "--steps", "4", "--out", "out", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    out = study / "out"
    result = igcorr.load(out / "result.npz")
    assert result.metadata["inference"]["regions"] == ["first half", "second half"]
    assert result.metadata["mask"].endswith("mask.nii.gz")
    # figures: drawn, not blank
    for name in ("maps.png", "diagnostics.png", "regions.png", "glass_brain.png"):
        assert drawn_share(out / name) > 0.01, name
    # the region table has the region p-values and intervals, in every file
    csv_lines = (out / "regions.csv").read_text().splitlines()
    header = csv_lines[0].split(",")
    for column in ("output", "region", "sum", "share", "p_value", "p_fwe", "q_value", "low", "high", "se"):
        assert column in header, column
    assert len(csv_lines) == 1 + 2 * 2 and "first half" in csv_lines[1]
    table = result.region_sums()
    first = dict(zip(header, csv_lines[1].split(",")))
    assert float(first["p_fwe"]) == pytest.approx(float(table.column("p_fwe")[0]))
    assert float(first["low"]) == pytest.approx(float(table.column("low")[0]))
    summary = (out / "summary.md").read_text()
    assert "## Regions (tested" in summary and "p_fwe" in summary and "first half" in summary
    assert "stat_desc-igc.nii.gz" in summary and "![glass_brain](glass_brain.png)" in summary
    # brain images with sidecars, read back with nibabel
    inside = mask_data() != 0
    for which, stem in {None: "stat_desc-igc", "p_value": "p_desc-igc_method-permutation",
                        "p_fwe": "p_desc-igc_level-voxel_corr-FWE_method-permutation",
                        "q_value": "p_desc-igc_corr-FDR_method-bh",
                        "ci_low": "lower_desc-igc_ci-95_method-bootstrap",
                        "ci_high": "upper_desc-igc_ci-95_method-bootstrap",
                        "bootstrap_se": "se_desc-igc_method-bootstrap"}.items():
        image = nibabel.load(out / f"{stem}.nii.gz")
        values = result.maps if which is None else result.extra_maps[which]
        np.testing.assert_allclose(image.get_fdata()[inside].T, values.reshape(2, -1), rtol=1e-6, atol=1e-12)
        sidecar = json.loads((out / f"{stem}.json").read_text())
        assert sidecar["Mask"] == "mask.nii.gz" and sidecar["Outputs"] == [0, 1]
        assert sidecar["Parameters"]["n_steps"] == 4 and sidecar["Inference"]["permutations"] == 99
    written = [line for line in capsys.readouterr().out.splitlines() if line.startswith("wrote ")][0]
    listed = {name.strip().rsplit("/", 1)[-1] for name in written[len("wrote "):].split(",")}
    assert listed == {path.name for path in out.iterdir()}  # every file written is announced, and no other

    # igcorr report: the tested regions by default, and the recorded mask's NIfTI files again
    assert main(["report", str(out / "result.npz"), "--out", "redrawn"]) == 0
    redrawn = study / "redrawn"
    assert (redrawn / "regions.csv").read_text() == (out / "regions.csv").read_text()
    assert "p_fwe" in (redrawn / "summary.md").read_text()
    assert (redrawn / "stat_desc-igc.nii.gz").exists() and (redrawn / "glass_brain.png").exists()


@pytest.mark.parametrize("flags, message", [
    (["--mask", "small.nii.gz"], "the samples have 60 values each but the brain mask has 40 voxels"),
    (["--mask", "probability.nii.gz"], "the brain mask is not boolean"),
    (["--mask", "missing.nii.gz"], "no image at missing.nii.gz"),
    (["--mask", "mask.nii.gz", "--regions", "empty_atlas.nii.gz"], "have no voxel inside the brain mask"),
    (["--mask", "mask.nii.gz", "--regions", "coarse_atlas.nii.gz"], "differs from the mask grid"),
    (["--regions", "atlas.nii.gz"], "give --mask"),
])
def test_bad_masks_and_atlases_are_one_line_errors_before_any_compute(study, capsys, flags, message):
    smaller = mask_data()
    smaller[1:5, 1:6, 3] = 0
    nibabel.Nifti1Image(smaller, AFFINE).to_filename(study / "small.nii.gz")
    nibabel.Nifti1Image(mask_data() * 0.6, AFFINE).to_filename(study / "probability.nii.gz")
    labels = np.zeros(GRID, np.int16)
    labels[1:3, 1:6, 1:4] = 1
    nibabel.Nifti1Image(labels, AFFINE).to_filename(study / "empty_atlas.nii.gz")
    (study / "empty_atlas.tsv").write_text("index\tname\n1\tpresent\n2\tabsent\n")
    nibabel.Nifti1Image(np.ones((3, 3, 3), np.int16), AFFINE).to_filename(study / "coarse_atlas.nii.gz")
    import voxel_study

    voxel_study.CALLS.clear()
    code = main(["run", "--model", "voxel_study:build_model", "--data", "voxel_study:build_data", *flags,
                 "--out", "out", "--no-progress"])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("igcorr run: error: "), captured.err
    assert message in lines[0]
    assert not (study / "out").exists() and not voxel_study.CALLS  # nothing computed, nothing written


def test_vector_maps_are_drawn_not_blank(tmp_path):
    rng = np.random.default_rng(2)
    maps = rng.normal(size=(2, 29398)) * 1e-4
    maps[:, 5000:5400] += 3e-3
    result = igcorr.Result("igc", maps, metadata={"outputs": [0, 1]})
    figure = result.plot()
    figure.savefig(tmp_path / "maps.png", dpi=80)
    assert drawn_share(tmp_path / "maps.png") > 0.05
    from igcorr.plotting import plot_maps

    images = plot_maps(rng.normal(size=(2, 8, 8)))  # image maps are still images
    assert images.axes[0].images


def test_reports_of_many_outputs_stay_readable(tmp_path):
    rng = np.random.default_rng(3)
    k = 300
    diagnostics = {"correlation": rng.uniform(-0.2, 0.8, k), "baseline_term": np.zeros(k),
                   "completeness_mean": rng.uniform(1e-6, 1e-4, k), "completeness_max": rng.uniform(1e-5, 1e-3, k)}
    maps = rng.normal(size=(k, 1, 6, 6))
    diagnostics["map_sum"] = maps.reshape(k, -1).sum(axis=1)
    result = igcorr.Result("igc", maps, diagnostics, metadata={"outputs": list(range(k))})
    from igcorr.report import drawn_outputs, write_report

    written = write_report(result, tmp_path)
    best = sorted(np.argsort(-diagnostics["correlation"])[:12].tolist())
    assert drawn_outputs(result) == best
    rows = (tmp_path / "outputs.csv").read_text().splitlines()
    assert len(rows) == k + 1 and rows[0].startswith("output,map_sum,correlation")
    summary = (tmp_path / "summary.md").read_text()
    assert "300 outputs" in summary and summary.count("\n| ") < 20
    assert "… and 250 more outputs" in result.summary()
    for name in ("maps", "diagnostics"):
        assert drawn_share(written[name]) > 0.01


def test_masked_data_and_maps_share_the_voxel_order(mask_img, tmp_path):
    """What --mask assumes: inputs taken with masked_data (or NiftiMasker.transform) are in the order the NIfTI
    maps are written in."""
    volumes = np.random.default_rng(4).normal(size=GRID + (5,))
    inputs = masked_data(nibabel.Nifti1Image(volumes, AFFINE), mask_img)
    reference = quiet(fitted(mask_img).transform, nibabel.Nifti1Image(volumes, AFFINE))
    np.testing.assert_allclose(inputs, reference, rtol=1e-6)
    result = igcorr.Result("igc", inputs[:2].astype(np.float64), metadata={"outputs": [0, 1]})
    image = nibabel.load(write_maps(result, mask_img, tmp_path)["nifti"])
    np.testing.assert_allclose(image.get_fdata()[..., 0][mask_data() != 0], inputs[0], rtol=1e-6)


def test_analytic_p_values_are_not_called_permutation_p_values(mask_img, tmp_path):
    import torch

    generator = torch.Generator().manual_seed(5)
    x = torch.randn(50, 60, generator=generator)
    result = igcorr.NaiveCorrelation().attribute((x, x[:, :3].sum(1)), progress=False)
    written = write_maps(result, fitted(mask_img), tmp_path)
    assert written["nifti_p_value"].name == "p_desc-naivecorrelation.nii.gz"
    sidecar = json.loads(written["sidecar_p_value"].read_text())
    assert "permutation" not in sidecar["Description"] and sidecar["Mask"] == "a fitted NiftiMasker"
    labels = np.zeros(GRID, np.int16)
    labels[1:3, 1:6, 1:4], labels[3:5, 1:6, 1:4] = 1, 2
    regions = atlas_regions(nibabel.Nifti1Image(labels, AFFINE), fitted(mask_img))  # a masker as the mask
    assert [int(mask.sum()) for mask in regions.values()] == [30, 30]
