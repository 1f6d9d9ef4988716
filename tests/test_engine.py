"""Fast paths of the gradient engine give the same maps as the direct computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import igcorr
from igcorr.errors import InputError


class Encoder(nn.Module):
    """An encoding model: a nonlinear core of width 4 and a linear readout to many outputs."""

    def __init__(self, n_out: int = 30) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.core = nn.Sequential(nn.Linear(6, 4), nn.Tanh())
        self.readout = nn.Linear(4, n_out)

    def forward(self, x):
        return self.readout(self.core(x))


@pytest.fixture
def encoding_data():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, dtype=torch.float64, generator=generator)
    return x, torch.randn(40, 30, dtype=torch.float64, generator=generator) + x[:, :1]


def test_readout_shortcut_equals_direct_computation(encoding_data):
    model = Encoder().double().eval()
    shortcut = igcorr.IGC(model).attribute(encoding_data, baselines=3, n_steps=8, progress=False)
    direct = igcorr.IGC(model, readout=False).attribute(encoding_data, baselines=3, n_steps=8, progress=False)
    assert shortcut.metadata["engine"]["readout"] == {"layer": "readout", "width": 4}
    assert direct.metadata["engine"]["readout"] is None
    np.testing.assert_allclose(shortcut.maps, direct.maps, rtol=0, atol=1e-10)
    for name in ("correlation", "baseline_term", "completeness_mean"):
        np.testing.assert_allclose(shortcut.diagnostics[name], direct.diagnostics[name], rtol=0, atol=1e-10)


def test_readout_is_only_used_where_it_helps_and_is_exact(encoding_data):
    model = Encoder().double().eval()
    few = igcorr.IGC(model).attribute(encoding_data, outputs=[0, 1], n_steps=4, progress=False)
    assert few.metadata["engine"]["readout"] is None  # 2 outputs < width 4: no saving
    named = igcorr.IGC(model, readout="readout").attribute(encoding_data, outputs=[0, 1], n_steps=4, progress=False)
    assert named.metadata["engine"]["readout"]["layer"] == "readout"
    np.testing.assert_allclose(named.maps, few.maps, rtol=0, atol=1e-10)
    probabilities = igcorr.IGC(model, score="softmax").attribute(encoding_data, n_steps=4, progress=False)
    assert probabilities.metadata["engine"]["readout"] is None  # a softmax is not linear
    with pytest.raises(InputError, match="score=None"):
        igcorr.IGC(model, score="softmax", readout="readout").attribute(encoding_data, n_steps=4, progress=False)
    with pytest.raises(InputError, match="not an nn.Linear"):
        igcorr.IGC(model, readout="core").attribute(encoding_data, n_steps=4, progress=False)


def test_output_strategies_agree(cnn):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(12, 1, 8, 8, dtype=torch.float64, generator=generator)
    y = torch.randint(0, 4, (12,), generator=generator)
    maps = {}
    for strategy in ("loop", "batched", "auto"):
        result = igcorr.IGC(cnn, output_strategy=strategy).attribute((x, y), baselines=2, n_steps=6, progress=False)
        maps[strategy] = result.maps
        assert result.metadata["engine"]["output_strategy"] in ("loop", "batched")
    np.testing.assert_allclose(maps["batched"], maps["loop"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(maps["auto"], maps["loop"], rtol=0, atol=1e-12)


def test_chunk_size_follows_the_memory_budget(cnn):
    x = torch.randn(10, 1, 8, 8, dtype=torch.float64)
    y = torch.randint(0, 4, (10,))
    small = igcorr.IGC(cnn, max_memory=2_000_000).attribute((x, y), n_steps=5, progress=False)
    large = igcorr.IGC(cnn, max_memory=2_000_000_000).attribute((x, y), n_steps=5, progress=False)
    assert small.metadata["engine"]["chunk_points"] < large.metadata["engine"]["chunk_points"]
    np.testing.assert_allclose(small.maps, large.maps, rtol=0, atol=1e-12)
    with pytest.raises(InputError, match="max_memory=.* is too small"):
        igcorr.IGC(cnn, max_memory=1000).attribute((x, y), n_steps=5, progress=False)


def test_adaptive_quadrature_matches_a_fine_fixed_rule(mlp, regression_data):
    fine = igcorr.IGC(mlp).attribute(regression_data, baselines=3, n_steps=1025, progress=False)
    adaptive = igcorr.IGC(mlp).attribute(regression_data, baselines=3, tolerance=1e-6, progress=False)
    np.testing.assert_allclose(adaptive.maps, fine.maps, rtol=0, atol=2e-6)
    assert adaptive.ig_completeness["max"] <= 1e-6
    steps_mean, steps_max = adaptive.diagnostics["steps_mean"][0], adaptive.diagnostics["steps_max"][0]
    assert 9 < steps_mean < steps_max <= 1025  # refined only where needed
    assert adaptive.metadata["parameters"]["tolerance"] == 1e-6


def test_adaptive_quadrature_warns_when_it_cannot_converge(mlp, regression_data):
    with pytest.warns(UserWarning, match="did not reach the completeness tolerance"):
        result = igcorr.IGC(mlp).attribute(regression_data, tolerance=1e-14, max_steps=33, progress=False)
    assert result.diagnostics["steps_max"][0] == 33
    with pytest.raises(InputError, match="trapezoid"):
        igcorr.IGC(mlp).attribute(regression_data, tolerance=1e-3, method="gausslegendre", progress=False)


def test_monte_carlo_is_unbiased_with_a_calibrated_standard_error(mlp, regression_data):
    x, y = regression_data
    # drawing baselines uniformly from the data has the same expectation as sharing all samples as baselines
    reference = igcorr.IGC(mlp).attribute((x, y), baselines=igcorr.baselines.Shared(x), n_steps=48,
                                          method="gausslegendre", progress=False).maps
    runs = [igcorr.IGC(mlp).attribute((x, y), baselines=8, n_steps=16, estimator="montecarlo", seed=seed,
                                      progress=False) for seed in range(24)]
    maps = np.stack([r.maps for r in runs])
    errors = np.stack([r.extra_maps["standard_error"] for r in runs])
    assert np.all(errors > 0)
    mean_error = errors.mean(axis=0) / np.sqrt(len(runs))
    assert np.all(np.abs(maps.mean(axis=0) - reference) <= 4.5 * mean_error + 1e-12)
    spread = maps.std(axis=0, ddof=1)
    ratio = spread.mean() / errors.mean()
    assert 0.4 < ratio < 1.3, ratio  # conservative (stratification ignored) but of the right size
    assert runs[0].metadata["parameters"] == {"n_steps": 16, "estimator": "montecarlo"}
    again = igcorr.IGC(mlp).attribute((x, y), baselines=8, n_steps=16, estimator="montecarlo", seed=0,
                                      batch_size=7, progress=False)
    np.testing.assert_allclose(again.maps, runs[0].maps, rtol=0, atol=1e-12)


def test_autocast_stays_within_its_stated_tolerance():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(8 * 64, 3)).eval()
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(40, 1, 8, 8, generator=generator)
    y = torch.randint(0, 3, (40,), generator=generator)
    exact = igcorr.IGC(model, score="softmax").attribute((x, y), n_steps=16, progress=False)
    low = igcorr.IGC(model, score="softmax", autocast="bfloat16").attribute((x, y), n_steps=16, progress=False)
    assert low.metadata["engine"]["autocast"] == "bfloat16"
    error = np.linalg.norm(low.maps - exact.maps) / np.linalg.norm(exact.maps)
    assert 0 < error < 0.02, error  # bf16 has 8 mantissa bits; the float64 accumulation keeps the rest
    np.testing.assert_allclose(low.correlation, exact.correlation, atol=0.02)
    with pytest.raises(InputError, match="autocast"):
        igcorr.IGC(model, autocast="int8")


def test_peak_memory_follows_the_budget():
    """What ``max_memory`` bounds (the chunks of path points) stays within it: raising the budget by B raises
    the run's peak resident memory by at most about B (measured in fresh processes; fixed costs such as
    torch's own workspaces come on top of the budget and cancel in the difference)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parent / "scripts" / "peak_memory.py"

    def peak(budget: int) -> tuple[int, int]:
        completed = subprocess.run([sys.executable, str(script), str(budget)], capture_output=True, text=True,
                                   timeout=300, check=True)
        growth, chunk = completed.stdout.split()
        return int(growth), int(chunk)

    small, small_chunk = peak(100_000_000)
    large, large_chunk = peak(400_000_000)
    assert large_chunk > 3 * small_chunk
    assert large - small <= 1.3 * (400_000_000 - 100_000_000), (small, large)


