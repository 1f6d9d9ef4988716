"""map_tolerance: the number of nodes chosen for a tolerance on the dataset map, from a pilot on the data.

The automatic choice integrates on shifted grids (unbiased per path), measures on a pilot how the map error
falls with the nodes, and checks the achieved error after the run. These tests compare it with converged maps
on small smooth and ReLU models, and check what it reports, when it warns, and that batching, checkpoints,
baselines, outputs, the readout shortcut and several processes leave it deterministic.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import igcorr
from igcorr.dataset.estimators import AutoRule, ShiftedGrid, estimator_from_options
from igcorr.errors import InputError
from igcorr.paths.quadrature import shifted_nodes

from conftest import Crashing

ROOT = Path(__file__).resolve().parents[1]


D = 64


def trained(activation: type[nn.Module], n_out: int = 1, seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small float64 MLP on 64 inputs fitted to a nonlinear target, and its data (120 samples)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(120, D, dtype=torch.float64, generator=generator)
    signal = torch.relu(x[:, :3].sum(dim=1)) + x[:, 3] * x[:, 4] - x[:, 5:8].sum(dim=1)
    y = torch.stack([signal + k * x[:, 8 + k] for k in range(n_out)], dim=1)
    y = y + 0.5 * torch.randn(y.shape, dtype=torch.float64, generator=generator)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(D, 24), activation(), nn.Linear(24, 24), activation(),
                          nn.Linear(24, n_out)).double()
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(150):
        optimiser.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        optimiser.step()
    return model.eval(), x, y[:, 0] if n_out == 1 else y


def relative_error(maps: np.ndarray, reference: np.ndarray) -> float:
    return float(np.linalg.norm(maps - reference) / np.linalg.norm(reference))


def quiet(call, *args, **kwargs):
    """Run ``call`` and return (result, warnings raised)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call(*args, **kwargs)
    return result, [str(w.message) for w in caught]


# ----------------------------------------------------------------------------------------- the shifted grids
def test_shifted_nodes_are_keyed_stratified_and_cover_their_cells():
    nodes = shifted_nodes(3, np.arange(10, 16), 4, 6)
    assert nodes.shape == (6, 4, 6) and nodes.dtype == torch.float64
    # a pure function of (seed, sample index): any batch gives the same nodes
    np.testing.assert_array_equal(shifted_nodes(3, np.array([13, 11]), 4, 6), nodes[[3, 1]])
    assert not torch.equal(shifted_nodes(3, np.arange(10, 16), 4, 6, replicate=1), nodes)
    cells = 3
    for c in range(cells):
        pair = nodes[:, :, 2 * c:2 * c + 2] * cells - c  # positions within cell c, in [0, 1]
        assert bool(((pair >= 0) & (pair <= 1)).all())
        np.testing.assert_allclose(pair[..., 0] + pair[..., 1], 1.0, atol=1e-12)  # antithetic
        # the 2M nodes of a sample's M paths fall in the cell's 2M equal sub-intervals, one each
        slots = torch.floor(pair * 8).reshape(6, 8).sort(dim=1).values
        np.testing.assert_array_equal(slots, np.tile(np.arange(8.0), (6, 1)))
    with pytest.raises(InputError, match="even"):
        shifted_nodes(0, np.arange(2), 1, 5)


def test_shifted_grids_are_unbiased_for_a_kinked_integrand():
    # ∫_0^1 relu(α − 0.37) dα = 0.63² / 2; a fixed rule is off, the mean over independent draws is not
    exact = 0.63 ** 2 / 2
    nodes = shifted_nodes(0, np.arange(4000), 2, 2)
    estimates = torch.relu(nodes - 0.37).mean(dim=2)
    assert abs(float(estimates.mean()) - exact) < 4 * float(estimates.std()) / np.sqrt(estimates.numel())
    midpoint = float(torch.relu(torch.tensor([0.25, 0.75]) - 0.37).mean())
    assert abs(midpoint - exact) > 10 * float(estimates.std()) / np.sqrt(estimates.numel())


