"""Tests of the synthetic 1/f benchmark: images, masks, statistics, labels, ground truth and training."""

from __future__ import annotations

import math

import pytest
import torch

from igcorr_examples import synthetic as syn
from igcorr_examples.synthetic_models import SmallConvNeXt, SyntheticMLP, train_model, trainable_model
from igcorr.errors import InputError, ShapeError

N_IMAGES = 1500


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """1,500 images of seed 0, float64 for the statistics below."""
    return syn.generate_images(0, range(N_IMAGES)).to(torch.float64)


# ---------------------------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------------------------
def test_gain_has_unit_mean_square_and_fixed_dc() -> None:
    gain = syn.spectral_gain(64)
    assert gain.shape == (64, 64)
    assert torch.mean(gain**2).item() == pytest.approx(1.0, rel=1e-12)
    # DC replaced by half the first non-zero frequency: G[0,0] / G[0,1] = (1/2)^-1.2
    assert (gain[0, 0] / gain[0, 1]).item() == pytest.approx(2**1.2, rel=1e-12)
    assert torch.equal(gain, gain.T)


def test_images_shape_dtype(images: torch.Tensor) -> None:
    small = syn.generate_images(3, [0, 1])
    assert small.shape == (2, 1, 64, 64) and small.dtype == torch.float32
    assert syn.generate_images(3, 4, dtype=torch.float64).dtype == torch.float64
    assert torch.isfinite(images).all()


def test_pixels_have_zero_mean_and_unit_variance(images: torch.Tensor) -> None:
    n = images.shape[0]
    flat = images.flatten(1)
    # pooled over pixels; the standard error comes from the spread between images (pixels are correlated)
    per_image_square = (flat**2).mean(1)
    assert abs(per_image_square.mean().item() - 1) < 5 * per_image_square.std().item() / math.sqrt(n)
    per_image_mean = flat.mean(1)
    assert abs(per_image_mean.mean().item()) < 5 * per_image_mean.std().item() / math.sqrt(n)
    # every pixel: mean ~ N(0, 1/n), mean square ~ N(1, 2/n)
    assert flat.mean(0).abs().max().item() < 5 / math.sqrt(n)
    assert ((flat**2).mean(0) - 1).abs().max().item() < 5 * math.sqrt(2 / n)


def test_power_spectrum_follows_the_gain(images: torch.Tensor) -> None:
    power = (torch.fft.fft2(images[:, 0], norm="ortho").abs() ** 2).mean(0)  # expected: G² in every bin
    frequency = torch.sqrt(torch.fft.fftfreq(64)[:, None] ** 2 + torch.fft.fftfreq(64)[None, :] ** 2)
    keep = frequency > 0
    log_f = torch.log(frequency[keep]).double()
    log_p = torch.log(power[keep])
    slope = ((log_f - log_f.mean()) * (log_p - log_p.mean())).sum() / ((log_f - log_f.mean()) ** 2).sum()
    assert slope.item() == pytest.approx(-2.4, abs=0.05)
    # the DC bin is a mean of n chi-square(1) draws scaled by G[0,0]²
    gain = syn.spectral_gain(64)
    assert (power[0, 0] / gain[0, 0] ** 2).item() == pytest.approx(1.0, abs=5 * math.sqrt(2 / images.shape[0]))


def test_sample_is_a_pure_function_of_seed_and_index() -> None:
    ten = syn.generate_images(11, range(10))
    assert torch.equal(syn.generate_images(11, [5, 6, 7]), ten[5:8])
    assert torch.equal(syn.generate_images(11, torch.tensor([7, 5])), ten[[7, 5]])
    assert not torch.allclose(syn.generate_images(12, [5, 6, 7]), ten[5:8])
    assert not torch.allclose(ten[0], ten[1])
    assert syn.generate_images(11, []).shape == (0, 1, 64, 64)


@pytest.mark.parametrize("bad", [[-1], [0.5], [[1, 2]]])
def test_generate_rejects_bad_indices(bad: object) -> None:
    with pytest.raises(InputError):
        syn.generate_images(0, bad)


def test_generate_rejects_bad_seed() -> None:
    with pytest.raises(InputError, match="seed"):
        syn.generate_images(1.5, [0])  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------