def test_compiled_forward_gives_the_eager_maps(cnn, encoding_data):
    """torch.compile through AOT autograd: several backward passes per chunk (loop strategy) and the readout
    hook work on the compiled graph, with the eager maps to float64 rounding."""
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(12, 1, 8, 8, dtype=torch.float64, generator=generator)
    y = torch.randint(0, 4, (12,), generator=generator)
    options = dict(baselines=2, n_steps=6, batch_size=5, progress=False)
    eager = igcorr.IGC(cnn, output_strategy="loop").attribute((x, y), **options)
    compiled = igcorr.IGC(cnn, output_strategy="loop", compile={"backend": "aot_eager"}).attribute((x, y), **options)
    assert compiled.metadata["engine"]["compile"] == {"backend": "aot_eager"}
    assert eager.metadata["engine"]["compile"] is None
    np.testing.assert_allclose(compiled.maps, eager.maps, rtol=0, atol=1e-12)

    model = Encoder().double().eval()
    eager = igcorr.IGC(model).attribute(encoding_data, baselines=3, n_steps=8, progress=False)
    compiled = igcorr.IGC(model, compile={"backend": "aot_eager"}).attribute(encoding_data, baselines=3, n_steps=8,
                                                                             progress=False)
    assert compiled.metadata["engine"]["readout"] == {"layer": "readout", "width": 4}
    np.testing.assert_allclose(compiled.maps, eager.maps, rtol=0, atol=1e-12)


