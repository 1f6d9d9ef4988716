"""Encoding models at voxel scale: pRF fits of IGC maps, short per-batch paths, batch sizes for many outputs
behind a readout, maps kept on disk when they exceed the memory budget, and the pRF mapping example."""

from __future__ import annotations

import json
import subprocess
import sys

import matplotlib
import numpy as np
import pytest
import torch
from torch import nn

matplotlib.use("Agg")
from matplotlib import image as mpimg

import igcorr
from igcorr.errors import InputError, ResultFileError, ShapeError
from igcorr.prf import PRFFits, VisualField, fit_prf, gaussian_maps, plot_prf_centres, plot_prf_fits


def known_parameters(count: int, size: int = 24, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.uniform(3, size - 4, count), rng.uniform(3, size - 4, count),
                            rng.uniform(0.7, 5.0, count), rng.choice([-1.0, 1.0], count) * rng.uniform(0.2, 3, count)])


def drawn_share(path) -> float:
    pixels = mpimg.imread(path)
    return float(np.mean(pixels[..., :3].min(axis=-1) < 0.9))


# ------------------------------------------------------------------------------------------------------------
# the Gaussian fit
# ------------------------------------------------------------------------------------------------------------
def test_the_fit_recovers_known_parameters_on_noiseless_maps(tmp_path):
    truth = known_parameters(300)
    maps = gaussian_maps(truth, (24, 24))
    fits = fit_prf(maps, block=64)
    found = np.column_stack([fits.x, fits.y, fits.sigma, fits.amplitude])
    np.testing.assert_allclose(found, truth, rtol=0, atol=1e-7)
    np.testing.assert_allclose(fits.r2, 1.0, atol=1e-12)
    assert np.array_equal(fits.sign, np.sign(truth[:, 3]).astype(np.int64))
    # channels are summed; memory-mapped maps are read block by block; the block size does not matter
    channels = np.stack([0.25 * maps, 0.75 * maps], axis=1)
    np.testing.assert_allclose(fit_prf(channels).x, fits.x, atol=1e-9)
    stored = np.lib.format.open_memmap(tmp_path / "maps.npy", mode="w+", dtype=np.float64, shape=maps.shape)
    stored[:] = maps
    stored.flush()
    reopened = np.load(tmp_path / "maps.npy", mmap_mode="r")
    assert np.array_equal(fit_prf(reopened, block=7).sigma, fit_prf(maps, block=7).sigma)


def test_the_fit_is_the_least_squares_optimum_that_scipy_finds():
    from scipy.optimize import least_squares

    truth = known_parameters(12, seed=1)
    rng = np.random.default_rng(2)
    maps = gaussian_maps(truth, (24, 24)) + 0.15 * rng.normal(size=(12, 24, 24))
    fits = fit_prf(maps)
    rows, cols = np.meshgrid(np.arange(24.0), np.arange(24.0), indexing="ij")
    for k in range(12):
        def residual(p, k=k):
            return (p[3] * np.exp(-((cols - p[0]) ** 2 + (rows - p[1]) ** 2) / (2 * p[2] ** 2)) - maps[k]).ravel()

        reference = least_squares(residual, truth[k], method="lm", xtol=1e-12, ftol=1e-12, gtol=1e-12).x
        ours = np.array([fits.x[k], fits.y[k], fits.sigma[k], fits.amplitude[k]])
        np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-4)
        assert (residual(ours) ** 2).sum() <= (residual(reference) ** 2).sum() * (1 + 1e-8)
        total = ((maps[k] - maps[k].mean()) ** 2).sum()
        assert fits.r2[k] == pytest.approx(1 - (residual(ours) ** 2).sum() / total, rel=1e-9)