# ----------------------------------------------------------------------------------------- accuracy
@pytest.mark.parametrize("activation, reference_options", [
    (nn.Tanh, dict(n_steps=64, method="gausslegendre")),
    (nn.ReLU, dict(n_steps=256, method="riemann_middle")),
], ids=["smooth", "relu"])
def test_the_tolerance_is_reached_against_a_converged_map(activation, reference_options):
    model, x, y = trained(activation)
    igc = igcorr.IGC(model)
    reference = igc.attribute((x, y), baselines=4, progress=False, **reference_options).maps
    for tolerance in (0.05, 0.01):
        result, caught = quiet(igc.attribute, (x, y), baselines=4, map_tolerance=tolerance, progress=False)
        measured = relative_error(result.maps, reference)
        parameters = result.metadata["parameters"]
        assert measured <= tolerance, (tolerance, measured, parameters)
        assert parameters["estimated_map_error"] <= tolerance
        # the estimates are honest: within a factor 2.5 of the error measured against the converged map
        for estimate in (parameters["estimated_map_error"], parameters["checked_map_error"]):
            assert measured / 2.5 <= estimate <= 2.5 * measured, (estimate, measured)
        assert not any("map_tolerance" in message for message in caught)
    # a tighter tolerance takes more nodes
    loose = igc.attribute((x, y), baselines=4, map_tolerance=0.05, progress=False)
    assert loose.metadata["parameters"]["n_steps"] <= parameters["n_steps"]