def test_compiled_forward_is_not_recompiled_per_chunk(encoding_data):
    graphs = []

    def counting_backend(graph_module, example_inputs):
        graphs.append([tuple(t.shape) for t in example_inputs if isinstance(t, torch.Tensor)])
        return graph_module.forward

    model = Encoder().double().eval()
    igcorr.IGC(model, compile={"backend": counting_backend}).attribute(
        encoding_data, baselines=3, n_steps=8, batch_size=7, progress=False)  # 6 batches, 2 distinct sizes
    assert 1 <= len(graphs) <= 2, graphs
    with pytest.raises(InputError, match="compile"):
        igcorr.IGC(model, compile="yes")


def test_chunk_tuning_keeps_the_fastest_size_and_strategy():
    from igcorr.paths.budget import ChunkTuning

    tuning = ChunkTuning([128, 256, 512, 1024], ["loop", "batched"])
    assert tuning.trying == 128
    tuning.record(128, {"loop": 99.0, "batched": 99.0})  # warm-up: not kept
    assert tuning.seconds_per_point == {} and tuning.choice() == (1024, "loop")
    tuning.record(128, {"loop": 1.5, "batched": 1.0})  # the loop is never dropped
    assert tuning.choice() == (128, "batched") and tuning.trying == 256 and len(tuning.strategies) == 2
    tuning.record(256, {"loop": 2.0, "batched": 3.0})  # batched 1.5× slower than the loop here: dropped
    assert tuning.strategies == ["loop"] and tuning.choice() == (256, "loop")
    tuning.record(512, {"loop": 4.5})  # slower per point than 256: the trial ends before 1024
    assert tuning.trying is None and tuning.choice() == (256, "loop")
    close = ChunkTuning([128, 256, 512], ["loop"])
    for size, seconds in ((128, 1.0), (128, 1.0), (256, 1.5), (512, 2.9)):
        close.record(size, {"loop": seconds})
    assert close.choice() == (256, "loop")  # 512 is 3 % faster per point: within the margin, the smaller wins
    assert ChunkTuning([512], ["loop"]).trying is None  # nothing to decide