def test_visual_field_geometry():
    # fixation at the centre of a 21 × 21 image (pixel 10, 10); 2 pixels per degree; rows grow downwards
    params = np.array([[14.0, 10.0, 2.0, 1.0], [10.0, 6.0, 2.0, 1.0], [6.0, 10.0, 4.0, 1.0], [10.0, 13.0, 1.0, -1.0],
                       [13.0, 7.0, 2.0, 1.0]])
    fits = fit_prf(gaussian_maps(params, (21, 21)), field=VisualField(2.0))
    np.testing.assert_allclose(fits.eccentricity, [2.0, 2.0, 2.0, 1.5, np.hypot(1.5, 1.5)], atol=1e-7)
    np.testing.assert_allclose(fits.polar_angle, [0.0, 90.0, 180.0, 270.0, 45.0], atol=1e-5)
    np.testing.assert_allclose(fits.sigma_deg, params[:, 2] / 2, atol=1e-7)
    np.testing.assert_allclose(fits.x_deg, (params[:, 0] - 10) / 2, atol=1e-7)
    np.testing.assert_allclose(fits.y_deg, (10 - params[:, 1]) / 2, atol=1e-7)
    moved = fit_prf(gaussian_maps(params, (21, 21)), field=VisualField(2.0, fixation=(14.0, 10.0)))
    assert moved.eccentricity[0] == pytest.approx(0.0, abs=1e-7)
    plain = fit_prf(gaussian_maps(params, (21, 21)))
    with pytest.raises(AttributeError, match="visual-field geometry"):
        plain.eccentricity
    assert np.isnan(plain.column("eccentricity")).all()


