"""pRF mapping with IGC: synthetic voxels with known population receptive fields, an encoding model, and the
receptive fields read back from the model's IGC maps.

The simulation
--------------
Each voxel pools the local contrast energy of the image inside a circular Gaussian window, its population
receptive field (pRF): centre (x₀, y₀) and size σ in pixels, a gain and a sign (a few voxels are suppressed by
contrast in their field). The energy is the square of the image filtered by a centre-surround (difference of
Gaussians) filter. The pooled energy is standardised, multiplied by the gain and the sign, and Gaussian noise
is added whose size sets the voxel's noise ceiling (the correlation a perfect model would reach). Images are
1/f random fields like natural images (:func:`igcorr_examples.synthetic.generate_images`), whose neighbouring
pixels are strongly correlated.

The encoding model
------------------
A small convolutional network (a bank of 5 × 5 filters, squared; a 1 × 1 convolution to two feature maps and
a ReLU; 4 × 4 average pooling) with one linear readout to every voxel, trained on the training images by
minimising the squared error of the standardised responses. Its readout has 128 inputs, so IGC of all voxels
takes the readout shortcut: the path integrals run over 128 units and are projected onto the voxels. The
network has no bias before the readout and is positively homogeneous of degree two (f(αx) = α²g(x) + b), so the
IG integrand along a straight path from the zero (mean-luminance) image is linear in α: one Gauss–Legendre node
(α = 1/2) is exact, and the completeness diagnostics of the run confirm it. Each sample then costs one point
and 128 backward passes.

What is compared
----------------
Each voxel's IGC map (on held-out images, with the measured, noisy responses as targets) is summarised by a 2-D
Gaussian fit (:func:`igcorr.prf.fit_prf`). The same fit is applied to the model-free reverse-correlation map:
the correlation, over all images, of each pixel's squared contrast with the voxel's response. Both are compared
with the truth: centre error (pixels), correlation of fitted with true sizes, and their dependence on the noise
ceiling.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

IMAGE_SIZE = 32
#: centre and surround widths (pixels) of the difference-of-Gaussians filter whose squared output is the energy
DOG_WIDTHS = (0.8, 1.6)


@dataclass
class VoxelPopulation:
    """The true pRFs of simulated voxels (arrays of shape (K,)): centre ``x``, ``y`` and size ``sigma`` in pixels,
    ``gain``, ``sign`` (+1/−1), the noise standard deviation ``noise`` and the ``ceiling`` (the correlation a
    perfect model reaches, gain / √(gain² + noise²))."""

    x: np.ndarray
    y: np.ndarray
    sigma: np.ndarray
    gain: np.ndarray
    sign: np.ndarray
    noise: np.ndarray
    ceiling: np.ndarray
    size: int = IMAGE_SIZE

    def __len__(self) -> int:
        return len(self.x)

    def windows(self) -> np.ndarray:
        """The pooling windows (K, H, W), each summing to 1."""
        from igcorr.prf import gaussian_maps

        params = np.column_stack([self.x, self.y, self.sigma, np.ones(len(self))])
        windows = gaussian_maps(params, (self.size, self.size))
        return windows / windows.sum(axis=(1, 2), keepdims=True)


def simulate_population(n_voxels: int = 2000, size: int = IMAGE_SIZE, seed: int = 0,
                        negative_share: float = 0.15, margin: float = 2.0) -> VoxelPopulation:
    """Draw ``n_voxels`` pRFs: centres uniform at least ``margin`` pixels inside the image, sizes log-uniform in
    [1, 4] px, gains uniform in [0.5, 2], a share of negative signs, and noise ceilings uniform in [0.5, 0.9]."""
    rng = np.random.default_rng([seed, 0x9F1])
    x = rng.uniform(margin, size - 1 - margin, n_voxels)
    y = rng.uniform(margin, size - 1 - margin, n_voxels)
    sigma = np.exp(rng.uniform(np.log(1.0), np.log(4.0), n_voxels))
    gain = rng.uniform(0.5, 2.0, n_voxels)
    sign = np.where(rng.random(n_voxels) < negative_share, -1.0, 1.0)
    ceiling = rng.uniform(0.5, 0.9, n_voxels)
    noise = gain * np.sqrt(1.0 / ceiling**2 - 1.0)
    return VoxelPopulation(x, y, sigma, gain, sign, noise, ceiling, size)


def natural_images(n: int, seed: int, size: int = IMAGE_SIZE, offset: int = 0) -> torch.Tensor:
    """``n`` 1/f images (n, 1, size, size), float32, unit pixel variance; image i is a function of
    (seed, offset + i)."""
    from igcorr_examples.synthetic import generate_images

    return generate_images(seed, np.arange(offset, offset + n), size=size)


def contrast_energy(images: torch.Tensor) -> torch.Tensor:
    """Squared centre-surround contrast (n, H, W), float64: the images filtered by a difference of Gaussians (in
    the Fourier domain, periodic like the 1/f images) and squared."""
    size = images.shape[-1]
    frequency = torch.fft.fftfreq(size, dtype=torch.float64)
    radius2 = frequency[:, None] ** 2 + frequency[None, :] ** 2
    centre, surround = DOG_WIDTHS
    transfer = (torch.exp(-2 * np.pi**2 * centre**2 * radius2) - torch.exp(-2 * np.pi**2 * surround**2 * radius2))
    filtered = torch.fft.ifft2(torch.fft.fft2(images[:, 0].to(torch.float64)) * transfer).real
    return filtered.square()


def pooled_signal(images: torch.Tensor, population: VoxelPopulation, chunk: int = 512) -> np.ndarray:
    """The noiseless drive of every voxel (n, K): its pRF window applied to the contrast energy."""
    windows = torch.from_numpy(population.windows().reshape(len(population), -1))
    parts = []
    for start in range(0, len(images), chunk):
        energy = contrast_energy(images[start : start + chunk]).reshape(-1, windows.shape[1])
        parts.append((energy @ windows.T).numpy())
    return np.concatenate(parts)


def voxel_responses(signal: np.ndarray, population: VoxelPopulation, reference: np.ndarray, seed: int,
                    offset: int = 0) -> np.ndarray:
    """Responses (n, K) float32: the drive standardised with ``reference``'s mean and deviation, times gain and
    sign, plus the voxel's noise (keyed by seed and sample number, so any split gives the same responses)."""
    mean, std = reference.mean(axis=0), reference.std(axis=0)
    drive = (signal - mean) / std * (population.gain * population.sign)
    rng = np.random.default_rng([seed, 0x5EED, offset, len(signal)])
    return (drive + rng.standard_normal(signal.shape) * population.noise).astype(np.float32)