class Separable(nn.Module):
    """K outputs Σ_i a_ki relu(x_i − c_i) + d_ki tanh(x_i): kinks and curvature, and IG known in closed form,
    since along a straight path each term depends on its own input only:
    IG_ki(x, b) = a_ki (relu(x_i − c_i) − relu(b_i − c_i)) + d_ki (tanh(x_i) − tanh(b_i))."""

    def __init__(self, n_inputs: int, n_outputs: int, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.a = nn.Parameter(torch.randn(n_outputs, n_inputs, dtype=torch.float64, generator=generator))
        self.d = nn.Parameter(torch.randn(n_outputs, n_inputs, dtype=torch.float64, generator=generator))
        self.c = nn.Parameter(0.5 * torch.randn(n_inputs, dtype=torch.float64, generator=generator))

    def forward(self, x):
        return torch.relu(x - self.c) @ self.a.T + torch.tanh(x) @ self.d.T

    def exact_igc(self, x: torch.Tensor, y: torch.Tensor, baselines: torch.Tensor) -> np.ndarray:
        """The exact IGC map (K, D) with baselines shared by every sample."""
        with torch.no_grad():
            def terms(t):  # (n, K, D) per-input terms of every output
                return self.a * torch.relu(t - self.c)[:, None] + self.d * torch.tanh(t)[:, None]
            ig = terms(x) - terms(baselines).mean(dim=0)
            predictions = self(x)
            centred = y - y.mean(dim=0)
            scale = y.std(dim=0, unbiased=False) * predictions.std(dim=0, unbiased=False)
            return (torch.einsum("nkd,nk->kd", ig, centred) / len(x) / scale[:, None]).numpy()


@pytest.mark.parametrize("baselines", ["shared", "zero"])
def test_the_tolerance_is_reached_on_a_model_whose_map_is_known(baselines):
    # the exact map is the oracle: the achieved error is at most the tolerance and the estimates are honest
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(300, 12, dtype=torch.float64, generator=generator)
    model = Separable(12, 2).eval()
    with torch.no_grad():
        y = model(x) + 0.5 * torch.randn(300, 2, dtype=torch.float64, generator=generator)
    shared = x[:3] if baselines == "shared" else torch.zeros(1, 12, dtype=torch.float64)
    exact = model.exact_igc(x, y, shared)
    given = igcorr.baselines.Shared(shared) if baselines == "shared" else None
    for tolerance in (0.05, 0.01):
        result, caught = quiet(igcorr.IGC(model).attribute, (x, y), baselines=given, map_tolerance=tolerance,
                               progress=False)
        measured = relative_error(result.maps, exact)
        parameters = result.metadata["parameters"]
        assert measured <= tolerance, (measured, parameters)
        for estimate in (parameters["estimated_map_error"], parameters["checked_map_error"]):
            assert measured / 2.5 <= estimate <= 2.5 * measured, (estimate, measured, parameters)
        assert result.diagnostics["map_error_estimate"].shape == (2,)
        assert not any("map_tolerance" in message for message in caught)
    # a fixed rule with the chosen nodes gives the same map by hand
    by_hand = igcorr.IGC(model).attribute((x, y), baselines=given, method=parameters["method"],
                                          n_steps=parameters["n_steps"], progress=False)
    np.testing.assert_allclose(by_hand.maps, result.maps, rtol=0, atol=1e-12)


def test_the_choice_and_the_estimates_are_reported():
    model, x, y = trained(nn.Tanh)
    result = igcorr.IGC(model).attribute((x, y), baselines=4, map_tolerance=0.02, progress=False)
    parameters = result.metadata["parameters"]
    assert parameters["estimator"] == "auto" and parameters["method"] in ("riemann_middle", "shifted")
    assert parameters["map_tolerance"] == 0.02
    assert parameters["n_steps"] in parameters["pilot_steps"][parameters["method"]]
    assert set(parameters["pilot_steps"]) == {"riemann_middle", "shifted"}
    # 120 samples: the minimum sizes (12 pilot and 4 check samples, 24 measured on the first grids)
    assert (parameters["pilot_samples"], parameters["check_samples"], parameters["first_samples"]) == (12, 4, 24)
    assert 0 < parameters["estimated_map_error"] <= 0.8 * 0.02 + 1e-12
    estimate = result.diagnostics["map_error_estimate"]
    assert estimate.shape == (1,) and float(estimate[0]) == pytest.approx(parameters["checked_map_error"])
    # the same run with the typed estimator
    typed = igcorr.IGC(model).attribute((x, y), baselines=4, path=AutoRule(0.02), progress=False)
    np.testing.assert_array_equal(typed.maps, result.maps)
    assert typed.metadata["parameters"] == parameters
    # and its choice reproduced by hand
    by_hand = igcorr.IGC(model).attribute((x, y), baselines=4, method=parameters["method"],
                                          n_steps=parameters["n_steps"], progress=False)
    np.testing.assert_allclose(by_hand.maps, result.maps, rtol=0, atol=1e-12)
    assert by_hand.metadata["parameters"] == {"n_steps": parameters["n_steps"], "method": parameters["method"]}


def test_shifted_grids_are_chosen_where_fixed_errors_do_not_cancel():
    # one smooth output whose quadrature error follows the target: the midpoint rule's errors add up over the
    # samples instead of cancelling, which the systematic factor measures, so the unbiased grids win
    generator = torch.Generator().manual_seed(3)
    x = torch.rand(400, 16, dtype=torch.float64, generator=generator)
    model = nn.Sequential(nn.Linear(16, 1), nn.Softplus(beta=4)).double().eval()
    with torch.no_grad():
        model[0].weight.fill_(0.5)
        model[0].bias.fill_(-2.0)
        y = model(x)[:, 0] + 0.01 * torch.randn(400, dtype=torch.float64, generator=generator)
    igc = igcorr.IGC(model)
    reference = igc.attribute((x, y), n_steps=64, method="gausslegendre", progress=False).maps
    midpoint = igc.attribute((x, y), n_steps=4, method="riemann_middle", progress=False).maps
    result = igc.attribute((x, y), map_tolerance=0.01, progress=False)
    parameters = result.metadata["parameters"]
    assert relative_error(result.maps, reference) <= 0.01
    assert parameters["checked_map_error"] / 2.5 <= relative_error(result.maps, reference) * 1.0 + 1e-4
    assert relative_error(midpoint, reference) > 0.01  # a fixed rule with as many nodes misses


def test_a_missed_tolerance_is_found_by_the_final_check_and_warned_about():
    model, x, y = trained(nn.ReLU)
    reference = igcorr.IGC(model).attribute((x, y), baselines=4, n_steps=256, method="riemann_middle",
                                            progress=False).maps
    # 4 nodes at most cannot reach 0.1 %: the pilot stops there and the check says by how much it missed
    with pytest.warns(UserWarning, match=r"above map_tolerance=0.001, .*at max_steps"):
        result = igcorr.IGC(model).attribute((x, y), baselines=4, path=AutoRule(0.001, max_steps=4),
                                             progress=False)
    parameters = result.metadata["parameters"]
    assert parameters["n_steps"] == 4 and parameters["checked_map_error"] > 0.001
    measured = relative_error(result.maps, reference)
    assert measured > 0.001 and measured / 2.5 <= parameters["checked_map_error"] <= 2.5 * measured


def test_results_do_not_depend_on_the_batch_size():
    model, x, y = trained(nn.ReLU, n_out=3)
    runs = [igcorr.IGC(model).attribute((x, y), baselines=4, map_tolerance=0.02, batch_size=size, progress=False)
            for size in (5, 16, None)]
    for run in runs[1:]:
        np.testing.assert_allclose(run.maps, runs[0].maps, rtol=0, atol=1e-12)
        parameters, first = dict(run.metadata["parameters"]), dict(runs[0].metadata["parameters"])
        assert parameters.pop("checked_map_error") == pytest.approx(first.pop("checked_map_error"), rel=1e-9)
        assert parameters == first
        np.testing.assert_allclose(run.diagnostics["map_error_estimate"], runs[0].diagnostics["map_error_estimate"],
                                   rtol=1e-9)
    other_seed = igcorr.IGC(model).attribute((x, y), baselines=4, map_tolerance=0.02, seed=1, progress=False)
    assert not np.array_equal(other_seed.maps, runs[0].maps)


@pytest.mark.parametrize("baselines", ["shared", "per-sample", "zero"])
def test_shared_and_per_sample_baselines(baselines):
    model, x, y = trained(nn.Tanh)
    given = {"shared": igcorr.baselines.Shared(x[:5]), "per-sample": 5, "zero": None}[baselines]
    igc = igcorr.IGC(model)
    reference = igc.attribute((x, y), baselines=given, n_steps=64, method="gausslegendre", progress=False).maps
    result = igc.attribute((x, y), baselines=given, map_tolerance=0.01, progress=False)
    assert relative_error(result.maps, reference) <= 0.01
    if baselines == "shared":  # Σ map = r exactly for shared baselines, up to the quadrature error
        assert abs(result.map_sums[0] - result.correlation[0]) < 0.01 * abs(result.correlation[0])


def test_several_outputs_softmax_and_the_readout_shortcut():
    model, x, y = trained(nn.ReLU, n_out=3)
    classifier = igcorr.IGC(model, score="softmax")
    labels = y.argmax(dim=1)
    reference = classifier.attribute((x, labels), baselines=4, n_steps=256, method="riemann_middle",
                                     progress=False).maps
    result = classifier.attribute((x, labels), baselines=4, map_tolerance=0.02, progress=False)
    assert result.maps.shape == (3, D) and result.diagnostics["map_error_estimate"].shape == (3,)
    assert relative_error(result.maps, reference) <= 0.02
    # the readout shortcut (more outputs than readout inputs) gives the same choice and maps as without it
    torch.manual_seed(4)
    wide = nn.Sequential(nn.Linear(D, 6), nn.Tanh(), nn.Linear(6, 12)).double().eval()
    with torch.no_grad():
        targets = wide(x) + torch.randn(len(x), 12, dtype=torch.float64)
    shortcut = igcorr.IGC(wide).attribute((x, targets), baselines=3, map_tolerance=0.02, progress=False)
    plain = igcorr.IGC(wide, readout=False).attribute((x, targets), baselines=3, map_tolerance=0.02, progress=False)
    assert shortcut.metadata["engine"]["readout"] is not None and plain.metadata["engine"]["readout"] is None
    assert shortcut.metadata["parameters"]["n_steps"] == plain.metadata["parameters"]["n_steps"]
    np.testing.assert_allclose(shortcut.maps, plain.maps, rtol=0, atol=1e-10)


def test_igac_and_ig_moments_weight_the_pilot_as_their_maps():
    model, x, y = trained(nn.Tanh, n_out=2)
    # IGMoments' mean map with zero baselines (with baselines drawn from the same data it nearly vanishes, and a
    # relative tolerance on a vanishing map cannot be planned from a pilot: the final check would warn)
    for method, baselines in ((igcorr.IGaC, 4), (igcorr.IGMoments, None)):
        reference = method(model).attribute((x, y), baselines=baselines, n_steps=64, method="gausslegendre",
                                            progress=False).maps
        result = method(model).attribute((x, y), baselines=baselines, map_tolerance=0.02, progress=False)
        measured = relative_error(result.maps, reference)
        assert measured <= 0.02
        assert measured / 2.5 <= result.metadata["parameters"]["checked_map_error"] <= 2.5 * measured


# ----------------------------------------------------------------------------------------- long runs
def test_a_checkpointed_automatic_run_resumes_to_the_same_map(tmp_path):
    model, x, y = trained(nn.ReLU)
    # shared baselines: the crash comes from reading sample 65 for the attribution, not as a baseline
    options = dict(baselines=igcorr.baselines.Shared(x[:4]), map_tolerance=0.02, batch_size=10, progress=False)
    fresh = igcorr.IGC(model).attribute(Crashing(x, y), **options)
    path = tmp_path / "auto.ckpt"
    with pytest.raises(RuntimeError, match="simulated crash"):
        igcorr.IGC(model).attribute(Crashing(x, y, fail_at=65), checkpoint=path, checkpoint_every=0, **options)
    saved = torch.load(path, weights_only=True)
    assert saved["next"] == 60 and not saved["complete"]
    resumed = igcorr.IGC(model).attribute(Crashing(x, y), checkpoint=path, checkpoint_every=0, **options)
    np.testing.assert_allclose(resumed.maps, fresh.maps, rtol=0, atol=1e-12)
    assert resumed.metadata["parameters"] == fresh.metadata["parameters"]
    # another tolerance is another computation: its checkpoint is refused
    with pytest.raises(Exception, match="map_tolerance"):
        igcorr.IGC(model).attribute(Crashing(x, y), checkpoint=path, **{**options, "map_tolerance": 0.05})


WORKER = """
import sys, torch, igcorr
from torch import nn
generator = torch.Generator().manual_seed(0)
x = torch.randn(41, 10, dtype=torch.float64, generator=generator)
y = x[:, 0] * x[:, 1] + x[:, 2] + 0.3 * torch.randn(41, dtype=torch.float64, generator=generator)
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 1)).double().eval()
result = igcorr.IGC(model).attribute((x, y), baselines=3, map_tolerance=0.02, batch_size=4, progress=False)
result.save(sys.argv[1])
"""


def test_two_processes_choose_alike_and_give_the_one_process_map(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    single = subprocess.run([sys.executable, str(script), str(tmp_path / "single.npz")], env=environment,
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    processes = [subprocess.Popen([sys.executable, str(script), str(tmp_path / f"rank{rank}.npz")],
                                  env={**environment, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
                                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for rank in range(2)]
    for process in processes:
        _, error = process.communicate(timeout=300)
        assert process.returncode == 0, error
    reference = igcorr.load(tmp_path / "single.npz")
    for rank in range(2):
        result = igcorr.load(tmp_path / f"rank{rank}.npz")
        assert result.metadata["world_size"] == 2
        assert result.metadata["parameters"]["n_steps"] == reference.metadata["parameters"]["n_steps"]
        np.testing.assert_allclose(result.maps, reference.maps, rtol=0, atol=1e-10)


# ----------------------------------------------------------------------------------------- arguments
def test_conflicting_and_invalid_arguments_are_refused():
    model, x, y = trained(nn.Tanh)
    igc = igcorr.IGC(model)
    for extra in (dict(n_steps=8), dict(tolerance=1e-3), dict(method="gausslegendre"), dict(estimator="montecarlo")):
        with pytest.raises(InputError, match="map_tolerance chooses"):
            igc.attribute((x, y), map_tolerance=0.01, progress=False, **extra)
    with pytest.raises(InputError, match="set them in the AutoRule object"):
        igc.attribute((x, y), path=AutoRule(0.01), map_tolerance=0.01, progress=False)
    with pytest.raises(InputError, match="set them in the AutoRule object"):
        igc.attribute((x, y), path=AutoRule(0.01), n_steps=8, progress=False)
    for bad in (0, 1.5, -0.1, True, "1%"):
        with pytest.raises(InputError, match="map_tolerance"):
            AutoRule(bad)
    with pytest.raises(InputError, match="max_steps"):
        AutoRule(0.01, max_steps=7)
    with pytest.raises(InputError, match="pilot_samples"):
        AutoRule(0.01, pilot_samples=1)
    with pytest.raises(InputError, match="even"):
        ShiftedGrid(5)
    with pytest.raises(InputError, match="even"):
        igc.attribute((x, y), method="shifted", n_steps=3, progress=False)
    assert estimator_from_options(n_steps=None, method="trapezoid", tolerance=None, max_steps=1025,
                                  estimator="quadrature", path=None, map_tolerance=0.01) == AutoRule(0.01)
    assert isinstance(estimator_from_options(n_steps=None, method="shifted", tolerance=None, max_steps=1025,
                                             estimator="quadrature", path=None), ShiftedGrid)


# ----------------------------------------------------------------------------------------- command line
CLI_STUDY = """
import torch
from torch import nn

def build_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2)).double()

def build_data():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(80, 6, dtype=torch.float64, generator=generator)
    return x, x[:, :2] + 0.3 * torch.randn(80, 2, dtype=torch.float64, generator=generator)
"""


def test_igcorr_run_takes_a_map_tolerance(tmp_path, monkeypatch, capsys):
    from igcorr.cli import main

    (tmp_path / "tolerance_study.py").write_text(CLI_STUDY)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        out = tmp_path / "out"
        common = ["run", "--model", "tolerance_study:build_model", "--data", "tolerance_study:build_data",
                  "--baselines", "shared:4", "--no-progress"]
        assert main(common + ["--map-tolerance", "0.02", "--out", str(out)]) == 0
        parameters = igcorr.load(out / "result.npz").metadata["parameters"]
        assert parameters["estimator"] == "auto" and parameters["map_tolerance"] == 0.02
        assert 0 < parameters["checked_map_error"]
        # from a config file too, and refused next to the options that choose by hand (a one-line error)
        config = tmp_path / "study.toml"
        config.write_text(f'map_tolerance = 0.02\nout = "{tmp_path / "from_config"}"\n')
        assert main(common + ["--config", str(config)]) == 0
        assert igcorr.load(tmp_path / "from_config" / "result.npz").metadata["parameters"]["n_steps"] == \
            parameters["n_steps"]
        capsys.readouterr()
        assert main(common + ["--map-tolerance", "0.02", "--steps", "8", "--out", str(tmp_path / "refused")]) == 2
        assert "map_tolerance chooses" in capsys.readouterr().err
        # the rule it may choose can be chosen by hand as well
        assert main(common + ["--quadrature", "shifted", "--steps", "6", "--out", str(tmp_path / "shifted")]) == 0
        chosen = igcorr.load(tmp_path / "shifted" / "result.npz").metadata["parameters"]
        assert chosen["method"] == "shifted" and chosen["n_steps"] == 6
    finally:
        sys.modules.pop("tolerance_study", None)


def test_the_systematic_factor_and_its_uncertainty():
    from types import SimpleNamespace

    from igcorr.dataset.estimators import _Pilot

    pilot = _Pilot.__new__(_Pilot)
    pilot.n_samples = 128
    generator = torch.Generator().manual_seed(0)
    # 16 rows of independent errors on a large map: the factor is 1 in truth; its estimate is noisy, and one
    # standard error below it reaches 1
    independent = torch.randn(16, 5000, dtype=torch.float64, generator=generator)
    value, error = pilot.systematic_factor([SimpleNamespace(midpoint_errors=independent)], with_error=True)
    assert value >= 1.0 and error >= 0 and value - error <= 1.5
    # a small common part (a hundredth of each row's squared error): the truth is (N·0.01 + 1) / 1.01 = 2.26;
    # the estimate from 16 of 128 samples is within a few standard errors of it
    mixed = independent + 0.1 * torch.randn(1, 5000, dtype=torch.float64, generator=generator)
    value, error = pilot.systematic_factor([SimpleNamespace(midpoint_errors=mixed)], with_error=True)
    assert error > 0 and abs(value - (128 * 0.01 + 1) / 1.01) <= 3 * error
    # the same error in every row: nothing cancels, the map's error is N times one sample's, so the factor is N
    shared = torch.randn(1, 5000, dtype=torch.float64, generator=generator)
    same = shared + 0.01 * torch.randn(16, 5000, dtype=torch.float64, generator=generator)
    value, error = pilot.systematic_factor([SimpleNamespace(midpoint_errors=same)], with_error=True)
    assert value == pytest.approx(128, rel=0.01) and error < 0.05 * value
    assert pilot.systematic_factor([SimpleNamespace(midpoint_errors=None)], with_error=True) == (np.inf, np.inf)