def test_fit_arguments_are_checked():
    maps = gaussian_maps(known_parameters(3), (24, 24))
    with pytest.raises(ShapeError, match=r"\(K, H, W\)"):
        fit_prf(maps.reshape(3, -1))
    with pytest.raises(ShapeError, match="no maps"):
        fit_prf(maps[:0])
    bad = maps.copy()
    bad[1, 2, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        fit_prf(bad)
    with pytest.raises(InputError, match="VisualField"):
        fit_prf(maps, field=4.0)
    with pytest.raises(InputError, match="pixels_per_degree"):
        VisualField(0.0)
    with pytest.raises(InputError, match="fixation"):
        VisualField(2.0, fixation=(1.0,))
    with pytest.raises(InputError, match="low < high"):
        fit_prf(maps, sigma_bounds=(3.0, 1.0))
    with pytest.raises(ShapeError, match="outputs has 2 entries"):
        fit_prf(maps, outputs=[0, 1])
    with pytest.raises(InputError, match="block"):
        fit_prf(maps, block=0)


def test_fits_of_a_result_as_a_table_and_figures(tmp_path):
    truth = known_parameters(6, seed=3)
    result = igcorr.Result("igc", gaussian_maps(truth, (24, 24))[:, None], metadata={"outputs": [5, 6, 7, 8, 9, 10]})
    fits = fit_prf(result, field=VisualField(3.0))
    assert list(fits.outputs) == [5, 6, 7, 8, 9, 10]
    rows = fits.rows()
    assert rows[0]["output"] == 5 and rows[0]["x"] == pytest.approx(truth[0, 0])
    path = fits.to_csv(tmp_path / "prf.csv")
    lines = path.read_text().splitlines()
    assert lines[0].split(",")[:7] == ["output", "x", "y", "sigma", "amplitude", "sign", "r2"] and len(lines) == 7
    assert float(lines[1].split(",")[1]) == pytest.approx(truth[0, 0])
    np.testing.assert_allclose(fits.model_maps([1, 2]), gaussian_maps(truth[1:3], (24, 24)), atol=1e-7)
    truth_fits = PRFFits(np.arange(6), truth[:, 0], truth[:, 1], truth[:, 2], truth[:, 3], np.ones(6),
                         np.zeros(6, dtype=np.int64), (24, 24), VisualField(3.0))
    for name, figure in {"centres": plot_prf_centres(fits, truth=truth_fits),
                         "pixels": plot_prf_centres(fit_prf(result), min_r2=0.5),
                         "fits": plot_prf_fits(result, fits, [0, 3], truth=truth_fits, title="fits")}.items():
        figure.savefig(tmp_path / f"{name}.png", dpi=60)
        assert drawn_share(tmp_path / f"{name}.png") > 0.02, name


# ------------------------------------------------------------------------------------------------------------
# many outputs behind a readout: short paths, batch sizes, maps on disk
# ------------------------------------------------------------------------------------------------------------
class Encoder(nn.Module):
    """A tiny encoding model: a nonlinear core of width 4 and a linear readout to many outputs."""

    def __init__(self, n_in: int = 64, n_out: int = 2000) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.core = nn.Sequential(nn.Linear(n_in, 4), nn.Tanh())
        self.readout = nn.Linear(4, n_out)

    def forward(self, x):
        return self.readout(self.core(x))


def encoding_data(n: int = 30, n_in: int = 64, n_out: int = 2000):
    model = Encoder(n_in, n_out).double().eval()
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(n, n_in, dtype=torch.float64, generator=generator)
    with torch.no_grad():
        y = model(x) + torch.randn(n, n_out, dtype=torch.float64, generator=generator)
    return model, (x, y)


def test_paths_shorter_than_every_chunk_size_are_still_timed():
    from igcorr.paths.budget import ChunkTuning

    tuning = ChunkTuning([128, 256, 512], ["loop", "batched"])
    tuning.cap(24)  # every path holds 24 points: the warm-up and the trial run on whole paths
    assert tuning.queue == [24, 24] and tuning.trying == 24
    tuning.record(24, {"loop": 9.0, "batched": 9.0})
    tuning.record(24, {"loop": 2.0, "batched": 1.0})
    assert tuning.trying is None and tuning.choice() == (512, "batched")  # whole paths, the faster strategy
    later = ChunkTuning([128, 256, 512], ["loop"])
    later.record(128, {"loop": 1.0})
    later.record(128, {"loop": 1.28})
    later.cap(200)  # 128 was timed on longer paths; now the paths hold 200 points
    assert later.queue == [200]
    later.record(200, {"loop": 1.0})
    assert later.choice() == (512, "loop")
    later = ChunkTuning([128, 256], ["loop"])
    later.record(128, {"loop": 1.0})
    later.record(128, {"loop": 0.5})
    later.cap(200)
    later.record(200, {"loop": 2.0})
    assert later.choice() == (128, "loop")

    model, data = encoding_data(n=10, n_out=30)
    tuned = igcorr.IGC(model).attribute(data, n_steps=8, batch_size=1, progress=False)  # 8 points per path
    engine = tuned.metadata["engine"]
    assert engine["microseconds_per_point"] and set(engine["microseconds_per_point"]) <= {"8 loop", "8 batched"}
    fixed = igcorr.IGC(model, output_strategy="loop", chunk_points=3).attribute(data, n_steps=8, batch_size=1,
                                                                                progress=False)
    np.testing.assert_allclose(tuned.maps, fixed.maps, rtol=0, atol=1e-12)


def test_batches_of_many_outputs_hold_enough_path_points():
    from igcorr.baselines import Constant
    from igcorr.dataset.run import DatasetRun
    from igcorr.paths.budget import MemoryBudget

    probe = torch.zeros(1, 1024, dtype=torch.float32)
    spec = Constant(0.0)
    budget = MemoryBudget(4 * 2**30)
    # K·D attributions: two float64 copies and a bool; per-output scalars; baseline
    per_sample = 17 * 10_000 * 1024 + 160 * 10_000 + 3 * 1024 * 8
    # 10,000 voxels × 1,024 pixels, 64 points per sample: 8 samples give 512 points (more than 128 MiB, less
    # than a quarter of an 8 GiB budget)
    size = DatasetRun._batch_size(MemoryBudget(8 * 2**30), 10_000, (1024,), spec, probe, 64, 200 * 2**20)
    assert size == 8 and size * per_sample > 128 * 2**20
    # 16 points per sample: 32 samples would be 5.6 GB; a quarter of the budget holds 6
    assert DatasetRun._batch_size(budget, 10_000, (1024,), spec, probe, 16, 200 * 2**20) == 2**30 // per_sample
    # without an estimate of the points per sample, at most 128 MiB as before, but at least one sample
    assert DatasetRun._batch_size(budget, 10_000, (1024,), spec, probe, None, 200 * 2**20) == 1
    assert DatasetRun._batch_size(budget, 1_000, (1024,), spec, probe, None, 200 * 2**20) == 2**27 // (
        17 * 1_000 * 1024 + 160 * 1_000 + 3 * 1024 * 8)
    # a smaller budget: at most a quarter of it for the points, at least one sample if the room holds it
    small = DatasetRun._batch_size(MemoryBudget(2**30), 10_000, (1024,), spec, probe, 64, chunk_bytes=100 * 2**20)
    assert small == 1 and per_sample <= 2**30 - 100 * 2**20 - 3 * 8 * 10_000 * 1024 - 32 * 2**20
    # few outputs: many points per batch already, nothing changes
    assert DatasetRun._batch_size(budget, 3, (1024,), spec, probe, 64, 2**20) == 256
    # the correlation reducer alone folds batches in block by block: one float64 copy and a bool per value
    lean = 9 * 10_000 * 1024 + 160 * 10_000 + 3 * 1024 * 8
    assert DatasetRun._batch_size(budget, 10_000, (1024,), spec, probe, 16, 200 * 2**20,
                                  block_wise=True) == 2**30 // lean


