"""The synthetic 1/f benchmark (experiments A–D): images, masks, statistics, labels and ground truth.

Images are random fields with a natural-image-like power spectrum; a scalar (A, B, C) or 4-class (D) statistic
is computed from fixed image regions; a dataset-wise attribution method should recover those regions and
their relative importance from (image, statistic) pairs. The experiments are described in
``docs/benchmark.md``; the trainable models and their training live in
:mod:`igcorr_examples.synthetic_models`.

Overview
--------
- :func:`generate_images` — the 1/f images; sample ``i`` is a pure function of ``(seed, i)``.
- :func:`covariance_product` — ``C·w`` for the images' circulant pixel covariance ``C`` (linear oracle).
- :func:`experiment_masks`, :func:`region_masks` — the masks of A–D and named regions for reporting.
- :func:`function_model` — the statistics as parameter-free differentiable ``nn.Module`` ("function as model").
- :class:`SyntheticDataset` — a map-style dataset of ``(image, target)`` with the spec's label noise.
- :func:`ground_truth_map` — what the figures show as ground truth.

Coordinates: pixel (row r, col c) of a ``size × size`` image sits at ``x = (c − (size − 1)/2)/size`` and
``y = −(r − (size − 1)/2)/size``, so the image spans [−0.5, 0.5]² with y pointing up (for 64 pixels:
``x = (c − 31.5)/64``). All geometry is defined in these units, so the masks scale with ``size``; the spec's
pixel counts refer to ``size = 64``.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
from collections.abc import Sequence
from typing import Union

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from igcorr._validation import check_int, check_seed
from igcorr.errors import ConstantTargetError, InputError, ShapeError
from igcorr.seeding import generator_for, keyed_integers, keyed_uint64

__all__ = [
    "EXPERIMENTS",
    "IMAGE_SIZE",
    "SPECTRAL_EXPONENT",
    "ArgmaxSimilarityModel",
    "MaxOfMeansModel",
    "MaxPairSimilarityModel",
    "SyntheticDataset",
    "WeightedSumModel",
    "covariance_product",
    "disk_mask",
    "disk_radius",
    "experiment_masks",
    "function_model",
    "gaussian_component",
    "generate_images",
    "ground_truth_map",
    "images_from_noise",
    "mask_channel_names",
    "num_outputs",
    "pixel_coordinates",
    "region_masks",
    "spectral_gain",
    "square_mask",
]

logger = logging.getLogger(__name__)

IMAGE_SIZE = 64
"""Side of the benchmark images in pixels."""

SPECTRAL_EXPONENT = 1.2
"""Amplitude gain ``G = f^−1.2`` (power spectrum ∝ f^−2.4)."""

EXPERIMENTS = ("A", "B", "C", "D")
"""The four experiments of the benchmark."""

Indices = Union[int, Sequence[int], range, np.ndarray, torch.Tensor]

# Geometry of the experiments, in image units (see the module docstring). Channel order is the spec's.
_A_COMPONENTS = ((0.0, 0.0, 0.10, -0.5), (0.0, 0.0, 0.18, 1.0))  # (mu_x, mu_y, sigma, alpha)
_B_SIGMA = 0.125
_B_CENTRES = {"top": (0.0, 0.13), "bottom_left": (-0.15625, -0.140625), "bottom_right": (0.15625, -0.140625)}
_C_SIGMA = 0.078125
_C_CENTRES = {
    "top_left": (-0.25, 0.21875),
    "top_right": (0.25, 0.21875),
    "bottom_left": (-0.25, -0.21875),
    "bottom_right": (0.25, -0.21875),
}
_D_SIGMA = 0.07
_D_SQUARE_SIDE = 0.125
_D_CENTRES = {
    "centre": (0.0, 0.0),
    "top_left": (-0.28125, 0.28125),
    "top_right": (0.28125, 0.28125),
    "bottom_left": (-0.28125, -0.28125),
    "bottom_right": (0.28125, -0.28125),
}
_D_TEMPERATURE = 100.0
_C_DROP_PROBABILITIES = (0.0, 0.5)

# Keys that separate the label-noise streams from the image stream (which is keyed by (seed, i) alone).
_C_DROP_STREAM = 0xC0DE_0003
_D_PERMUTATION_STREAM = 0xC0DE_0004
_PERMUTATIONS_OF_4 = torch.tensor(list(itertools.permutations(range(4))), dtype=torch.long)  # (24, 4)

# Images kept in memory by SyntheticDataset when ``cache_images`` is None and they take at most this much.
_AUTO_CACHE_BYTES = 256 * 2**20


# ----------------------------------------------------------------------------------------------------------
# argument checks
# ----------------------------------------------------------------------------------------------------------
def _check_experiment(experiment: str) -> str:
    if not isinstance(experiment, str) or experiment.upper() not in EXPERIMENTS:
        raise InputError(f"unknown experiment {experiment!r}; choose one of {', '.join(EXPERIMENTS)}")
    return experiment.upper()


def _check_int(name: str, value: object, minimum: int) -> int:
    return check_int(value, name, minimum=minimum)


def _check_size(size: int) -> int:
    return _check_int("size", size, 2)


def _check_seed(seed: int) -> int:
    return check_seed(seed)


def _as_indices(indices: Indices) -> np.ndarray:
    """Sample indices as a 1-D int64 array (an int gives one index)."""
    if isinstance(indices, bool):
        raise InputError("indices must be integers, got a bool")
    if isinstance(indices, torch.Tensor):
        indices = indices.detach().cpu().numpy()
    try:
        array = np.asarray(indices)
    except (TypeError, ValueError) as error:
        raise InputError(f"indices must be an int or a sequence of ints, got {indices!r}") from error
    if array.ndim > 1:
        raise InputError(f"indices must be one-dimensional, got shape {array.shape}")
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if array.dtype.kind not in "iu":
        raise InputError(f"indices must be integers, got values of dtype {array.dtype}")
    array = array.astype(np.int64).reshape(-1)
    if array.min() < 0:
        raise InputError(f"indices must be non-negative sample numbers, got {int(array.min())}")
    return array


# ----------------------------------------------------------------------------------------------------------
# images
# ----------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def _gain(size: int, exponent: float) -> torch.Tensor:
    frequency_y = torch.fft.fftfreq(size, dtype=torch.float64)
    frequency_x = torch.fft.fftfreq(size, dtype=torch.float64)
    frequency = torch.sqrt(frequency_y[:, None] ** 2 + frequency_x[None, :] ** 2)
    frequency[0, 0] = 0.5 * frequency[0, 1]
    gain = frequency ** (-exponent)
    return gain / torch.sqrt(torch.mean(gain**2))


def spectral_gain(size: int = IMAGE_SIZE, exponent: float = SPECTRAL_EXPONENT) -> torch.Tensor:
    """The amplitude gain ``G`` applied to white noise on the FFT grid.

    ``f = |(f_x, f_y)|`` in cycles/pixel on the ``torch.fft.fftfreq`` grid, the DC value replaced by
    ``0.5·f[0, 1]`` (half the first non-zero frequency), ``G = f^−exponent`` rescaled so that ``mean(G²) = 1``.

    Parameters
    ----------
    size : int
        Image side in pixels.
    exponent : float
        Amplitude exponent (the spec's 1.2).

    Returns
    -------
    torch.Tensor
        float64, shape (size, size), in FFT order (DC at [0, 0]).
    """
    size = _check_size(size)
    if not math.isfinite(exponent):
        raise InputError(f"exponent must be finite, got {exponent}")
    return _gain(size, float(exponent)).clone()


def images_from_noise(noise: torch.Tensor, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Turn white noise into 1/f images: ``X = real(ifft2(G·Z, norm="ortho"))`` with ``Z = noise[:,0] + i·noise[:,1]``.

    This is the deterministic half of :func:`generate_images`; it is linear in ``noise`` and exposed for
    oracles and antithetic or otherwise structured draws. With i.i.d. N(0, 1) noise every pixel of the result
    is N(0, 1) and the pixel covariance is the circulant of :func:`covariance_product`.

    Parameters
    ----------
    noise : torch.Tensor
        Shape (n, 2, size, size): real and imaginary parts of the complex field, one value per frequency bin.
    dtype : torch.dtype
        Floating dtype of the result. The FFT runs in complex128 for float64 output and in complex64
        otherwise, so float32 and float64 images of the same noise agree to float32 rounding.

    Returns
    -------
    torch.Tensor
        Shape (n, 1, size, size), ``dtype``.
    """
    if not isinstance(noise, torch.Tensor) or noise.ndim != 4 or noise.shape[1] != 2:
        shape = tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__
        raise ShapeError(f"noise must be a tensor of shape (n, 2, size, size), got {shape}")
    if noise.shape[2] != noise.shape[3]:
        raise ShapeError(f"noise must be square in its last two dimensions, got {tuple(noise.shape)}")
    if not dtype.is_floating_point:
        raise InputError(f"dtype must be a floating dtype, got {dtype}")
    size = _check_size(noise.shape[-1])
    # float64 (and wider) outputs are computed in complex128, narrower ones in complex64: the two differ by
    # float32 rounding only.
    compute = torch.float64 if torch.finfo(dtype).bits >= 64 else torch.float32
    if noise.shape[0] == 0:  # MKL refuses empty transforms
        return noise.new_zeros((0, 1, size, size), dtype=dtype)
    gain = _gain(size, SPECTRAL_EXPONENT).to(device=noise.device, dtype=compute)
    field = torch.complex(noise[:, 0].to(compute), noise[:, 1].to(compute))
    field.mul_(gain)
    images = torch.fft.ifft2(field, norm="ortho").real
    return images.unsqueeze(1).to(dtype)


def generate_images(
    seed: int, indices: Indices, *, size: int = IMAGE_SIZE, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Generate the 1/f images number ``indices`` of the split ``seed``.

    Image ``i`` uses its own generator ``igcorr.seeding.generator_for(seed, i)`` to draw the complex white
    noise (float32 normal draws, real then imaginary part), then :func:`images_from_noise`. It is therefore a
    pure function of ``(seed, i)``: any subset, shard or order of indices gives the same images. The image
    stream does not depend on the experiment, so A–D with one seed share their images.

    Parameters
    ----------
    seed : int
        Seed of the split.
    indices : int, sequence of int, range, numpy array or 1-D integer tensor
        Non-negative sample numbers (repeats allowed).
    size : int
        Image side in pixels (64 in the spec; other sizes are for tests and experiments).
    dtype : torch.dtype
        Floating dtype of the images.

    Returns
    -------
    torch.Tensor
        Shape (len(indices), 1, size, size), ``dtype``, on the CPU.
    """
    seed = _check_seed(seed)
    size = _check_size(size)
    index_array = _as_indices(indices)
    noise = torch.empty((index_array.size, 2, size, size), dtype=torch.float32)
    for row, index in enumerate(index_array.tolist()):
        noise[row] = torch.randn((2, size, size), generator=generator_for(seed, index), dtype=torch.float32)
    return images_from_noise(noise, dtype=dtype)


def covariance_product(w: torch.Tensor) -> torch.Tensor:
    """Multiply by the pixel covariance of the images: ``C·w = real(ifft2(G²·fft2(w)))``.

    ``C`` is circulant (the images are stationary on the torus) with unit diagonal; ``C·w`` is the linear
    oracle of experiment A: for ``y = Σ X ⊙ w`` one has ``Cov(X, y) = C·w``.

    Parameters
    ----------
    w : torch.Tensor
        Shape (..., size, size), any leading dimensions; real floating dtype.

    Returns
    -------
    torch.Tensor
        Same shape, dtype and device as ``w`` (computed in float64).
    """
    if not isinstance(w, torch.Tensor) or w.ndim < 2 or w.shape[-1] != w.shape[-2]:
        shape = tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__
        raise ShapeError(f"w must be a tensor of shape (..., size, size), got {shape}")
    if not w.dtype.is_floating_point:
        raise InputError(f"w must be a real floating tensor, got dtype {w.dtype}")
    size = _check_size(w.shape[-1])
    power = (_gain(size, SPECTRAL_EXPONENT) ** 2).to(w.device)
    product = torch.fft.ifft2(power * torch.fft.fft2(w.to(torch.float64))).real
    return product.to(w.dtype)


# ----------------------------------------------------------------------------------------------------------
# coordinates and masks
# ----------------------------------------------------------------------------------------------------------
def pixel_coordinates(size: int = IMAGE_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Image coordinates of the pixel centres: ``x = (c − (size−1)/2)/size``, ``y = −(r − (size−1)/2)/size``.

    Parameters
    ----------
    size : int
        Image side in pixels.

    Returns
    -------
    (x, y) : tuple of torch.Tensor
        Each float64 of shape (size, size), indexed [row, column]; x grows to the right, y upwards.
    """
    size = _check_size(size)
    steps = (torch.arange(size, dtype=torch.float64) - (size - 1) / 2) / size
    x = steps[None, :].expand(size, size).clone()
    y = (-steps)[:, None].expand(size, size).clone()
    return x, y


def gaussian_component(
    mu_x: float, mu_y: float, sigma: float, alpha: float, size: int = IMAGE_SIZE
) -> torch.Tensor:
    """An isotropic 2-D normal density times ``alpha / size²`` (its pixel sum is ≈ ``alpha``).

    Parameters
    ----------
    mu_x, mu_y : float
        Centre in image units.
    sigma : float
        Standard deviation in image units (> 0).
    alpha : float
        Total weight.
    size : int
        Image side in pixels.

    Returns
    -------
    torch.Tensor
        float64, shape (size, size).
    """
    if not sigma > 0:
        raise InputError(f"sigma must be positive, got {sigma}")
    x, y = pixel_coordinates(size)
    squared = (x - mu_x) ** 2 + (y - mu_y) ** 2
    density = torch.exp(-squared / (2 * sigma**2)) / (2 * math.pi * sigma**2)
    return density * (alpha / size**2)


def disk_radius(sigma: float) -> float:
    """Radius (image units) of the disk where the unscaled 2-D normal density exceeds 1: σ·sqrt(−2 ln(2πσ²)).

    Parameters
    ----------
    sigma : float
        Standard deviation in image units, 0 < sigma < 1/sqrt(2π) ≈ 0.399.

    Returns
    -------
    float
        The radius in image units (multiply by the image size for pixels).
    """
    if not 0 < sigma < 1 / math.sqrt(2 * math.pi):
        raise InputError(
            f"sigma must lie in (0, {1 / math.sqrt(2 * math.pi):.4f}) for the density to exceed 1 anywhere, "
            f"got {sigma}"
        )
    return sigma * math.sqrt(-2 * math.log(2 * math.pi * sigma**2))


def disk_mask(mu_x: float, mu_y: float, sigma: float, size: int = IMAGE_SIZE) -> torch.Tensor:
    """Pixels whose centre lies where the 2-D normal density N((mu_x, mu_y), σ²I) exceeds 1.

    Parameters
    ----------
    mu_x, mu_y : float
        Centre in image units.
    sigma : float
        Standard deviation in image units (see :func:`disk_radius`).
    size : int
        Image side in pixels.

    Returns
    -------
    torch.Tensor
        bool, shape (size, size).
    """
    radius = disk_radius(sigma)
    x, y = pixel_coordinates(size)
    return (x - mu_x) ** 2 + (y - mu_y) ** 2 < radius**2


def square_mask(cx: float, cy: float, side: float, size: int = IMAGE_SIZE) -> torch.Tensor:
    """Pixels with ``|x − cx| ≤ side/2`` and ``|y − cy| ≤ side/2``.

    Parameters
    ----------
    cx, cy : float
        Centre in image units.
    side : float
        Side length in image units (> 0).
    size : int
        Image side in pixels.

    Returns
    -------
    torch.Tensor
        bool, shape (size, size).
    """
    if not side > 0:
        raise InputError(f"side must be positive, got {side}")
    x, y = pixel_coordinates(size)
    return ((x - cx).abs() <= side / 2) & ((y - cy).abs() <= side / 2)


def num_outputs(experiment: str) -> int:
    """Number of model outputs of an experiment.

    Parameters
    ----------
    experiment : {"A", "B", "C", "D"}

    Returns
    -------
    int
        1 for A, B, C (a scalar statistic) and 4 (one per corner) for D.
    """
    return 4 if _check_experiment(experiment) == "D" else 1


def mask_channel_names(experiment: str) -> tuple[str, ...]:
    """Names of the channels of :func:`experiment_masks`, in order.

    Parameters
    ----------
    experiment : {"A", "B", "C", "D"}

    Returns
    -------
    tuple of str
        A: ``("weights",)``; B: top, bottom_left, bottom_right; C: top_left, top_right, bottom_left,
        bottom_right; D: ``ring_<place>`` then ``square_<place>`` for centre, top_left, top_right,
        bottom_left, bottom_right.
    """
    experiment = _check_experiment(experiment)
    if experiment == "A":
        return ("weights",)
    if experiment == "B":
        return tuple(_B_CENTRES)
    if experiment == "C":
        return tuple(_C_CENTRES)
    return tuple(f"ring_{place}" for place in _D_CENTRES) + tuple(f"square_{place}" for place in _D_CENTRES)


def experiment_masks(experiment: str, size: int = IMAGE_SIZE) -> torch.Tensor:
    """The masks of an experiment, channels in the spec's order (see :func:`mask_channel_names`).

    Parameters
    ----------
    experiment : {"A", "B", "C", "D"}
    size : int
        Image side in pixels.

    Returns
    -------
    torch.Tensor
        - A: float32 (1, size, size), the weights ``W_A`` (difference of Gaussians: component σ = 0.10,
          α = −0.5 plus σ = 0.18, α = +1).
        - B: bool (3, size, size), disks σ = 0.125: top, bottom-left, bottom-right (they overlap).
        - C: bool (4, size, size), disks σ = 0.078125: top-left, top-right, bottom-left, bottom-right.
        - D: bool (10, size, size): channels 0–4 the rings (disk σ = 0.07 minus its square) and channels 5–9
          the squares (side 0.125), each in the order centre, top-left, top-right, bottom-left, bottom-right.
          A disk is ``ring | square``.
    """
    experiment = _check_experiment(experiment)
    size = _check_size(size)
    if experiment == "A":
        weights = sum(gaussian_component(*component, size=size) for component in _A_COMPONENTS)
        return weights.to(torch.float32).unsqueeze(0)
    if experiment == "B":
        return torch.stack([disk_mask(*centre, _B_SIGMA, size) for centre in _B_CENTRES.values()])
    if experiment == "C":
        return torch.stack([disk_mask(*centre, _C_SIGMA, size) for centre in _C_CENTRES.values()])
    disks = torch.stack([disk_mask(*centre, _D_SIGMA, size) for centre in _D_CENTRES.values()])
    squares = torch.stack([square_mask(*centre, _D_SQUARE_SIDE, size) for centre in _D_CENTRES.values()])
    return torch.cat([disks & ~squares, squares])


def region_masks(experiment: str, size: int = IMAGE_SIZE) -> dict[str, torch.Tensor]:
    """Named boolean regions for reporting region-wise attribution.

    Parameters
    ----------
    experiment : {"A", "B", "C", "D"}
    size : int
        Image side in pixels.

    Returns
    -------
    dict of str to torch.Tensor
        Each value bool of shape (size, size).

        - A: ``negative_centre`` (W_A < 0), ``positive_surround`` (W_A > 0).
        - B: ``top_only``, ``bottom_left_only``, ``bottom_right_only`` (pixels in exactly that one disk),
          ``triple_overlap`` (in all three disks), ``outside`` (in no disk).
        - C: ``top_left``, ``top_right``, ``bottom_left``, ``bottom_right``, ``left_pair`` (TL ∪ BL, the
          reliable pair), ``right_pair`` (TR ∪ BR, dropped in half the labels), ``outside``.
        - D: ``centre_ring``, ``centre_square``, ``corner_rings`` and ``corner_squares`` (unions over the
          four corners), ``outside`` (no disk).
    """
    experiment = _check_experiment(experiment)
    masks = experiment_masks(experiment, size)
    if experiment == "A":
        return {"negative_centre": masks[0] < 0, "positive_surround": masks[0] > 0}
    if experiment == "B":
        top, left, right = masks
        return {
            "top_only": top & ~left & ~right,
            "bottom_left_only": left & ~top & ~right,
            "bottom_right_only": right & ~top & ~left,
            "triple_overlap": top & left & right,
            "outside": ~masks.any(0),
        }
    if experiment == "C":
        regions = dict(zip(_C_CENTRES, masks))
        regions["left_pair"] = masks[0] | masks[2]
        regions["right_pair"] = masks[1] | masks[3]
        regions["outside"] = ~masks.any(0)
        return regions
    rings, squares = masks[:5], masks[5:]
    return {
        "centre_ring": rings[0],
        "centre_square": squares[0],
        "corner_rings": rings[1:].any(0),
        "corner_squares": squares[1:].any(0),
        "outside": ~masks.any(0),
    }


def ground_truth_map(experiment: str, size: int = IMAGE_SIZE) -> torch.Tensor:
    """The map the figures show as "ground truth".

    - A: ``W_A ⊙ (C·W_A)``, the shape a correct IGC has for the linear statistic (the IGC of ``y = Σ X ⊙ W_A``
      is proportional to it; its sum is ``W_Aᵀ C W_A = Var(y)``): negative centre, positive ring — not the
      mask, and the same whatever the sign of the mask.
    - B, C, D: the union of the experiment's masks as 0/1 (B: three disks; C: four disks; D: five disks,
      i.e. rings and squares). It marks where signal can be, not its relative weight.

    Parameters
    ----------
    experiment : {"A", "B", "C", "D"}
    size : int
        Image side in pixels.

    Returns
    -------
    torch.Tensor
        float32, shape (1, size, size) (the shape of one input image).
    """
    experiment = _check_experiment(experiment)
    masks = experiment_masks(experiment, size)
    if experiment == "A":
        weights = masks.to(torch.float64)
        return (weights * covariance_product(weights)).to(torch.float32)
    return masks.any(0, keepdim=True).to(torch.float32)


def _mask_indices(masks: torch.Tensor) -> torch.Tensor:
    """Row-major flat pixel indices of equally sized boolean masks (m, size, size) -> (m, k) int64.

    Masks that are translates of each other list their pixels in matching order, so their pixel vectors
    pair up for the cosine similarities of C and D.
    """
    counts = masks.flatten(1).sum(1)
    if counts.min() == 0 or (counts != counts[0]).any():
        raise InputError(
            f"the paired masks must be non-empty translates of each other, got pixel counts {counts.tolist()}; "
            "use the default size (64) or a size where the masks are resolved"
        )
    return torch.stack([torch.nonzero(mask.flatten(), as_tuple=False).squeeze(1) for mask in masks])


# ----------------------------------------------------------------------------------------------------------
# statistics as parameter-free models
# ----------------------------------------------------------------------------------------------------------
def _cosine(u: torch.Tensor, v: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Uncentred cosine similarity along the last dimension (broadcasting), safe at zero norm."""
    norms = torch.sqrt(((u * u).sum(-1) * (v * v).sum(-1)).clamp_min(eps * eps))
    return (u * v).sum(-1) / norms


class _FunctionModel(nn.Module):
    """Shared parts of the statistic modules: input checks and optional standardisation of the output."""

    def __init__(self, size: int, target_mean: float | None, target_std: float | None) -> None:
        super().__init__()
        self.size = _check_size(size)
        if (target_mean is None) != (target_std is None):
            raise InputError("give both target_mean and target_std (to standardise the output) or neither")
        if target_std is not None and not (math.isfinite(target_std) and target_std > 0):
            raise InputError(f"target_std must be a positive finite number, got {target_std}")
        if target_mean is not None and not math.isfinite(target_mean):
            raise InputError(f"target_mean must be finite, got {target_mean}")
        self.target_mean = None if target_mean is None else float(target_mean)
        self.target_std = None if target_std is None else float(target_std)

    def _pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Check x (n, 1, size, size) and return it flattened to (n, size²)."""
        expected = (1, self.size, self.size)
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or tuple(x.shape[1:]) != expected:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ShapeError(
                f"{type(self).__name__} expects images of shape (n, 1, {self.size}, {self.size}), got {shape}"
            )
        return x.flatten(1)

    def _standardize(self, statistic: torch.Tensor) -> torch.Tensor:
        if self.target_mean is None:
            return statistic
        return (statistic - self.target_mean) / self.target_std

    def extra_repr(self) -> str:
        text = f"size={self.size}"
        if self.target_mean is not None:
            text += f", target_mean={self.target_mean:.6g}, target_std={self.target_std:.6g}"
        return text


class WeightedSumModel(_FunctionModel):
    """Experiment A as a model: ``y = Σ X ⊙ W_A``.

    Parameters
    ----------
    size : int
        Image side in pixels.
    target_mean, target_std : float, optional
        When given, the output is ``(y − target_mean) / target_std`` (the units of standardised targets, e.g.
        ``SyntheticDataset.target_mean``/``target_std``); by default the raw statistic.

    Shapes
    ------
    input (n, 1, size, size) -> output (n, 1).
    """

    def __init__(self, size: int = IMAGE_SIZE, target_mean: float | None = None, target_std: float | None = None):
        super().__init__(size, target_mean, target_std)
        self.register_buffer("weights", experiment_masks("A", self.size).flatten(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 1, size, size) -> (n, 1)."""
        pixels = self._pixels(x)
        return self._standardize((pixels @ self.weights.to(pixels.dtype)).unsqueeze(1))


class MaxOfMeansModel(_FunctionModel):
    """Experiment B as a model: ``y = max over the three disks of the mean pixel value in the disk``.

    Parameters
    ----------
    size : int
        Image side in pixels.
    target_mean, target_std : float, optional
        Standardise the output as in :class:`WeightedSumModel`; by default the raw statistic.

    Shapes
    ------
    input (n, 1, size, size) -> output (n, 1); :meth:`means` gives (n, 3).
    """

    def __init__(self, size: int = IMAGE_SIZE, target_mean: float | None = None, target_std: float | None = None):
        super().__init__(size, target_mean, target_std)
        masks = experiment_masks("B", self.size).flatten(1).to(torch.float32)
        if (masks.sum(1) == 0).any():
            raise InputError(f"size {self.size} is too small: a disk of experiment B has no pixel")
        self.register_buffer("averaging", masks / masks.sum(1, keepdim=True), persistent=False)

    def means(self, x: torch.Tensor) -> torch.Tensor:
        """Mean pixel value in each disk (top, bottom-left, bottom-right): (n, 1, size, size) -> (n, 3)."""
        pixels = self._pixels(x)
        return pixels @ self.averaging.to(pixels.dtype).T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 1, size, size) -> (n, 1)."""
        return self._standardize(self.means(x).amax(dim=1, keepdim=True))


class MaxPairSimilarityModel(_FunctionModel):
    """Experiment C as a model: ``y = max(cos(P_TL, P_BL), cos(P_TR, P_BR))``, no label dropping.

    The disks are translates of each other, so their pixels pair up in row-major order; the cosine is
    uncentred.

    Parameters
    ----------
    size : int
        Image side in pixels.
    target_mean, target_std : float, optional
        Standardise the output as in :class:`WeightedSumModel`; by default the raw statistic.

    Shapes
    ------
    input (n, 1, size, size) -> output (n, 1); :meth:`similarities` gives (n, 2).
    """

    def __init__(self, size: int = IMAGE_SIZE, target_mean: float | None = None, target_std: float | None = None):
        super().__init__(size, target_mean, target_std)
        self.register_buffer("indices", _mask_indices(experiment_masks("C", self.size)), persistent=False)

    def similarities(self, x: torch.Tensor) -> torch.Tensor:
        """``(s1, s2) = (cos(P_TL, P_BL), cos(P_TR, P_BR))``: (n, 1, size, size) -> (n, 2)."""
        pixels = self._pixels(x)[:, self.indices]  # (n, 4, k): TL, TR, BL, BR
        return _cosine(pixels[:, :2], pixels[:, 2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 1, size, size) -> (n, 1)."""
        return self._standardize(self.similarities(x).amax(dim=1, keepdim=True))


class ArgmaxSimilarityModel(_FunctionModel):
    """Experiment D as a model: ``softmax(temperature · s)`` over the four corners.

    ``ref = concat(P_ring(centre), P_square(centre))`` and ``s_c = cos(ref, concat(P_ring(c), P_square(c)))``
    for the corners c = top-left, top-right, bottom-left, bottom-right (each corner with its own square; the
    labels of :class:`SyntheticDataset` use randomly permuted corner squares instead).

    Parameters
    ----------
    size : int
        Image side in pixels.
    temperature : float
        Inverse softmax temperature (the spec's 100).

    Shapes
    ------
    input (n, 1, size, size) -> output (n, 4), rows summing to 1; :meth:`similarities` gives (n, 4).
    """

    def __init__(self, size: int = IMAGE_SIZE, temperature: float = _D_TEMPERATURE) -> None:
        super().__init__(size, None, None)
        if not (math.isfinite(temperature) and temperature > 0):
            raise InputError(f"temperature must be a positive finite number, got {temperature}")
        self.temperature = float(temperature)
        masks = experiment_masks("D", self.size)
        self.register_buffer("ring_indices", _mask_indices(masks[:5]), persistent=False)
        self.register_buffer("square_indices", _mask_indices(masks[5:]), persistent=False)

    def similarities(self, x: torch.Tensor, permutation: torch.Tensor | None = None) -> torch.Tensor:
        """Cosine similarity of each corner to the centre: (n, 1, size, size) -> (n, 4).

        Parameters
        ----------
        x : torch.Tensor
            Images, shape (n, 1, size, size).
        permutation : torch.Tensor, optional
            int64 of shape (n, 4) (or (4,), shared): corner ``c`` is compared using the square of corner
            ``permutation[:, c]`` (0 = top-left, ..., 3 = bottom-right). Default: each corner's own square.
        """
        pixels = self._pixels(x)
        rings = pixels[:, self.ring_indices]  # (n, 5, k_ring)
        squares = pixels[:, self.square_indices]  # (n, 5, k_square)
        corner_squares = squares[:, 1:]
        if permutation is not None:
            permutation = torch.as_tensor(permutation, dtype=torch.long, device=pixels.device)
            permutation = permutation.expand(pixels.shape[0], 4) if permutation.ndim == 1 else permutation
            out_of_range = permutation.numel() > 0 and (permutation.min() < 0 or permutation.max() > 3)
            if permutation.shape != (pixels.shape[0], 4) or out_of_range:
                raise ShapeError(
                    f"permutation must hold corner numbers 0..3 with shape (4,) or ({pixels.shape[0]}, 4), "
                    f"got shape {tuple(permutation.shape)}"
                )
            gather_index = permutation[:, :, None].expand(-1, -1, corner_squares.shape[2])
            corner_squares = torch.gather(corner_squares, 1, gather_index)
        reference = torch.cat([rings[:, 0], squares[:, 0]], dim=1)[:, None, :]
        corners = torch.cat([rings[:, 1:], corner_squares], dim=2)
        return _cosine(reference, corners)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 1, size, size) -> (n, 4)."""
        return torch.softmax(self.temperature * self.similarities(x), dim=1)

    def extra_repr(self) -> str:
        return f"size={self.size}, temperature={self.temperature:g}"


def function_model(
    experiment: str,
    *,
    size: int = IMAGE_SIZE,
    target_mean: float | None = None,
    target_std: float | None = None,
) -> nn.Module:
    """The statistic of an experiment as a parameter-free, differentiable model (in eval mode).

    Parameters
    ----------
    experiment : {"A", "B", "C", "D"}
        A: :class:`WeightedSumModel`; B: :class:`MaxOfMeansModel`; C: :class:`MaxPairSimilarityModel`;
        D: :class:`ArgmaxSimilarityModel`.
    size : int
        Image side in pixels.
    target_mean, target_std : float, optional
        A, B, C only: output ``(statistic − target_mean) / target_std`` so model outputs and standardised
        targets share units (take them from :attr:`SyntheticDataset.target_mean` / ``target_std``, or use
        :meth:`SyntheticDataset.function_model`). Default: the raw statistic. Correlation-based attributions
        such as IGC do not change under this affine map; the gradients scale by ``1/target_std``.

    Returns
    -------
    torch.nn.Module
        Maps (n, 1, size, size) to (n, 1) for A, B, C and (n, 4) for D.
    """
    experiment = _check_experiment(experiment)
    if experiment == "D":
        if target_mean is not None or target_std is not None:
            raise InputError("experiment D is a classification: it takes no target_mean / target_std")
        model: nn.Module = ArgmaxSimilarityModel(size)
    else:
        classes = {"A": WeightedSumModel, "B": MaxOfMeansModel, "C": MaxPairSimilarityModel}
        model = classes[experiment](size, target_mean, target_std)
    return model.eval()


# ----------------------------------------------------------------------------------------------------------
# labels and the dataset
# ----------------------------------------------------------------------------------------------------------
def _uniform(seed: int, *keys: np.ndarray | int) -> np.ndarray:
    """Uniform [0, 1) floats keyed by (seed, keys), from the top 53 bits of the keyed hash."""
    return (keyed_uint64(seed, *keys) >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _check_probabilities(probabilities: Sequence[float]) -> tuple[float, float]:
    try:
        p1, p2 = (float(p) for p in probabilities)
    except (TypeError, ValueError) as error:
        raise InputError(f"drop_probabilities must be two numbers (p1, p2), got {probabilities!r}") from error
    if not (0.0 <= p1 <= 1.0 and 0.0 <= p2 <= 1.0):
        raise InputError(f"drop_probabilities must lie in [0, 1], got {(p1, p2)}")
    return p1, p2


def _check_standardize(standardize: bool | tuple[float, float]) -> tuple[float, float] | None:
    """Validate ``standardize``; return the given (mean, std) constants, or None for True / False."""
    if standardize is True or standardize is False:
        return None
    try:
        mean, std = (float(value) for value in standardize)  # type: ignore[union-attr]
    except (TypeError, ValueError) as error:
        raise InputError(f"standardize must be True, False or (mean, std), got {standardize!r}") from error
    if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
        raise InputError(f"standardize=(mean, std) needs finite values and std > 0, got {(mean, std)}")
    return mean, std


class SyntheticDataset(Dataset):
    """Map-style dataset of the benchmark: item ``i`` is ``(image_i, target_i)``, a pure function of (seed, i).

    The images are :func:`generate_images` ``(seed, i)``. The targets follow the spec:

    - A: ``Σ X ⊙ W_A``; B: max of the three disk means;
    - C: ``max(k1·s1, k2·s2)`` with ``s_j`` the pair similarities and ``k_j ∈ {0, 1}`` keep flags,
      ``k_j = 0`` with probability ``drop_probabilities[j]`` (default (0, 0.5)), drawn from a hash of
      ``(seed, i, j)`` (attribute :attr:`kept`);
    - D: one-hot of ``argmax_c s_c`` where corner ``c`` is compared with the square of corner
      ``permutation[i, c]``, a permutation drawn uniformly from all 24 (the identity included) per image
      from a hash of ``(seed, i)`` (attribute :attr:`permutations`).

    Note for C: a dropped similarity becomes 0 *before* the max, so a dropped sample's label is
    ``max(s1, 0)``, which exceeds the clean statistic when both similarities are negative.

    A, B, C targets are standardised by default with the mean and the (population, ddof = 0) standard
    deviation of the statistic over this split — for C the statistic *with* label dropping — computed once at
    construction in float64 from all ``n`` images in batches. The constants are :attr:`target_mean` and
    :attr:`target_std`; :meth:`function_model` gives the statistic as a model in the same units.

    Construction generates all ``n`` images once.
    Whether they are kept for ``__getitem__`` is ``cache_images``; without the cache each item is regenerated
    on access.

    Parameters
    ----------
    experiment : {"A", "B", "C", "D"}
    n : int
        Number of samples (indices 0 .. n − 1).
    seed : int
        Seed of the split; use different seeds for training and evaluation splits.
    size : int
        Image side in pixels (spec: 64).
    standardize : bool or (float, float)
        True: standardise with this split's statistics; a pair ``(mean, std)``: use those constants (e.g. the
        training split's); False: raw statistics. Ignored for D.
    drop_probabilities : (float, float)
        C only: probabilities of replacing s1 (left pair) and s2 (right pair) by 0 in the labels.
    cache_images : bool, optional
        Keep the images in memory (n·size²·itemsize bytes). Default: cache when that is at most 256 MiB.
    batch_size : int
        Images generated at a time during construction (memory vs. speed only; no effect on the values).
    dtype : torch.dtype
        Floating dtype of images and targets.
    progress : bool
        Show a tqdm progress bar while computing the targets.

    Attributes
    ----------
    targets : torch.Tensor
        (n, 1) for A, B, C (standardised or raw), (n, 4) one-hot for D; ``dtype``.
    raw_targets : torch.Tensor
        float64 (n, 1) unstandardised statistic (A, B, C; for C after dropping) or (n, 4) similarities s_c
        with the permuted squares (D).
    target_mean, target_std : float or None
        Standardisation constants (None when not standardised, and for D).
    kept : torch.Tensor or None
        C: bool (n, 2) keep flags (k1, k2); None otherwise.
    permutations : torch.Tensor or None
        D: int64 (n, 4) square used by each corner; None otherwise.

    Shapes
    ------
    ``dataset[i]`` -> (x (1, size, size), y (1,) for A/B/C or (4,) for D); :meth:`get_batch` stacks them.
    """

    def __init__(
        self,
        experiment: str,
        n: int,
        seed: int = 0,
        *,
        size: int = IMAGE_SIZE,
        standardize: bool | tuple[float, float] = True,
        drop_probabilities: Sequence[float] = _C_DROP_PROBABILITIES,
        cache_images: bool | None = None,
        batch_size: int = 1024,
        dtype: torch.dtype = torch.float32,
        progress: bool = False,
    ) -> None:
        self.experiment = _check_experiment(experiment)
        self.n = _check_int("n", n, 1)
        self.seed = _check_seed(seed)
        self.size = _check_size(size)
        batch_size = _check_int("batch_size", batch_size, 1)
        if not dtype.is_floating_point:
            raise InputError(f"dtype must be a floating dtype, got {dtype}")
        self.dtype = dtype
        self.drop_probabilities = _check_probabilities(drop_probabilities)
        given_constants = _check_standardize(standardize)
        if cache_images is None:
            cache_images = self.n * self.size**2 * torch.finfo(dtype).bits // 8 <= _AUTO_CACHE_BYTES
        self._images: torch.Tensor | None = None

        indices = np.arange(self.n, dtype=np.int64)
        self.kept: torch.Tensor | None = None
        self.permutations: torch.Tensor | None = None
        if self.experiment == "C":
            p1, p2 = self.drop_probabilities
            draws = _uniform(self.seed, indices[:, None], _C_DROP_STREAM, np.arange(2)[None, :])
            self.kept = torch.from_numpy(draws >= np.array([p1, p2]))
        elif self.experiment == "D":
            choice = keyed_integers(self.seed, len(_PERMUTATIONS_OF_4), indices, _D_PERMUTATION_STREAM)
            self.permutations = _PERMUTATIONS_OF_4[torch.from_numpy(choice)]

        statistic = _raw_statistic_model(self.experiment, self.size)
        raw = torch.empty((self.n, num_outputs(self.experiment)), dtype=torch.float64)
        images = [] if cache_images else None
        starts = range(0, self.n, batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=f"synthetic {self.experiment}: targets", unit="batch")
        for start in starts:
            stop = min(start + batch_size, self.n)
            batch = generate_images(self.seed, range(start, stop), size=self.size, dtype=dtype)
            raw[start:stop] = self._statistic(statistic, batch.to(torch.float64), slice(start, stop))
            if images is not None:
                images.append(batch)
        if images is not None:
            self._images = torch.cat(images)
        self.raw_targets = raw

        self.target_mean: float | None = None
        self.target_std: float | None = None
        if self.experiment == "D":
            self.targets = nn.functional.one_hot(raw.argmax(1), 4).to(dtype)
            return
        if standardize is True:
            mean, std = float(raw.mean()), float(raw.std(correction=0))
            if not std > 0:
                raise ConstantTargetError(
                    f"the statistic is constant over the {self.n} samples, so it cannot be standardised; "
                    "use more samples or standardize=False"
                )
            self.target_mean, self.target_std = mean, std
        elif given_constants is not None:
            self.target_mean, self.target_std = given_constants
        if self.target_mean is None:
            self.targets = raw.to(dtype)
        else:
            self.targets = ((raw - self.target_mean) / self.target_std).to(dtype)
        logger.debug(
            "synthetic %s: n=%d seed=%d target mean=%s std=%s",
            self.experiment, self.n, self.seed, self.target_mean, self.target_std,
        )

    def _statistic(self, model: nn.Module, images: torch.Tensor, rows: slice) -> torch.Tensor:
        """Raw targets of the images of ``rows`` (float64)."""
        with torch.no_grad():
            if self.experiment == "C":
                return (model.similarities(images) * self.kept[rows]).amax(1, keepdim=True)
            if self.experiment == "D":
                return model.similarities(images, self.permutations[rows])
            return model(images)

    @property
    def standardization(self) -> tuple[float, float] | None:
        """``(target_mean, target_std)``, or None when the targets are raw (and for D)."""
        if self.target_mean is None or self.target_std is None:
            return None
        return self.target_mean, self.target_std

    @property
    def caches_images(self) -> bool:
        """Whether the images are held in memory."""
        return self._images is not None

    def __len__(self) -> int:
        return self.n

    def _check_index(self, index: int) -> int:
        if isinstance(index, torch.Tensor) and index.ndim == 0 and not index.is_floating_point():
            index = int(index)
        index = check_int(index, "dataset index")
        if not -self.n <= index < self.n:
            raise IndexError(f"index {index} is out of range for a dataset of {self.n} samples")
        return int(index) % self.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample ``index``: (x of shape (1, size, size), y of shape (1,) or (4,))."""
        index = self._check_index(index)
        if self._images is not None:
            image = self._images[index]
        else:
            image = generate_images(self.seed, [index], size=self.size, dtype=self.dtype)[0]
        return image, self.targets[index]

    def get_batch(self, indices: Indices) -> tuple[torch.Tensor, torch.Tensor]:
        """Several samples at once.

        Parameters
        ----------
        indices : int, sequence of int, range, numpy array or 1-D integer tensor
            Sample numbers in ``[0, n)``.

        Returns
        -------
        (x, y) : tuple of torch.Tensor
            x of shape (b, 1, size, size), y of shape (b, 1) or (b, 4).
        """
        index_array = _as_indices(indices)
        if index_array.size and index_array.max() >= self.n:
            raise IndexError(f"index {int(index_array.max())} is out of range for a dataset of {self.n} samples")
        rows = torch.from_numpy(index_array)
        if self._images is not None:
            images = self._images[rows]
        else:
            images = generate_images(self.seed, index_array, size=self.size, dtype=self.dtype)
        return images, self.targets[rows]

    def function_model(self) -> nn.Module:
        """The statistic as a model whose outputs are in the units of :attr:`targets` (see :func:`function_model`).

        For C the model computes the statistic without dropping, standardised with this split's constants.
        """
        if self.experiment == "D":
            return function_model("D", size=self.size)
        return function_model(
            self.experiment, size=self.size, target_mean=self.target_mean, target_std=self.target_std
        )

    def __repr__(self) -> str:
        return (
            f"SyntheticDataset(experiment={self.experiment!r}, n={self.n}, seed={self.seed}, size={self.size}, "
            f"standardized={self.standardization is not None}, cached={self.caches_images})"
        )


def _raw_statistic_model(experiment: str, size: int) -> nn.Module:
    """The unstandardised statistic module used to build labels."""
    return function_model(experiment, size=size)