class Square(nn.Module):
    """Elementwise square (the energy of a filter's output)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x


class GaussianPool(nn.Module):
    """Fixed Gaussian blur (standard deviation ``pool`` / 2) and subsampling by ``pool``, channel by channel.

    Smooth, overlapping pooling windows let the readout place a voxel's window anywhere between the grid's
    points (box pooling would pull it to the centres of the boxes).
    """

    def __init__(self, channels: int, pool: int) -> None:
        super().__init__()
        radius = pool
        offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
        profile = torch.exp(-0.5 * (offsets / (pool / 2)) ** 2)
        kernel = profile[:, None] * profile[None, :]
        self.register_buffer("weight", (kernel / kernel.sum()).expand(channels, 1, -1, -1).clone())
        self.stride, self.padding, self.groups = pool, radius, channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(x, self.weight, stride=self.stride, padding=self.padding, groups=self.groups)


class EncodingModel(nn.Module):
    """Image → voxels: 5 × 5 filters, squared; a 1 × 1 convolution to ``features`` maps and a ReLU; Gaussian
    pooling by ``pool`` (:class:`GaussianPool`); one linear readout to every voxel (``features`` · (size /
    pool)² inputs).

    No layer before the readout has a bias, so the network is positively homogeneous of degree two in its input
    (up to the readout's bias).
    """

    def __init__(self, n_voxels: int, size: int = IMAGE_SIZE, filters: int = 8, features: int = 2,
                 pool: int = 4) -> None:
        super().__init__()
        self.core = nn.Sequential(nn.Conv2d(1, filters, 5, padding=2, bias=False), Square(),
                                  nn.Conv2d(filters, features, 1, bias=False), nn.ReLU(),
                                  GaussianPool(features, pool), nn.Flatten())
        self.readout = nn.Linear(features * (size // pool) ** 2, n_voxels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.core(x))


def train_encoding_model(images: torch.Tensor, responses: np.ndarray, *, epochs: int = 40, batch_size: int = 128,
                         learning_rate: float = 3e-3, weight_decay: float = 1e-4, seed: int = 0,
                         progress: bool = True) -> tuple[EncodingModel, dict[str, Any]]:
    """Train on standardised responses (AdamW, squared error, learning rate decayed by a cosine); returns the
    model (in eval mode, predicting responses in their original units) and the loss per epoch."""
    torch.manual_seed(seed)
    mean = responses.mean(axis=0)
    std = responses.std(axis=0)
    targets = torch.from_numpy(((responses - mean) / std).astype(np.float32))
    model = EncodingModel(responses.shape[1], size=images.shape[-1])
    optimiser = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, epochs)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for _ in tqdm(range(epochs), desc="training the encoding model", unit="epoch", disable=not progress,
                  leave=False):
        order = torch.randperm(len(images), generator=generator)
        total = 0.0
        for start in range(0, len(images), batch_size):
            rows = order[start : start + batch_size]
            optimiser.zero_grad()
            loss = nn.functional.mse_loss(model(images[rows]), targets[rows])
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(rows)
        schedule.step()
        losses.append(total / len(images))
    with torch.no_grad():  # predict responses in their own units: fold the standardisation into the readout
        scale, shift = torch.from_numpy(std.astype(np.float32)), torch.from_numpy(mean.astype(np.float32))
        model.readout.weight.mul_(scale[:, None])
        model.readout.bias.mul_(scale).add_(shift)
    return model.eval(), {"loss": losses}


def reverse_correlation(images: torch.Tensor, responses: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Model-free maps (K, H, W): the correlation over images of each pixel's squared contrast (the squared
    deviation from mean luminance) with each voxel's response."""
    contrast = images[:, 0].to(torch.float64).square().reshape(len(images), -1).numpy()
    contrast = (contrast - contrast.mean(axis=0)) / contrast.std(axis=0)
    centred = (responses - responses.mean(axis=0)) / responses.std(axis=0)
    maps = np.empty((responses.shape[1], contrast.shape[1]))
    for start in range(0, responses.shape[1], chunk):
        maps[start : start + chunk] = centred[:, start : start + chunk].T @ contrast / len(images)
    return maps.reshape(responses.shape[1], images.shape[-2], images.shape[-1])


def recovery(fits: Any, truth: VoxelPopulation, sign: np.ndarray | None = None) -> dict[str, float]:
    """How well fitted pRFs match the truth: median and 90th percentile of the centre error (px), correlation
    of fitted and true sizes (Pearson on log σ, and Spearman), share of voxels whose response direction is
    right (``sign``, default the sign of the fitted map), median R²."""
    from scipy import stats

    sign = fits.sign if sign is None else sign
    error = np.hypot(fits.x - truth.x, fits.y - truth.y)
    return {
        "centre_error_median": float(np.median(error)),
        "centre_error_p90": float(np.percentile(error, 90)),
        "size_correlation": float(np.corrcoef(np.log(fits.sigma), np.log(truth.sigma))[0, 1]),
        "size_spearman": float(stats.spearmanr(fits.sigma, truth.sigma).statistic),
        "sign_agreement": float(np.mean(sign == truth.sign)),
        "r2_median": float(np.nanmedian(fits.r2)),
    }


def run_prf_example(out_dir: str | Path = "igcorr-out/prf-mapping", n_voxels: int = 2000, n_train: int = 6000,
                    n_test: int = 1000, epochs: int = 40, n_steps: int = 1, method: str = "gausslegendre",
                    margin: float = 2.0, pixels_per_degree: float = 4.0, seed: int = 0,
                    progress: bool = True) -> dict[str, Any]:
    """Simulate the voxels, train the encoding model, compute IGC of every voxel on held-out images, fit pRFs
    to the IGC and reverse-correlation maps, and write figures, tables and a summary to ``out_dir``.

    Returns
    -------
    dict
        Timings, the model's held-out correlations, the recovery numbers of both methods and the file paths.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import igcorr
    from igcorr._files import check_writable
    from igcorr.prf import PRFFits, VisualField, fit_prf, plot_prf_centres, plot_prf_fits

    out = check_writable(out_dir, "example")
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    population = simulate_population(n_voxels, seed=seed, margin=margin)
    images = natural_images(n_train + n_test, seed)
    signal = pooled_signal(images, population)
    responses = voxel_responses(signal, population, signal[:n_train], seed)
    train_x, test_x = images[:n_train], images[n_train:]
    train_y, test_y = responses[:n_train], responses[n_train:]
    timings["simulate"] = time.perf_counter() - started

    mark = time.perf_counter()
    model, history = train_encoding_model(train_x, train_y, epochs=epochs, seed=seed, progress=progress)
    with torch.no_grad():
        predicted = torch.cat([model(test_x[s : s + 500]) for s in range(0, n_test, 500)]).numpy()
        at_baseline = model(torch.zeros_like(test_x[:1])).numpy()[0]
    held_out = _columnwise_correlation(predicted, test_y)
    # an IGC map is positive where a well-predicted voxel's field is, whichever way the voxel responds to
    # contrast: the direction is that of the model's response, f(x) − f(baseline) on average
    direction = np.where(predicted.mean(axis=0) - at_baseline < 0, -1, 1)
    timings["train"] = time.perf_counter() - mark

    mark = time.perf_counter()
    result = igcorr.IGC(model).attribute((test_x, torch.from_numpy(test_y)), n_steps=n_steps, method=method,
                                         seed=seed, progress=progress)
    timings["igc"] = time.perf_counter() - mark

    field = VisualField(pixels_per_degree)
    mark = time.perf_counter()
    fits = fit_prf(result, field=field)
    timings["fit_igc"] = time.perf_counter() - mark
    mark = time.perf_counter()
    correlation_maps = reverse_correlation(images, responses)
    timings["reverse_correlation"] = time.perf_counter() - mark
    mark = time.perf_counter()
    reverse = fit_prf(correlation_maps, field=field, outputs=result.outputs)
    timings["fit_reverse_correlation"] = time.perf_counter() - mark
    # reverse correlation on the held-out images only: the data IGC's maps were computed on
    reverse_held_out = fit_prf(reverse_correlation(test_x, test_y), field=field, outputs=result.outputs)
    truth = PRFFits(np.arange(n_voxels), population.x, population.y, population.sigma,
                    population.gain * population.sign, np.ones(n_voxels), np.zeros(n_voxels, dtype=np.int64),
                    (population.size, population.size), field)
    numbers = {"igc": recovery(fits, population, direction),
               "reverse_correlation": recovery(reverse, population),
               "reverse_correlation_held_out": recovery(reverse_held_out, population)}

    # files
    written = {"result": result.save(out / "result.npz")}
    table = _truth_table(fits, reverse, population, held_out, direction)
    (out / "prf.csv").write_text(table)
    written["table"] = out / "prf.csv"
    chosen = _showcase(population)
    figures = {
        "centres": plot_prf_centres(fits, truth=truth, title=f"IGC pRF centres of {n_voxels} voxels (median "
                                                            f"error {numbers['igc']['centre_error_median']:.2f} px)"),
        "centres_reverse_correlation": plot_prf_centres(
            reverse, truth=truth, title=f"reverse-correlation centres (median error "
                                        f"{numbers['reverse_correlation']['centre_error_median']:.2f} px)"),
        "fits": plot_prf_fits(result, fits, chosen, truth=truth, title="IGC maps, fitted pRFs (1σ, 2σ) and the "
                                                                       "true 1σ (dashed)"),
        "recovery": _recovery_figure(fits, reverse, population),
    }
    for name, figure in figures.items():
        path = out / f"prf_{name}.png"
        figure.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(figure)
        written[name] = path
    timings["total"] = time.perf_counter() - started
    report = {
        "n_voxels": n_voxels, "n_train": n_train, "n_test": n_test, "epochs": epochs, "n_steps": n_steps,
        "method": method,
        "held_out_r_median": float(np.median(held_out)), "ceiling_median": float(np.median(population.ceiling)),
        "igc_correlation_median": float(np.median(result.correlation)),
        "completeness_max": float(np.max(result.diagnostics["completeness_max"])),
        "recovery": numbers, "seconds": timings, "batch_size": result.metadata["batch_size"],
        "engine": result.metadata["engine"], "files": {name: str(path) for name, path in written.items()},
    }
    (out / "summary.md").write_text(_summary(report))
    report["files"]["summary"] = str(out / "summary.md")
    return report


def _columnwise_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = (a - a.mean(axis=0)) / a.std(axis=0)
    b = (b - b.mean(axis=0)) / b.std(axis=0)
    return (a * b).mean(axis=0)


def _showcase(population: VoxelPopulation) -> list[int]:
    """Four voxels to draw: small and large, positive and negative pRFs."""
    order = np.argsort(population.sigma)
    positive = [int(v) for v in order if population.sign[v] > 0]
    negative = [int(v) for v in order if population.sign[v] < 0]
    chosen = [positive[len(positive) // 10], positive[len(positive) // 2], positive[-len(positive) // 10]]
    if negative:
        chosen.append(negative[len(negative) // 2])
    return chosen


def _truth_table(fits: Any, reverse: Any, population: VoxelPopulation, held_out: np.ndarray,
                 direction: np.ndarray) -> str:
    columns = {
        "voxel": np.arange(len(population)), "true_x": population.x, "true_y": population.y,
        "true_sigma": population.sigma, "gain": population.gain, "sign": population.sign,
        "ceiling": population.ceiling, "held_out_r": held_out,
        "igc_x": fits.x, "igc_y": fits.y, "igc_sigma": fits.sigma, "igc_amplitude": fits.amplitude,
        "igc_r2": fits.r2, "igc_eccentricity": fits.eccentricity, "igc_polar_angle": fits.polar_angle,
        "model_direction": direction,
        "rc_x": reverse.x, "rc_y": reverse.y, "rc_sigma": reverse.sigma, "rc_r2": reverse.r2,
    }
    lines = [",".join(columns)]
    for k in range(len(population)):
        lines.append(",".join(f"{values[k]:.6g}" for values in columns.values()))
    return "\n".join(lines) + "\n"


def _recovery_figure(fits: Any, reverse: Any, population: VoxelPopulation) -> Any:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    errors = {"IGC": np.hypot(fits.x - population.x, fits.y - population.y),
              "reverse correlation": np.hypot(reverse.x - population.x, reverse.y - population.y)}
    bins = np.linspace(0, 3, 61)
    for (name, error), colour in zip(errors.items(), ("#d95f02", "#7570b3")):
        axes[0].hist(np.clip(error, 0, 3), bins=bins, alpha=0.6, color=colour,
                     label=f"{name} (median {np.median(error):.2f} px)")
        axes[2].scatter(population.ceiling, error, s=3, alpha=0.35, color=colour, label=name)
    axes[0].set_xlabel("centre error (px; ≥ 3 pooled at 3)")
    axes[0].set_ylabel("voxels")
    axes[0].legend(fontsize=8)
    for method, colour, name in ((fits, "#d95f02", "IGC"), (reverse, "#7570b3", "reverse correlation")):
        axes[1].scatter(population.sigma, method.sigma, s=3, alpha=0.35, color=colour, label=name)
    axes[1].plot([1, 4], [1, 4], color="black", linewidth=0.8)
    axes[1].set_xscale("log")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("true σ (px)")
    axes[1].set_ylabel("fitted σ (px)")
    axes[1].legend(fontsize=8)
    axes[2].set_yscale("log")
    axes[2].set_xlabel("noise ceiling (r of a perfect model)")
    axes[2].set_ylabel("centre error (px)")
    axes[2].legend(fontsize=8)
    figure.tight_layout()
    return figure


def _summary(report: dict[str, Any]) -> str:
    igc, reverse = report["recovery"]["igc"], report["recovery"]["reverse_correlation"]
    held_out = report["recovery"]["reverse_correlation_held_out"]
    rows = [("median centre error (px)", "centre_error_median", ".3f"),
            ("90th percentile centre error (px)", "centre_error_p90", ".3f"),
            ("correlation of log sizes (fitted vs true)", "size_correlation", ".3f"),
            ("Spearman correlation of sizes", "size_spearman", ".3f"),
            ("response direction right (IGC: the model's f(x) − f(0))", "sign_agreement", ".3f"),
            ("median R² of the Gaussian fit", "r2_median", ".3f")]
    lines = ["# pRF mapping example", "",
             f"- {report['n_voxels']} simulated voxels; {report['n_train']} training and {report['n_test']} held-out "
             "1/f images (32 × 32)",
             f"- encoding model: held-out r median {report['held_out_r_median']:.3f} (noise ceilings: median "
             f"{report['ceiling_median']:.3f})",
             f"- IGC over all voxels on the held-out images ({report['n_steps']} {report['method']} node(s), zero "
             "baseline; "
             f"batch size {report['batch_size']}, readout shortcut {report['engine']['readout']}); largest "
             f"per-sample completeness error {report['completeness_max']:.2g}",
             "- time (s): " + ", ".join(f"{name} {value:.1f}" for name, value in report["seconds"].items()), "",
             "",
             f"| recovery | IGC (model trained on {report['n_train']}, maps on {report['n_test']} held-out images) "
             f"| reverse correlation, all {report['n_train'] + report['n_test']} images | reverse correlation, "
             f"the {report['n_test']} held-out images |", "|---|---:|---:|---:|"]
    lines += [f"| {label} | {igc[key]:{fmt}} | {reverse[key]:{fmt}} | {held_out[key]:{fmt}} |"
              for label, key, fmt in rows]
    lines += ["", "![centres](prf_centres.png)", "", "![reverse correlation](prf_centres_reverse_correlation.png)",
              "", "![fits](prf_fits.png)", "", "![recovery](prf_recovery.png)", ""]
    return "\n".join(lines)