def test_a_state_that_fits_beside_one_sample_stays_in_memory():
    from igcorr.baselines import Constant
    from igcorr.dataset.run import _maps_belong_on_disk
    from igcorr.paths.budget import MemoryBudget

    probe = torch.zeros(1, 1024, dtype=torch.float32)
    budget = MemoryBudget(4 * 2**30)
    # 100,000 voxels × 1,024 pixels: the state is 2.29 GiB and one sample 0.76 GiB per float64 copy, so the
    # block-wise correlation update (one copy) fits in 4 GiB, with a second copy it does not
    assert not _maps_belong_on_disk(budget, 100_000, (1024,), Constant(0.0), probe, 64 * 2**20, block_wise=True)
    assert _maps_belong_on_disk(budget, 100_000, (1024,), Constant(0.0), probe, 64 * 2**20, block_wise=False)


class RootCore(nn.Module):
    """√|x| on the first input (its gradient is not finite where that input is 0), then a linear readout."""

    def __init__(self, n_out: int) -> None:
        super().__init__()
        self.core = nn.Linear(8, 4).double()
        self.readout = nn.Linear(4, n_out).double()

    def forward(self, x):
        hidden = torch.cat([x[:, :1].abs().sqrt(), x[:, 1:]], dim=1)
        return self.readout(torch.tanh(self.core(hidden)))