def test_tuned_chunks_give_the_fixed_chunk_maps(cnn):
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(40, 1, 8, 8, dtype=torch.float64, generator=generator)
    y = torch.randint(0, 4, (40,), generator=generator)
    options = dict(baselines=4, n_steps=16, progress=False)
    tuned = igcorr.IGC(cnn).attribute((x, y), **options)  # 2,560 points: the trial runs on real chunks
    engine = tuned.metadata["engine"]
    assert engine["chunk_points"] in (128, 256, 512, 1024, 2048)
    assert engine["microseconds_per_point"] and all(v > 0 for v in engine["microseconds_per_point"].values())
    fixed = igcorr.IGC(cnn, output_strategy="loop", chunk_points=100)
    reference = fixed.attribute((x, y), **options)
    assert reference.metadata["engine"]["chunk_points"] == 100
    np.testing.assert_allclose(tuned.maps, reference.maps, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- the first-layer shortcut
class ConvStem(nn.Module):
    """A strided, 'same'-padded first convolution, then a nonlinear head with three outputs."""

    def __init__(self, dims: int = 2) -> None:
        super().__init__()
        torch.manual_seed(5)
        conv = nn.Conv2d if dims == 2 else nn.Conv1d
        self.stem = conv(2, 3, 3, padding="same") if dims == 2 else conv(2, 3, 3, stride=2)
        self.head = nn.Sequential(nn.Softplus(), nn.Flatten(), nn.LazyLinear(5), nn.Tanh(), nn.Linear(5, 3))

    def forward(self, x):
        return self.head(self.stem(x))


class ReadsInputTwice(nn.Module):
    """The input reaches the output through the first layer and, besides it, through a skip connection."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(6)
        self.first = nn.Linear(6, 4)
        self.head = nn.Sequential(nn.Tanh(), nn.Linear(4, 3))

    def forward(self, x):
        return self.head(self.first(x)) + x[:, :3] ** 2


def _maps_with_and_without_first_layer(model, data, chunk_points=None, **options):
    shortcut = igcorr.IGC(model, chunk_points=chunk_points).attribute(data, progress=False, **options)
    direct = igcorr.IGC(model, first_layer=False, chunk_points=chunk_points).attribute(data, progress=False,
                                                                                      **options)
    assert direct.metadata["engine"]["first_layer"] is None
    return shortcut, direct


@pytest.mark.parametrize("dims", [1, 2])
@pytest.mark.parametrize("options", [
    {"baselines": 3, "n_steps": 8, "chunk_points": 5},  # per-sample baselines, chunks that cut paths
    {"n_steps": 7, "method": "riemann_middle"},  # shared zero baseline, no end nodes
    {"n_steps": 6, "method": "shifted", "baselines": 4, "seed": 2},  # each path its own nodes
])
def test_first_layer_shortcut_equals_direct_computation(dims, options):
    model = ConvStem(dims).double().eval()
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(14, 2, *(6, 5)[:dims] if dims == 2 else (9,), dtype=torch.float64, generator=generator)
    with torch.no_grad():
        y = model(x) + torch.randn(14, 3, dtype=torch.float64, generator=generator)
    shortcut, direct = _maps_with_and_without_first_layer(model, (x, y), **options)
    assert shortcut.metadata["engine"]["first_layer"] == {"layer": "stem", "width": int(model.stem(x[:1]).numel())}
    np.testing.assert_allclose(shortcut.maps, direct.maps, rtol=0, atol=1e-12)
    for name in ("correlation", "completeness_mean"):
        np.testing.assert_allclose(shortcut.diagnostics[name], direct.diagnostics[name], rtol=0, atol=1e-12)
    assert "forward" not in model.stem.__dict__  # the layer's own forward is back


def test_first_layer_and_readout_shortcuts_together(encoding_data):
    model = Encoder().double().eval()
    shortcut, direct = _maps_with_and_without_first_layer(model, encoding_data, baselines=3, n_steps=8)
    engine = shortcut.metadata["engine"]
    assert engine["first_layer"] == {"layer": "core.0", "width": 4}
    assert engine["readout"] == {"layer": "readout", "width": 4}
    np.testing.assert_allclose(shortcut.maps, direct.maps, rtol=0, atol=1e-12)


def test_first_layer_shortcut_only_where_the_input_goes_through_it_alone(mlp, regression_data):
    x, _ = regression_data
    y = torch.randn(len(x), 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    skip = ReadsInputTwice().double().eval()
    result = igcorr.IGC(skip).attribute((x, y), n_steps=6, progress=False)
    assert result.metadata["engine"]["first_layer"] is None  # a skip connection reads the input too
    direct = igcorr.IGC(skip, first_layer=False).attribute((x, y), n_steps=6, progress=False)
    np.testing.assert_allclose(result.maps, direct.maps, rtol=0, atol=0)
    with pytest.raises(InputError, match="reads its input elsewhere than in 'first'"):
        igcorr.IGC(skip, first_layer="first").attribute((x, y), n_steps=6, progress=False)
    scaled = lambda inputs: mlp(2.0 * inputs)  # noqa: E731 - not a module: nothing to look into
    assert igcorr.IGC(scaled).attribute((x, y), n_steps=4, progress=False).metadata["engine"]["first_layer"] is None
    computed_first = nn.Sequential(nn.Tanh(), nn.Linear(6, 3)).double()  # the linear layer reads tanh(x)
    assert igcorr.IGC(computed_first).attribute((x, y), n_steps=4,
                                               progress=False).metadata["engine"]["first_layer"] is None
    with pytest.raises(InputError, match="no linear or convolution layer reads the model's input"):
        igcorr.IGC(computed_first, first_layer="1").attribute((x, y), n_steps=4, progress=False)
    with pytest.raises(InputError, match="first_layer must be"):
        igcorr.IGC(mlp, first_layer=3)
    # a subclass of nn.Linear may compute more than its weight (a low-rank adapter here): not used
    adapted = nn.Sequential(LowRankLinear(6, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    assert igcorr.IGC(adapted).attribute((x, y), n_steps=4, progress=False).metadata["engine"]["first_layer"] is None


class LowRankLinear(nn.Linear):
    """A linear layer plus a low-rank term of its own, like a fine-tuning adapter."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features, out_features)
        self.down = nn.Parameter(torch.randn(in_features, 2))
        self.up = nn.Parameter(torch.randn(2, out_features))

    def forward(self, x):
        return super().forward(x) + x @ self.down @ self.up


def test_first_layer_shortcut_in_per_sample_integrated_gradients(cnn):
    x = torch.randn(5, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    explainer = igcorr.IntegratedGradients(cnn)
    ig = explainer.attribute(x, baselines=torch.zeros_like(x), target=1, n_steps=9)
    assert explainer.adapter.find_first_layer(x) is not None
    for parameter in cnn.parameters():
        parameter.requires_grad_(False)
    # the same integral through the model's own backward pass, one point at a time
    alphas = torch.linspace(0, 1, 9, dtype=torch.float64)
    weights = torch.full((9,), 1 / 8, dtype=torch.float64)
    weights[[0, -1]] = 1 / 16
    expected = torch.zeros_like(x)
    for alpha, weight in zip(alphas, weights):
        point = (alpha * x).requires_grad_(True)
        (gradient,) = torch.autograd.grad(cnn(point)[:, 1].sum(), point)
        expected += weight * gradient * x
    np.testing.assert_allclose(np.asarray(ig), expected.numpy(), rtol=0, atol=1e-12)


def test_first_layer_shortcut_does_not_depend_on_the_chunks(mlp, regression_data):
    # an MLP's own forward pass gives the same bits in any batch here; so must the shortcut, with paths cut
    # anywhere by chunks (partial sums carried in node order, the layer's outputs computed in blocks of their own)
    maps = [igcorr.IGC(mlp, chunk_points=size).attribute(regression_data, baselines=3, n_steps=9,
                                                         method="riemann_middle", progress=False).maps
            for size in (4, 13, 128)]
    np.testing.assert_array_equal(maps[0], maps[1])
    np.testing.assert_array_equal(maps[0], maps[2])


class PaddedSequence(nn.Module):
    """Time steps of zeros are padding: the model reads its input through a comparison as well."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(8)
        self.embed = nn.Linear(3, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        padding = (x == 0).all(dim=-1, keepdim=True)
        return self.head(torch.tanh(self.embed(x)).masked_fill(padding, 0.0).mean(dim=1))


class PerStep(nn.Module):
    """One linear layer applied to every time step: its rows are not the samples."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(9)
        self.step = nn.Linear(3, 4)
        self.head = nn.Linear(20, 2)

    def forward(self, x):
        return self.head(torch.tanh(self.step(x.view(-1, 3))).view(len(x), -1))


class Checkpointed(nn.Module):
    """The whole network under activation checkpointing: the first layer runs again during the backward pass."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(10)
        self.block = nn.Sequential(nn.Linear(15, 4), nn.Tanh(), nn.Linear(4, 2))

    def forward(self, x):
        from torch.utils.checkpoint import checkpoint

        return checkpoint(self.block, x.flatten(1), use_reentrant=False)


def test_first_layer_shortcut_is_refused_where_it_would_not_be_exact():
    generator = torch.Generator().manual_seed(11)
    x = torch.randn(8, 5, 3, dtype=torch.float64, generator=generator)
    x[:, 3:] = 0.0  # two padded steps per sequence
    y = torch.randn(8, 2, dtype=torch.float64, generator=generator)
    clamped = nn.Sequential(nn.Flatten(), nn.Linear(15, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    clamped[1].register_forward_hook(lambda _module, _inputs, out: out.clamp(-0.3, 0.3))
    for model in (PaddedSequence(), PerStep(), Checkpointed(), clamped):
        model = model.double().eval()
        result = igcorr.IGC(model).attribute((x, y), n_steps=8, progress=False)
        direct = igcorr.IGC(model, first_layer=False).attribute((x, y), n_steps=8, progress=False)
        assert result.metadata["engine"]["first_layer"] is None, type(model).__name__
        np.testing.assert_array_equal(result.maps, direct.maps)


def test_first_layer_shortcut_with_an_in_place_activation_after_it():
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(inplace=True), nn.Flatten(),
                          nn.Linear(75, 2)).double().eval()
    x = torch.randn(6, 1, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(12))
    through = igcorr.IntegratedGradients(model).attribute(x, target=1, n_steps=8)
    direct = igcorr.IntegratedGradients(model, first_layer=False).attribute(x, target=1, n_steps=8)
    assert igcorr.IntegratedGradients(model).adapter.find_first_layer(x) is not None
    np.testing.assert_allclose(np.asarray(through), np.asarray(direct), rtol=0, atol=1e-12)
