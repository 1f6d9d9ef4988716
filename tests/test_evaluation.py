"""igcorr.evaluation: deletion/insertion curves against closed forms, sanity checks, localisation, the
comparisons they use, and ``igcorr evaluate``."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

import igcorr
from igcorr.errors import ConstantTargetError, InputError, ModelError, ShapeError
from igcorr.evaluation import (faithfulness, localisation, markdown_table, model_randomisation, parameter_layers,
                               rank_correlation, removal_counts, roc_auc, ssim, write_table)
from igcorr.evaluation.replacement import LinearImputation, neighbour_graph

# tiny quadratures on purpose: the completeness warning of coarse rules is not what these tests look at
pytestmark = pytest.mark.filterwarnings("ignore:the map of output .* sums to:UserWarning")

# ---------------------------------------------------------------------------------------------------- helpers


def linear_problem(n: int = 150, d: int = 10, seed: int = 0):
    """Correlated inputs with non-zero means, a linear model f(x) = w·x + b (float64) and noisy targets."""
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(d, d, dtype=torch.float64, generator=generator) / np.sqrt(d)
    x = torch.randn(n, d, dtype=torch.float64, generator=generator) @ mixing + torch.linspace(-1, 2, d,
                                                                                            dtype=torch.float64)
    w = torch.randn(d, dtype=torch.float64, generator=generator)
    y = x @ w + 1.5 * torch.randn(n, dtype=torch.float64, generator=generator)
    model = nn.Linear(d, 1).double()
    with torch.no_grad():
        model.weight.copy_(w[None])
        model.bias.fill_(0.7)
    return model.eval(), x, y, w


def closed_form(x: np.ndarray, y: np.ndarray, w: np.ndarray, ranking: np.ndarray, fractions: np.ndarray,
                direction: str) -> np.ndarray:
    """r(ŷ_S, y) with ŷ_S = f(x) − Σ_{i∈S} w_i (x_i − μ_i): the correlation of Σ_{i∉S} w_i x_i with y, from the
    population covariances (0 when nothing is kept: constant predictions)."""
    d = len(w)
    covariance = np.cov(np.c_[x, y].T, bias=True)
    c_xx, c_xy, var_y = covariance[:d, :d], covariance[:d, d], covariance[d, d]
    values = []
    for count in removal_counts(fractions, d):
        kept = np.ones(d, dtype=bool)
        removed = ranking[:count] if direction == "deletion" else ranking[count:]
        kept[removed] = False
        weights = w * kept
        variance = weights @ c_xx @ weights
        values.append(0.0 if variance <= 1e-300 else float(weights @ c_xy / np.sqrt(variance * var_y)))
    return np.array(values)


# ------------------------------------------------------------------------------------------ faithfulness curves


def test_mean_imputation_curves_equal_the_closed_form_of_a_linear_model():
    model, x, y, w = linear_problem()
    generator = np.random.default_rng(3)
    maps = {"first": generator.normal(size=10), "second": generator.normal(size=(1, 10))}
    fractions = np.linspace(0, 1, 11)
    result = faithfulness(model, (x, y), maps, fractions=fractions, random_rankings=2, progress=False)
    for name, values in maps.items():
        ranking = np.argsort(-np.ravel(values), kind="stable")
        for direction in ("deletion", "insertion"):
            expected = closed_form(x.numpy(), y.numpy(), w.numpy(), ranking, fractions, direction)
            measured = getattr(result, direction)[name][0]
            np.testing.assert_allclose(measured, expected, atol=1e-10, rtol=0)
    # the curves start and end at the shared points: r on the data, and 0 once everything is replaced
    r = np.corrcoef(x.numpy() @ w.numpy(), y.numpy())[0, 1]
    np.testing.assert_allclose(result.original, [r], atol=1e-12)
    assert result.deletion["first"][0, 0] == pytest.approx(r, abs=1e-12)
    assert result.deletion["first"][0, -1] == 0.0 and result.insertion["first"][0, 0] == 0.0
    # a constant baseline shifts the predictions by a constant: the same correlations
    shifted = faithfulness(model, (x, y), maps, replacement="baseline", baseline=3.0, fractions=fractions,
                           random_rankings=0, progress=False)
    for name in maps:
        np.testing.assert_allclose(shifted.deletion[name], result.deletion[name], atol=1e-10)
    # areas: the trapezoid rule over the fractions
    area = result.auc("deletion")["first"][0]
    curve = result.deletion["first"][0]
    assert area == pytest.approx(float(np.sum((curve[1:] + curve[:-1]) / 2 * np.diff(fractions))), abs=1e-15)


def test_absolute_order_and_regions_follow_the_closed_form():
    model, x, y, w = linear_problem(d=9, seed=1)
    values = np.random.default_rng(4).normal(size=9)
    fractions = np.linspace(0, 1, 10)
    result = faithfulness(model, (x, y), values, order="absolute", fractions=fractions, random_rankings=0,
                          progress=False)
    expected = closed_form(x.numpy(), y.numpy(), w.numpy(), np.argsort(-np.abs(values), kind="stable"), fractions,
                           "deletion")
    np.testing.assert_allclose(result.deletion["map"][0], expected, atol=1e-10)
    # three regions of three features, ranked by the map's mean over each
    labels = np.repeat([1, 2, 3], 3)
    region_result = faithfulness(model, (x, y), values, regions=labels, fractions=[0, 1 / 3, 2 / 3, 1],
                                 random_rankings=0, progress=False)
    means = np.array([values[labels == k].mean() for k in (1, 2, 3)])
    order = np.argsort(-means, kind="stable")
    feature_ranking = np.concatenate([np.flatnonzero(labels == order[k] + 1) for k in range(3)])
    expected = closed_form(x.numpy(), y.numpy(), w.numpy(), feature_ranking, np.array([0, 1 / 3, 2 / 3, 1]),
                           "deletion")
    np.testing.assert_allclose(region_result.deletion["map"][0], expected, atol=1e-10)
    assert region_result.metadata["units"] == "regions" and region_result.metadata["n_units"] == 3


def test_curves_do_not_depend_on_batch_or_chunk_size():
    model, x, y, _ = linear_problem(n=90)
    maps = {"a": np.arange(10.0), "b": -np.arange(10.0) ** 2}
    options = {"fractions": np.linspace(0, 1, 6), "random_rankings": 3, "seed": 5, "progress": False}
    reference = faithfulness(model, (x, y), maps, batch_size=90, **options)
    for batch_size, chunk_size in ((7, 1024), (32, 5), (1, 3)):
        other = faithfulness(model, (x, y), maps, batch_size=batch_size, chunk_size=chunk_size, **options)
        for name in maps:
            np.testing.assert_allclose(other.deletion[name], reference.deletion[name], atol=1e-12)
            np.testing.assert_allclose(other.insertion[name], reference.insertion[name], atol=1e-12)
        np.testing.assert_allclose(other.random_deletion, reference.random_deletion, atol=1e-12)
    # a shuffling DataLoader is read in dataset order: the same curves
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=13, shuffle=True)
    streamed = faithfulness(model, loader, maps, **options)
    np.testing.assert_allclose(streamed.deletion["a"], reference.deletion["a"], atol=1e-12)
    np.testing.assert_allclose(streamed.random_insertion, reference.random_insertion, atol=1e-12)
    # noisy linear imputation: the noise is keyed by sample index, so batches do not matter either
    images = x[:, :9].reshape(90, 3, 3)
    conv = nn.Sequential(nn.Flatten(), nn.Linear(9, 2)).double().eval()
    targets = torch.stack([images.sum((1, 2)), images[:, 0, 0]], dim=1)
    first = faithfulness(conv, (images, targets), np.arange(9.0).reshape(3, 3), replacement="linear", noise=0.1,
                         batch_size=90, **options)
    second = faithfulness(conv, (images, targets), np.arange(9.0).reshape(3, 3), replacement="linear", noise=0.1,
                          batch_size=11, chunk_size=7, **options)
    np.testing.assert_allclose(second.deletion["map"], first.deletion["map"], atol=1e-12)
    np.testing.assert_allclose(second.random_insertion, first.random_insertion, atol=1e-12)


def test_random_band_is_seeded_and_user_metric_matches_pearson():
    model, x, y, _ = linear_problem(n=60)
    options = {"fractions": np.linspace(0, 1, 5), "random_rankings": 4, "progress": False}
    first = faithfulness(model, (x, y), np.arange(10.0), seed=1, **options)
    again = faithfulness(model, (x, y), np.arange(10.0), seed=1, **options)
    other = faithfulness(model, (x, y), np.arange(10.0), seed=2, **options)
    np.testing.assert_array_equal(first.random_deletion, again.random_deletion)
    assert not np.allclose(first.random_deletion, other.random_deletion)
    assert first.random_deletion.shape == (4, 1, 5)

    def pearson(predictions: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
        p, t = predictions.numpy(), targets.numpy()
        if p.std() < 1e-12:
            return np.zeros(1)
        return np.array([np.corrcoef(p[:, 0], t[:, 0])[0, 1]])

    custom = faithfulness(model, (x, y), np.arange(10.0), seed=1, metric=pearson, **options)
    np.testing.assert_allclose(custom.deletion["map"], first.deletion["map"], atol=1e-12)
    np.testing.assert_allclose(custom.random_insertion, first.random_insertion, atol=1e-12)
    np.testing.assert_allclose(custom.original, first.original, atol=1e-12)
    assert custom.metric == "pearson"  # the callable's name


def test_per_output_maps_rank_each_output_separately():
    """A (K, D) map ranks output k by its k-th row: each output's curve is its own linear closed form."""
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(120, 6, dtype=torch.float64, generator=generator)
    weights = torch.randn(2, 6, dtype=torch.float64, generator=generator)
    y = x @ weights.T + torch.randn(120, 2, dtype=torch.float64, generator=generator)
    model = nn.Linear(6, 2, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(weights)
    maps = np.random.default_rng(1).normal(size=(2, 6))
    fractions = np.linspace(0, 1, 7)
    result = faithfulness(model.eval(), (x, y), maps, fractions=fractions, random_rankings=1, progress=False)
    for k in range(2):
        expected = closed_form(x.numpy(), y[:, k].numpy(), weights[k].numpy(), np.argsort(-maps[k], kind="stable"),
                               fractions, "deletion")
        np.testing.assert_allclose(result.deletion["map"][k], expected, atol=1e-10)
    rows = result.table()
    assert rows[0]["method"] == "map" and rows[0]["deletion_auc"] == pytest.approx(
        result.auc()["map"].mean())


def test_class_labels_and_an_accuracy_metric_with_one_map_for_all_classes():
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(90, 5, dtype=torch.float64, generator=generator)
    model = nn.Linear(5, 3).double().eval()
    labels = model(x).argmax(1).detach()
    labels[:20] = torch.randint(0, 3, (20,), generator=generator)

    def accuracy(scores: torch.Tensor, targets: torch.Tensor) -> float:
        return float((scores.argmax(1) == targets.argmax(1)).double().mean())

    result = faithfulness(model, (x, labels), np.arange(5.0), score="softmax", metric=accuracy,
                          fractions=[0, 0.4, 1], random_rankings=2, progress=False)
    expected = float((model(x).argmax(1) == labels).double().mean())
    assert result.deletion["map"].shape == (3, 3) and result.metric == "accuracy"
    np.testing.assert_allclose(result.deletion["map"][:, 0], expected)  # one value shared by the outputs
    np.testing.assert_allclose(result.original, expected)


def test_linear_imputation_reproduces_neighbour_means_and_ramps():
    # one removed element of a chain: the mean of its two neighbours
    imputer = LinearImputation((5,), torch.zeros(5, dtype=torch.float64), noise=0.0, seed=0).to("cpu",
                                                                                               torch.float64)
    x = torch.tensor([[1.0, 4.0, 0.0, 10.0, 3.0]], dtype=torch.float64)
    mask = torch.tensor([[False, False, True, False, False]])
    assert imputer.apply(x, mask, [0], np.array([0]))[0, 0, 2] == pytest.approx(7.0)
    # a removed interior block of a linear ramp is filled exactly (the 8-neighbour stencil is symmetric)
    rows, cols = np.meshgrid(np.arange(8.0), np.arange(8.0), indexing="ij")
    ramp = torch.as_tensor(0.5 * rows - 1.5 * cols + 2.0).reshape(1, 64)
    block = np.zeros((8, 8), dtype=bool)
    block[2:6, 3:6] = True
    imputer2d = LinearImputation((8, 8), torch.zeros(64, dtype=torch.float64), noise=0.0, seed=0).to(
        "cpu", torch.float64)
    filled = imputer2d.apply(ramp, torch.as_tensor(block.reshape(1, 64)), [0], np.array([0]))[0, 0]
    np.testing.assert_allclose(filled.numpy(), ramp[0].numpy(), atol=1e-12)
    # one removed pixel: (2 × edge neighbours + diagonal neighbours) / 12, as in ROAD (1/6 and 1/12)
    image = torch.as_tensor(np.random.default_rng(0).normal(size=(1, 64)))
    single = np.zeros(64, dtype=bool)
    single[3 * 8 + 4] = True
    value = imputer2d.apply(image, torch.as_tensor(single[None]), [1], np.array([0]))[0, 0, 28]
    grid = image.reshape(8, 8).numpy()
    edges = grid[2, 4] + grid[4, 4] + grid[3, 3] + grid[3, 5]
    diagonals = grid[2, 3] + grid[2, 5] + grid[4, 3] + grid[4, 5]
    assert float(value) == pytest.approx((2 * edges + diagonals) / 12)
    # solving sample by sample (without threadpoolctl) gives the same values as all samples at once
    from igcorr.evaluation.replacement import _Factor

    factor = _Factor(imputer2d.graph, imputer2d.degree, block.reshape(64))
    batch = np.random.default_rng(5).normal(size=(6, 64))
    np.testing.assert_allclose(factor.impute(batch, np.zeros(64), columns=True),
                               factor.impute(batch, np.zeros(64), columns=False), atol=1e-12)
    # everything removed: no kept neighbour, the fallback value
    everything = imputer2d.apply(image, torch.ones((1, 64), dtype=torch.bool), [-1], np.array([0]))
    np.testing.assert_array_equal(everything.numpy(), 0.0)
    # channels are imputed independently
    graph = neighbour_graph((2, 3, 3))
    assert graph[:9, 9:].nnz == 0 and graph.shape == (18, 18)


def test_bad_inputs_are_refused_before_any_compute():
    model, x, y, _ = linear_problem(n=20)
    calls = []

    def counting(inputs: torch.Tensor) -> torch.Tensor:
        calls.append(len(inputs))
        return model(inputs)

    with pytest.raises(ShapeError, match="shape"):
        faithfulness(counting, (x, y), np.zeros(7), progress=False)
    with pytest.raises(ShapeError, match="does not match|shape"):
        faithfulness(counting, (x, y), np.zeros((2, 3, 10)), progress=False)
    assert calls == []
    with pytest.raises(InputError, match="between 0 and 1"):
        faithfulness(counting, (x, y), np.zeros(10), fractions=[0, 0.5, 1.5], progress=False)
    with pytest.raises(InputError, match="increasing"):
        faithfulness(counting, (x, y), np.zeros(10), fractions=[0, 0.5, 0.2], progress=False)
    with pytest.raises(InputError, match="replacement"):
        faithfulness(counting, (x, y), np.zeros(10), replacement="blur", progress=False)
    with pytest.raises(ShapeError, match="baseline"):
        faithfulness(counting, (x, y), np.zeros(10), replacement="baseline", baseline=np.zeros(3), progress=False)
    with pytest.raises(InputError, match="linear imputation"):
        faithfulness(counting, (x.reshape(20, 1, 1, 2, 5), y), np.zeros((1, 1, 2, 5)), replacement="linear",
                     progress=False)
    with pytest.raises(InputError, match="reserved"):
        faithfulness(counting, (x, y), {"random": np.zeros(10)}, progress=False)
    assert calls == []
    with pytest.raises(ShapeError, match="2 maps but 1 outputs"):
        faithfulness(counting, (x, y), np.zeros((2, 10)), progress=False)
    with pytest.raises(ConstantTargetError):
        faithfulness(model, (x, torch.ones(20, dtype=torch.float64)), np.zeros(10), progress=False)


def test_synthetic_b_igc_beats_random_and_the_naive_correlation():
    from igcorr_examples.synthetic import SyntheticDataset

    dataset = SyntheticDataset("B", 200, seed=0)
    x, y = dataset.get_batch(np.arange(200))
    model = dataset.function_model()
    maps = {"IGC": igcorr.IGC(model).attribute((x, y), baselines=2, n_steps=4, progress=False),
            "naive correlation": igcorr.NaiveCorrelation().attribute((x, y), progress=False)}
    result = faithfulness(model, (x, y), maps, fractions=np.linspace(0, 1, 11), random_rankings=3, progress=False)
    rows = {row["method"]: row for row in result.table()}
    igc, naive = rows["IGC"], rows["naive correlation"]
    assert igc["beats_random_deletion"] and igc["deletion_auc"] < igc["random_deletion_low"] - 0.2
    assert igc["deletion_auc"] < naive["deletion_auc"] - 0.1
    assert result.original[0] == pytest.approx(1.0)  # the statistic is the model


# ------------------------------------------------------------------------------------------------- sanity checks


def trained_mlp():
    torch.manual_seed(0)
    x = torch.randn(80, 8, dtype=torch.float64)
    y = x[:, :3].sum(1) + 0.3 * torch.randn(80, dtype=torch.float64)
    model = nn.Sequential(nn.Linear(8, 12), nn.Tanh(), nn.Linear(12, 1)).double()
    optimiser = torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(150):
        optimiser.zero_grad()
        ((model(x)[:, 0] - y) ** 2).mean().backward()
        optimiser.step()
    return model.eval(), x, y


def test_randomisation_flags_the_input_statistic_and_not_igc():
    model, x, y = trained_mlp()
    before = {key: value.clone() for key, value in model.state_dict().items()}

    def attribute(m):
        return {"IGC": igcorr.IGC(m).attribute((x, y), n_steps=4, progress=False),
                "naive correlation": igcorr.NaiveCorrelation(m).attribute((x, y), progress=False)}

    original = {"IGC": igcorr.IGC(model).attribute((x, y), n_steps=4, permutations=49, progress=False),
                "naive correlation": igcorr.NaiveCorrelation(model).attribute((x, y), progress=False)}
    check = model_randomisation(model, attribute, original=original, seed=0, progress=False)
    assert check.layers == ["2", "0"] == parameter_layers(model)
    assert check.flagged == {"IGC": False, "naive correlation": True}
    assert [(step["mode"], step["layers"]) for step in check.steps] == [
        ("cascading", ["2"]), ("cascading", ["2", "0"]), ("independent", ["2"]), ("independent", ["0"])]
    final = check.final("cascading")
    assert final["naive correlation"]["rank_correlation"] == pytest.approx(1.0)
    assert final["naive correlation"]["ssim"] == pytest.approx(1.0)
    assert final["IGC"]["rank_correlation"] < 0.6
    rows = {row["method"]: row for row in check.table()}
    assert rows["naive correlation"]["model_independent"] and not rows["IGC"]["model_independent"]
    # the label-permutation test of the original IGC is reported; the naive p-value is not a permutation test
    assert 0 < rows["IGC"]["label_p_min"] <= 1 and rows["naive correlation"]["label_p_min"] is None
    # the user's model is untouched, and the same seed gives the same scores
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
    again = model_randomisation(model, attribute, original=original, seed=0, cascading=False, progress=False)
    assert again.steps[0]["scores"]["IGC"]["rank_correlation"] == pytest.approx(
        check.steps[2]["scores"]["IGC"]["rank_correlation"], abs=1e-12)


def test_randomisation_refuses_bad_models_and_layers_before_attributing():
    calls = []

    def attribute(model):
        calls.append(model)
        return np.zeros((1, 4))

    with pytest.raises(ModelError, match="no parameters"):
        model_randomisation(nn.Sequential(nn.ReLU(), nn.Tanh()), attribute, progress=False)
    with pytest.raises(ModelError, match="nn.Module"):
        model_randomisation(lambda x: x.sum(1), attribute, progress=False)
    with pytest.raises(InputError, match="no parameter-holding layer 'head'"):
        model_randomisation(nn.Sequential(nn.Linear(4, 2), nn.Linear(2, 1)), attribute, layers=["head"],
                            progress=False)
    with pytest.raises(InputError, match="nothing to run"):
        model_randomisation(nn.Linear(4, 1), attribute, cascading=False, independent=False, progress=False)
    assert calls == []
    # a layer given by name is randomised alone; the map that does not change is flagged
    check = model_randomisation(nn.Sequential(nn.Linear(4, 2), nn.Linear(2, 1)), attribute, layers=["0"],
                                independent=False, progress=False)
    assert check.layers == ["0"] and len(check.steps) == 1


# ------------------------------------------------------------------------------------- comparisons, localisation


def test_rank_correlation_and_roc_auc_against_references():
    generator = np.random.default_rng(0)
    a, b = generator.normal(size=(6, 7)), generator.normal(size=(6, 7))
    b[0, :3] = b[1, :3] = 0.25  # ties
    assert rank_correlation(a, b) == pytest.approx(stats.spearmanr(a.ravel(), b.ravel())[0], abs=1e-12)
    assert np.isnan(rank_correlation(np.ones(5), np.arange(5)))
    scores = np.round(generator.normal(size=40), 1)  # ties between classes
    labels = generator.random(40) < 0.4
    pairs = [(1.0 if s > t else 0.5 if s == t else 0.0)
             for s, t in itertools.product(scores[labels], scores[~labels])]
    assert roc_auc(scores, labels) == pytest.approx(np.mean(pairs), abs=1e-12)
    with pytest.raises(InputError, match="both classes"):
        roc_auc(scores, np.ones(40, dtype=bool))
    with pytest.raises(ShapeError):
        rank_correlation(np.zeros(3), np.zeros(4))


def test_ssim_is_the_single_window_formula_on_a_window_sized_map():
    generator = np.random.default_rng(1)
    a, b = generator.normal(size=(7, 7)), generator.normal(size=(7, 7))
    assert ssim(a, a) == pytest.approx(1.0)
    value = ssim(a, b, normalise=False, data_range=4.0)
    mean_a, mean_b = a.mean(), b.mean()
    var_a, var_b = a.var(ddof=1), b.var(ddof=1)
    covariance = ((a - mean_a) * (b - mean_b)).sum() / 48
    c1, c2 = (0.01 * 4) ** 2, (0.03 * 4) ** 2
    expected = ((2 * mean_a * mean_b + c1) * (2 * covariance + c2)) / ((mean_a**2 + mean_b**2 + c1) *
                                                                        (var_a + var_b + c2))
    assert value == pytest.approx(expected, abs=1e-12)
    # scale-free by default, 1-D maps and singleton axes work, (K, C, H, W) is refused
    assert ssim(a, 5 * a) == pytest.approx(1.0)
    assert ssim(np.sin(np.arange(30.0)), np.sin(np.arange(30.0))) == pytest.approx(1.0)
    assert ssim(a[None, None], b[None, None]) == pytest.approx(ssim(a, b))
    noise = np.random.default_rng(2).normal(size=(2, 40, 40))
    assert abs(ssim(noise[0], noise[1])) < 0.1  # unrelated maps
    with pytest.raises(ShapeError):
        ssim(np.zeros((2, 2, 3, 7)), np.zeros((2, 2, 3, 7)))


def test_localisation_share_and_auc():
    truth = np.zeros((4, 4), dtype=bool)
    truth[1:3, 1:3] = True
    maps = np.zeros((2, 4, 4))
    maps[0][truth] = 1.0
    maps[0][0, 0] = -2.0  # outside, negative
    maps[1] = np.arange(16.0).reshape(4, 4)
    found = localisation({"m": maps}, truth)
    assert found.share["m"][0] == pytest.approx(4 / 6)
    assert found.share["m"][1] == pytest.approx(maps[1][truth].sum() / maps[1].sum())
    assert found.auc["m"][1] == pytest.approx(roc_auc(maps[1], truth))
    positive = localisation(maps[0], truth, mode="positive")
    assert positive.share["map"][0] == pytest.approx(1.0) and positive.auc["map"][0] == pytest.approx(
        roc_auc(maps[0], truth))
    weighted = localisation(maps[1], truth * 2.0)
    assert weighted.share["map"][0] == pytest.approx(found.share["m"][1])
    assert found.table()[0]["method"] == "m"
    with pytest.raises(ShapeError):
        localisation(np.zeros((2, 3, 3)), truth)
    with pytest.raises(InputError, match="non-negative"):
        localisation(maps, -truth.astype(float))


# ---------------------------------------------------------------------------------------- output and command


def test_tables_and_figures(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model, x, y, _ = linear_problem(n=40)
    result = faithfulness(model, (x, y), {"a": np.arange(10.0)}, fractions=np.linspace(0, 1, 4), random_rankings=2,
                          progress=False)
    written = write_table(result.table(), tmp_path / "table.csv")
    text = written["markdown"].read_text()
    assert text.startswith("| method | deletion_auc |") and "| a |" in text
    header = written["csv"].read_text().splitlines()[0]
    assert header.split(",")[:2] == ["method", "deletion_auc"]
    assert "—" in markdown_table([{"x": None, "y": 1.5}])
    json.dumps(result.to_dict())
    plt.close(result.plot(title="linear"))
    plt.close(result.plot(output=0))


def test_evaluate_command_writes_table_json_and_figures(tmp_path, capsys):
    from igcorr.cli import main

    out = tmp_path / "evaluation"
    status = main(["evaluate", "--experiment", "B", "--n", "60", "--steps", "2", "--baselines", "1", "--fractions",
                   "4", "--random", "2", "--no-sanity", "--out", str(out), "--no-progress"])
    printed = capsys.readouterr()
    assert status == 0, printed.err
    assert "wrote " in printed.out and "IGC" in printed.out
    for name in ("evaluation.csv", "evaluation.md", "evaluation.json", "faithfulness_B.png"):
        assert (out / name).stat().st_size > 0
    report = json.loads((out / "evaluation.json").read_text())
    methods = [row["method"] for row in report["rows"]]
    assert {"IGC", "naive correlation", "IG std", "BSC (N/10)"} <= set(methods)
    assert main(["evaluate", "--experiment", "B", "--fractions", "1", "--out", str(out)]) == 2
    assert "fractions" in capsys.readouterr().err
    assert main(["evaluate", "--experiment", "Q", "--out", str(out)]) == 2


def test_benchmark_sanity_flags_the_naive_maps():
    from igcorr_examples.evaluation import EvaluationConfig, evaluate_experiment

    config = EvaluationConfig(n=60, n_steps=2, baselines=1, fractions=3, random_rankings=1, sanity_samples=20,
                              sanity_steps=2, sanity_baselines=1, sanity_bsc_samples=3, sanity_permutations=9,
                              n_train=100, epochs=1, hidden=(8,), independent=False, progress=False)
    report = evaluate_experiment("A", config)
    rows = {(row["model"], row["method"]): row for row in report["rows"]}
    assert rows["MLP", "naive correlation"]["model_independent"] and rows["MLP", "naive t"]["model_independent"]
    assert not rows["MLP", "IGC"]["model_independent"] and rows["MLP", "IGC"]["label_p_fwe_min"] is not None
    # the statistic has no parameters: its rows have faithfulness and localisation, no sanity columns
    assert "model_independent" not in rows["statistic", "IGC"] and rows["statistic", "IGC"]["roc_auc"] > 0.5
    assert set(report["faithfulness"]) == {"statistic", "MLP"}