def test_non_finite_values_are_found_before_and_after_the_readout_projection():
    from igcorr.errors import ModelError, NonFiniteError

    torch.manual_seed(0)
    model = RootCore(50).eval()
    x = torch.randn(6, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    y = torch.randn(6, 50, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    x[:, 0] = 0.0  # the gradients are NaN on every path
    run = igcorr.IGC(model).attribute
    with pytest.raises(NonFiniteError, match="gradients of sample . are not finite"):
        run((x, y), n_steps=4, method="gausslegendre", progress=False)
    x[:, 0] = 1.0
    assert run((x, y), n_steps=4, method="gausslegendre", progress=False).metadata["engine"]["readout"]["layer"] == "readout"
    with torch.no_grad():
        model.readout.weight[7, 2] = float("nan")  # the integrals are finite, the projection would not be
    with pytest.raises(ModelError, match="readout layer 'readout'"):
        run((x, y), n_steps=4, method="gausslegendre", progress=False)


def test_maps_beyond_the_budget_are_kept_on_disk_with_the_same_values():
    model, data = encoding_data()
    in_memory = igcorr.IGC(model, chunk_points=8).attribute(data, n_steps=8, progress=False)
    # the maps' state (3 · 2,000 · 64 float64 = 3.1 MB) does not fit 3 MB: kept on disk, only its blocks in memory
    on_disk = igcorr.IGC(model, max_memory=3_000_000, chunk_points=8).attribute(data, n_steps=8, progress=False)
    assert in_memory.metadata["maps_storage"] == "memory" and on_disk.metadata["maps_storage"] == "disk"
    np.testing.assert_allclose(on_disk.maps, in_memory.maps, rtol=1e-12, atol=1e-15)
    for name in ("correlation", "baseline_term", "map_sum", "completeness_max"):
        np.testing.assert_allclose(on_disk.diagnostics[name], in_memory.diagnostics[name], rtol=1e-12, atol=1e-15)
    # it fits the budget beside the batch and a chunk: the correlation reducer projects the readout's integrals
    # block by block of outputs, so a sample holds H·D values (here 4 · 64), not K·D
    roomy = igcorr.IGC(model, max_memory=16_000_000, chunk_points=8).attribute(data, n_steps=8, progress=False)
    assert roomy.metadata["maps_storage"] == "memory"
    np.testing.assert_allclose(roomy.maps, in_memory.maps, rtol=1e-12, atol=1e-15)
    # Monte-Carlo variances stay in memory: such a run is refused before any path integral, as before
    with pytest.raises(InputError, match="max_memory"):
        igcorr.IGC(model, max_memory=3_000_000, chunk_points=8).attribute(data, n_steps=8, estimator="montecarlo",
                                                                          baselines=2, progress=False)


def test_the_disk_state_merges_and_resumes_like_the_memory_state():
    from igcorr.reducers import correlation
    from igcorr.reducers.base import CoMoment

    generator = torch.Generator().manual_seed(4)
    batches = [(torch.randn(n, 13, 11, dtype=torch.float64, generator=generator) * 3 + 1,
                torch.randn(n, 13, 1, dtype=torch.float64, generator=generator)) for n in (3, 5, 1, 7)]
    reference = CoMoment()
    for a, b in batches:
        reference.update(a, b)
    for disk in (False, True):
        first, second = correlation.MapMoment(), correlation.MapMoment()
        for part in (first, second):
            if disk:
                part.store_on_disk(block_bytes=2000)  # blocks of a few outputs
            else:
                part.block_bytes = 2000
        for a, b in batches[:2]:
            first.update(a, b)
        for a, b in batches[2:]:
            second.update(a, b)
        first.merge(second)  # a merge arrives in memory ...
        resumed = correlation.MapMoment()
        if disk:
            resumed.store_on_disk(block_bytes=2000)
        resumed.load_state_dict({key: value.clone() for key, value in first.state_dict().items()})
        extra = (torch.randn(2, 13, 11, dtype=torch.float64, generator=generator),
                 torch.randn(2, 13, 1, dtype=torch.float64, generator=generator))
        resumed.update(*extra)  # ... and goes back to disk at the next update
        expected = CoMoment()
        expected.load_state_dict({key: value.clone() for key, value in reference.state_dict().items()})
        expected.update(*extra)
        for name in ("mean_a", "comoment", "mean_b"):
            torch.testing.assert_close(getattr(resumed, name), getattr(expected, name), rtol=1e-12, atol=1e-13)
        if disk:
            assert resumed.comoment.data_ptr() == resumed._files["comoment"].tensor.data_ptr()
        scale = torch.rand(13, dtype=torch.float64) + 0.5
        maps, sums = resumed.scaled_covariance(scale)
        torch.testing.assert_close(maps, expected.covariance() / scale[:, None], rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(sums, maps.sum(dim=1), rtol=1e-12, atol=1e-13)


def test_large_maps_are_saved_beside_the_result_and_opened_lazily(tmp_path, monkeypatch):
    import igcorr.result as result_module

    model, data = encoding_data()
    result = igcorr.IGC(model, max_memory=3_000_000, chunk_points=8).attribute(data, n_steps=8, progress=False)
    monkeypatch.setattr(result_module, "EXTERNAL_MAPS_BYTES", 1000)
    path = result.save(tmp_path / "run.npz")
    beside = tmp_path / "run.maps.npy"
    assert beside.exists() and beside.stat().st_size >= result.maps.nbytes
    loaded = igcorr.load(path)
    assert isinstance(loaded.maps, np.memmap) and not loaded.maps.flags.writeable
    np.testing.assert_array_equal(loaded.maps, result.maps)
    np.testing.assert_array_equal(loaded.diagnostics["correlation"], result.diagnostics["correlation"])
    assert loaded.metadata["maps_storage"] == "disk"
    small = igcorr.Result("igc", np.ones((2, 3)), metadata={"outputs": [0, 1]})
    monkeypatch.setattr(result_module, "EXTERNAL_MAPS_BYTES", 256 * 2**20)
    assert igcorr.load(small.save(tmp_path / "small.npz")).maps.sum() == 6
    assert not (tmp_path / "small.maps.npy").exists()
    beside.write_bytes(beside.read_bytes()[:200])
    with pytest.raises(ResultFileError, match="not a readable maps file"):
        igcorr.load(path)
    beside.unlink()
    with pytest.raises(ResultFileError, match="run.maps.npy, which is missing"):
        igcorr.load(path)


PEAK_SCRIPT = """
import json, resource, sys, torch, igcorr
from torch import nn
torch.set_num_threads(1)
torch.manual_seed(0)
n_out, budget = int(sys.argv[1]), int(sys.argv[2])
model = nn.Sequential(nn.Linear(256, 4), nn.Tanh(), nn.Linear(4, n_out)).double().eval()
x = torch.randn(24, 256, dtype=torch.float64)
with torch.no_grad():
    y = model(x) + torch.randn(24, n_out, dtype=torch.float64)
# a first small run pays the fixed costs (thread pools, allocator), which the budget does not cover
igcorr.IGC(model, chunk_points=16).attribute((x[:4], y[:4]), outputs=list(range(8)), n_steps=4, progress=False)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
result = igcorr.IGC(model, max_memory=budget, chunk_points=16).attribute((x, y), n_steps=4, progress=False)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"growth": after - before, "storage": result.metadata["maps_storage"],
                  "batch": result.metadata["batch_size"], "sum": float(result.map_sums.sum())}))
"""


@pytest.mark.parametrize("n_out, storage", [(20_000, "disk"), (10_000, "memory")])
def test_runs_of_many_outputs_stay_within_their_budget(n_out, storage):
    """Fresh process, 256 inputs and a budget of 128 MiB: 20,000 outputs give a state of 123 MB, which fits the
    budget but not beside the reducer's working block, kept on disk; 10,000 outputs a state of 61 MB, kept in
    memory beside batches of readout integrals (the reducer projects them block by block of outputs, so a
    sample never holds its 20 MB of projected attributions)."""
    budget = 128 * 2**20
    completed = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(n_out), str(budget)], capture_output=True,
                               text=True, timeout=300, check=True)
    report = json.loads(completed.stdout.splitlines()[-1])
    assert report["storage"] == storage and report["batch"] >= 1
    assert report["growth"] <= budget, report


# ------------------------------------------------------------------------------------------------------------
# the example
# ------------------------------------------------------------------------------------------------------------
def test_the_prf_example_writes_its_files(tmp_path):
    from igcorr_examples.prf import run_prf_example, simulate_population

    report = run_prf_example(tmp_path, n_voxels=40, n_train=300, n_test=60, epochs=2, progress=False)
    for name in ("result.npz", "prf.csv", "prf_centres.png", "prf_centres_reverse_correlation.png", "prf_fits.png",
                 "prf_recovery.png", "summary.md"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert set(report["recovery"]) == {"igc", "reverse_correlation", "reverse_correlation_held_out"}
    assert report["completeness_max"] < 1e-4  # one Gauss-Legendre node is exact for this network
    table = (tmp_path / "prf.csv").read_text().splitlines()
    assert len(table) == 41 and table[0].startswith("voxel,true_x,true_y,true_sigma")
    population = simulate_population(40)
    assert float(table[1].split(",")[1]) == pytest.approx(population.x[0], rel=1e-5)
    assert 0.5 <= population.ceiling.min() and population.ceiling.max() <= 0.9
    assert "| median centre error (px) |" in (tmp_path / "summary.md").read_text()


def test_the_prf_example_command(tmp_path, monkeypatch, capsys):
    import igcorr_examples.prf as example
    from igcorr.cli import main

    seen = {}

    def fake(out, **options):
        seen.update(options)
        recovery = {"centre_error_median": 0.2, "size_correlation": 0.9}
        return {"n_voxels": options["n_voxels"], "held_out_r_median": 0.5, "seconds": {"total": 1.0, "igc": 0.5},
                "recovery": {"igc": recovery, "reverse_correlation": recovery}}

    monkeypatch.setattr(example, "run_prf_example", fake)
    assert main(["example", "prf-mapping", "--voxels", "50", "--samples", "30", "--epochs", "3", "--out",
                 str(tmp_path / "out"), "--no-progress"]) == 0
    assert seen == {"n_voxels": 50, "n_test": 30, "epochs": 3, "seed": 0, "progress": False}
    assert "median pRF centre error: IGC 0.200 px" in capsys.readouterr().out
    assert main(["example", "prf-mapping", "--voxels", "1", "--out", str(tmp_path / "bad")]) == 2
    assert "--voxels must be an integer >= 2" in capsys.readouterr().err