# covariance
# ---------------------------------------------------------------------------------------------------------
def test_covariance_product_matches_the_exact_covariance_on_a_small_grid() -> None:
    size = 16
    pixels = size * size
    # the images are linear in the noise, X = J z; feeding the basis vectors gives the rows of Jᵀ
    basis = torch.eye(2 * pixels, dtype=torch.float64).reshape(2 * pixels, 2, size, size)
    jacobian_t = syn.images_from_noise(basis, dtype=torch.float64).reshape(2 * pixels, pixels)
    covariance = jacobian_t.T @ jacobian_t
    assert torch.allclose(covariance.diagonal(), torch.ones(pixels, dtype=torch.float64), atol=1e-12)
    w = torch.randn(3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expected = (w.reshape(3, pixels) @ covariance).reshape(3, size, size)
    assert torch.allclose(syn.covariance_product(w), expected, atol=1e-12)


def test_covariance_product_matches_the_empirical_covariance(images: torch.Tensor) -> None:
    w = syn.experiment_masks("A").to(torch.float64)  # (1, 64, 64)
    y = (images * w).sum((1, 2, 3))
    products = images[:, 0] * y[:, None, None]  # E[x y] = C w for zero-mean x
    estimate = products.mean(0)
    standard_error = products.std(0) / math.sqrt(images.shape[0])
    z = (estimate - syn.covariance_product(w)[0]) / standard_error
    assert z.abs().max().item() < 5.5


def test_covariance_product_checks_shape() -> None:
    with pytest.raises(ShapeError):
        syn.covariance_product(torch.zeros(4, 5))


# ---------------------------------------------------------------------------------------------------------
# masks and regions
# ---------------------------------------------------------------------------------------------------------
def _centroid(mask: torch.Tensor) -> tuple[float, float]:
    x, y = syn.pixel_coordinates(mask.shape[-1])
    return x[mask].mean().item(), y[mask].mean().item()


def test_coordinates() -> None:
    x, y = syn.pixel_coordinates(64)
    assert x[0, 0].item() == pytest.approx(-31.5 / 64) and x[0, 63].item() == pytest.approx(31.5 / 64)
    assert y[0, 0].item() == pytest.approx(31.5 / 64) and y[63, 0].item() == pytest.approx(-31.5 / 64)


def test_gaussian_component_integrates_to_alpha() -> None:
    component = syn.gaussian_component(0.0, 0.0, 0.05, 2.0)
    assert component.sum().item() == pytest.approx(2.0, rel=1e-3)


@pytest.mark.parametrize(
    ("experiment", "counts"),
    [("B", [934, 936, 936]), ("C", [524] * 4), ("D", [376] * 5 + [64] * 5)],
)
def test_mask_pixel_counts(experiment: str, counts: list[int]) -> None:
    masks = syn.experiment_masks(experiment)
    assert masks.dtype == torch.bool and masks.shape == (len(counts), 64, 64)
    measured = masks.flatten(1).sum(1).tolist()
    assert all(abs(m - c) <= 3 for m, c in zip(measured, counts)), measured
    assert len(syn.mask_channel_names(experiment)) == len(counts)


def test_disk_counts_match_the_density_rule_and_the_spec() -> None:
    for sigma, spec_count in [(0.125, 935), (0.078125, 524), (0.07, 440)]:
        area = math.pi * (syn.disk_radius(sigma) * 64) ** 2
        count = int(syn.disk_mask(0.0, 0.0, sigma).sum())
        assert abs(count - area) < 0.025 * area
        x, y = syn.pixel_coordinates(64)
        density = torch.exp(-(x**2 + y**2) / (2 * sigma**2)) / (2 * math.pi * sigma**2)
        assert torch.equal(syn.disk_mask(0.0, 0.0, sigma), density > 1)
    masks_b = syn.experiment_masks("B").flatten(1).sum(1)
    assert all(abs(int(c) - 935) <= 3 for c in masks_b)
    masks_d = syn.experiment_masks("D")
    assert int((masks_d[0] | masks_d[5]).sum()) == 440


def test_b_geometry() -> None:
    top, left, right = syn.experiment_masks("B")
    assert _centroid(top)[1] > _centroid(left)[1] + 0.2 and _centroid(top)[1] > _centroid(right)[1] + 0.2
    assert _centroid(left)[0] < 0 < _centroid(right)[0]
    regions = syn.region_masks("B")
    assert regions["triple_overlap"].sum() > 0
    assert torch.equal(regions["triple_overlap"], top & left & right)
    singles = [regions[name] for name in ("top_only", "bottom_left_only", "bottom_right_only")]
    stacked = torch.stack(singles + [regions["triple_overlap"]]).to(torch.int64)
    assert stacked.sum(0).max() == 1  # disjoint
    assert torch.equal(regions["outside"], ~(top | left | right))


def test_c_geometry_and_order() -> None:
    masks = syn.experiment_masks("C")
    signs = [(math.copysign(1, cx), math.copysign(1, cy)) for cx, cy in map(_centroid, masks)]
    assert signs == [(-1, 1), (1, 1), (-1, -1), (1, -1)]  # TL, TR, BL, BR
    assert (masks.to(torch.int64).sum(0) <= 1).all()  # no overlap
    # the pairs are exact vertical translates (their pixels pair up for the cosine)
    assert torch.equal(torch.roll(masks[0], 28, dims=0), masks[2])
    assert torch.equal(torch.roll(masks[1], 28, dims=0), masks[3])
    regions = syn.region_masks("C")
    assert torch.equal(regions["left_pair"], masks[0] | masks[2])
    assert torch.equal(regions["right_pair"], masks[1] | masks[3])


def test_d_geometry() -> None:
    masks = syn.experiment_masks("D")
    rings, squares = masks[:5], masks[5:]
    assert not (rings & squares).any()
    for square in squares:
        rows, cols = torch.nonzero(square, as_tuple=True)
        assert rows.max() - rows.min() == 7 and cols.max() - cols.min() == 7
    centroids = [_centroid(ring | square) for ring, square in zip(rings, squares)]
    assert centroids[0] == pytest.approx((0.0, 0.0), abs=1e-9)
    assert centroids[1][0] < 0 < centroids[1][1] and centroids[4][1] < 0 < centroids[4][0]
    assert torch.equal(torch.roll(masks[0], (-18, -18), dims=(0, 1)), masks[1])  # centre -> top-left
    regions = syn.region_masks("D")
    assert int(regions["corner_rings"].sum()) == 4 * 376 and int(regions["corner_squares"].sum()) == 256


def test_a_weights_are_a_difference_of_gaussians() -> None:
    weights = syn.experiment_masks("A")
    assert weights.shape == (1, 64, 64) and weights.dtype == torch.float32
    assert weights[0, 31, 31] < 0 and weights[0, 31, 50] > 0
    regions = syn.region_masks("A")
    assert regions["negative_centre"][31, 31] and regions["positive_surround"][0, 31]


def test_unknown_experiment() -> None:
    with pytest.raises(InputError, match="experiment"):
        syn.experiment_masks("E")


# ---------------------------------------------------------------------------------------------------------
# statistics as models
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("experiment", syn.EXPERIMENTS)
def test_function_model_shapes_and_gradients(experiment: str, images: torch.Tensor) -> None:
    model = syn.function_model(experiment)
    assert not list(model.parameters())
    x = images[:6].float().clone().requires_grad_(True)
    out = model(x)
    assert out.shape == (6, syn.num_outputs(experiment))
    out[:, 0].sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    if experiment == "D":
        assert torch.allclose(out.sum(1), torch.ones(6))
    with pytest.raises(ShapeError):
        model(torch.zeros(2, 64, 64))


def test_a_statistic_is_the_weighted_sum(images: torch.Tensor) -> None:
    x = images[:10]
    weights = syn.experiment_masks("A").to(torch.float64)
    expected = (x * weights).sum((1, 2, 3))
    assert torch.allclose(syn.function_model("A")(x)[:, 0], expected, atol=1e-12)


def test_b_and_c_statistics_by_hand(images: torch.Tensor) -> None:
    x = images[:5, 0]
    disks = syn.experiment_masks("B")
    expected_b = torch.stack([torch.stack([image[d].mean() for d in disks]).max() for image in x])
    assert torch.allclose(syn.function_model("B")(images[:5])[:, 0], expected_b, atol=1e-12)

    def cos(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return (u @ v) / (u.norm() * v.norm())

    tl, tr, bl, br = syn.experiment_masks("C")
    expected_c = torch.stack([torch.maximum(cos(i[tl], i[bl]), cos(i[tr], i[br])) for i in x])
    assert torch.allclose(syn.function_model("C")(images[:5])[:, 0], expected_c, atol=1e-12)


def test_d_similarities_by_hand(images: torch.Tensor) -> None:
    x = images[:3]
    masks = syn.experiment_masks("D")
    rings, squares = masks[:5], masks[5:]
    model = syn.function_model("D")
    permutation = torch.tensor([2, 0, 3, 1])

    def expected(image: torch.Tensor, perm: list[int]) -> torch.Tensor:
        ref = torch.cat([image[rings[0]], image[squares[0]]])
        values = []
        for corner in range(4):
            vec = torch.cat([image[rings[1 + corner]], image[squares[1 + perm[corner]]]])
            values.append(ref @ vec / (ref.norm() * vec.norm()))
        return torch.stack(values)

    own = torch.stack([expected(image[0], [0, 1, 2, 3]) for image in x])
    permuted = torch.stack([expected(image[0], permutation.tolist()) for image in x])
    assert torch.allclose(model.similarities(x), own, atol=1e-12)
    assert torch.allclose(model.similarities(x, permutation), permuted, atol=1e-12)
    assert torch.allclose(model(x), torch.softmax(100 * own, dim=1), atol=1e-12)


def test_function_model_standardisation_arguments() -> None:
    with pytest.raises(InputError):
        syn.function_model("A", target_mean=1.0)
    with pytest.raises(InputError):
        syn.function_model("D", target_mean=0.0, target_std=1.0)
    with pytest.raises(InputError):
        syn.function_model("B", target_mean=0.0, target_std=0.0)


# ---------------------------------------------------------------------------------------------------------
# dataset and labels
# ---------------------------------------------------------------------------------------------------------
def test_dataset_items_are_pure_and_standardised() -> None:
    dataset = syn.SyntheticDataset("A", 40, seed=3)
    x, y = dataset[5]
    assert x.shape == (1, 64, 64) and y.shape == (1,) and y.dtype == torch.float32
    assert torch.equal(x, syn.generate_images(3, [5])[0])
    assert dataset.targets.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert dataset.targets.std(correction=0).item() == pytest.approx(1.0, abs=1e-5)
    uncached = syn.SyntheticDataset("A", 40, seed=3, cache_images=False, batch_size=7)
    assert not uncached.caches_images and dataset.caches_images
    assert torch.equal(uncached[5][0], x) and torch.equal(uncached.targets, dataset.targets)
    xb, yb = dataset.get_batch([5, 9])
    assert torch.equal(xb[0], x) and torch.equal(yb[0], y)
    # the standardised function model reproduces the targets
    assert torch.allclose(dataset.function_model()(xb), yb, atol=1e-5)
    other = syn.SyntheticDataset("A", 10, seed=4, standardize=dataset.standardization)
    assert other.standardization == dataset.standardization
    raw = syn.SyntheticDataset("A", 10, seed=4, standardize=False)
    assert raw.standardization is None and torch.equal(raw.targets, raw.raw_targets.float())
    with pytest.raises(IndexError):
        dataset[40]


def test_b_dataset_matches_function_model() -> None:
    dataset = syn.SyntheticDataset("B", 30, seed=5)
    x, y = dataset.get_batch(range(30))
    assert torch.allclose(dataset.function_model()(x), y, atol=1e-5)


def test_c_labels_drop_only_the_right_pair() -> None:
    n = 2000
    dataset = syn.SyntheticDataset("C", n, seed=6)
    kept = dataset.kept
    assert kept is not None and kept.shape == (n, 2)
    assert kept[:, 0].all()
    dropped = 1 - kept[:, 1].double().mean().item()
    assert abs(dropped - 0.5) < 4 * math.sqrt(0.25 / n)
    # labels: max(s1, k2·s2), standardised
    model = syn.function_model("C")
    x, _ = dataset.get_batch(range(50))
    s = model.similarities(x.double())
    expected = torch.maximum(s[:, 0], s[:, 1] * kept[:50, 1])
    assert torch.allclose(dataset.raw_targets[:50, 0], expected, atol=1e-12)
    # where nothing was dropped the (standardised) function model reproduces the targets
    standardised = dataset.function_model()(x)[:, 0]
    targets = dataset.targets[:50, 0]
    assert torch.allclose(standardised[kept[:50, 1]], targets[kept[:50, 1]], atol=1e-5)
    # the drops are keyed on (seed, i): a shorter split sees the same ones, another seed other ones
    assert torch.equal(syn.SyntheticDataset("C", 100, seed=6).kept, kept[:100])
    assert not torch.equal(syn.SyntheticDataset("C", 100, seed=7).kept, kept[:100])


def test_d_labels_are_valid_one_hot_with_permuted_squares() -> None:
    n = 400
    dataset = syn.SyntheticDataset("D", n, seed=8)
    targets, permutations = dataset.targets, dataset.permutations
    assert targets.shape == (n, 4) and dataset.standardization is None
    assert torch.equal(targets.sum(1), torch.ones(n)) and set(targets.unique().tolist()) == {0.0, 1.0}
    assert (targets.sum(0) > 0).all()  # every corner wins sometimes
    assert permutations is not None
    assert torch.equal(permutations.sort(1).values, torch.arange(4).expand(n, 4))
    assert len({tuple(p) for p in permutations.tolist()}) > 12
    x, y = dataset.get_batch(range(20))
    s = syn.function_model("D").similarities(x.double(), permutations[:20])
    assert torch.equal(y.argmax(1), s.argmax(1))
    assert torch.equal(syn.SyntheticDataset("D", 50, seed=8).permutations, permutations[:50])


def test_dataset_argument_errors() -> None:
    with pytest.raises(InputError):
        syn.SyntheticDataset("A", 0)
    with pytest.raises(InputError):
        syn.SyntheticDataset("C", 5, drop_probabilities=(0.0, 1.5))
    with pytest.raises(InputError):
        syn.SyntheticDataset("A", 5, standardize=(0.0, -1.0))


# ---------------------------------------------------------------------------------------------------------
# ground truth
# ---------------------------------------------------------------------------------------------------------
def test_ground_truth_maps() -> None:
    truth_a = syn.ground_truth_map("A")
    weights = syn.experiment_masks("A").double()
    assert truth_a.shape == (1, 64, 64)
    assert truth_a[0, 31, 31] < 0 < truth_a[0, 31, 45]  # negative centre, positive ring
    variance = (weights * syn.covariance_product(weights)).sum().item()
    assert truth_a.double().sum().item() == pytest.approx(variance, rel=1e-5) and variance > 0
    for experiment in "BCD":
        truth = syn.ground_truth_map(experiment)
        assert torch.equal(truth[0] > 0, syn.experiment_masks(experiment).any(0))


# ---------------------------------------------------------------------------------------------------------
# trainable models
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture()
def one_thread():
    """Train on one thread: on a shared 2-core machine two torch threads were measured up to 30× slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
def test_mlp_training_reduces_the_loss_and_is_repeatable() -> None:
    train = syn.SyntheticDataset("A", 300, seed=10)
    valid = syn.SyntheticDataset("A", 100, seed=11, standardize=train.standardization)
    histories = []
    for _ in range(2):
        model = trainable_model("mlp", "A", seed=1, hidden=(64,))
        histories.append(train_model(model, train, epochs=4, batch_size=32, lr=1e-3, seed=2, progress=False,
                                     validation=valid))
        assert not model.training
    history = histories[0]
    assert len(history["train_loss"]) == 4 and len(history["epoch_seconds"]) == 4
    assert history["train_loss"][-1] < 0.5 * history["train_loss"][0]
    assert history["val_loss"][-1] < history["val_loss"][0]
    assert histories[0]["train_loss"] == histories[1]["train_loss"]


@pytest.mark.usefixtures("one_thread")
def test_convnext_shapes_and_one_training_epoch() -> None:
    model = trainable_model("convnext", "D", seed=0, depths=1)
    assert isinstance(model, SmallConvNeXt) and model.in_features == 1024
    dataset = syn.SyntheticDataset("D", 17, seed=12)  # 17 = 2·8 + 1: the lone last sample is merged
    history = train_model(model, dataset, epochs=1, batch_size=8, seed=0, progress=False)
    assert math.isfinite(history["train_loss"][0]) and not model.training
    assert model(dataset.get_batch(range(3))[0]).shape == (3, 4)
    full = SmallConvNeXt(1)
    assert sum(len(stage) for stage in list(full.stages)[::2]) == 12  # four stages of three blocks


def test_train_model_errors() -> None:
    dataset = syn.SyntheticDataset("A", 10, seed=0)
    with pytest.raises(InputError):
        train_model(SyntheticMLP(1, hidden=(4,)), dataset, epochs=0, progress=False)
    with pytest.raises(InputError, match="no trainable parameters"):
        train_model(syn.function_model("A"), dataset, progress=False)
    with pytest.raises(ShapeError):
        train_model(SyntheticMLP(3, hidden=(4,)), dataset, epochs=1, progress=False)
