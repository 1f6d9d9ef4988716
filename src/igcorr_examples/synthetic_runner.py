"""Run the synthetic benchmark end to end: every dataset-wise method on experiments A–D, figures and tables.

For each experiment (``docs/benchmark.md``) the evaluation split is generated, the statistic
is attributed with its own function as the model, and — on request — a network trained on a separate split
is attributed too. The methods compared are the spec's:

=============================  ==============================================================================
row                            what is computed
=============================  ==============================================================================
ground truth                   :func:`~igcorr_examples.synthetic.ground_truth_map` (A: ``w ⊙ Cw``)
IG mean, IG std                :class:`~igcorr.IGMoments` on the function model (one run gives both)
IGaC                           :class:`~igcorr.IGaC` on the function model
IGC (function)                 :class:`~igcorr.IGC` on the function model
IGC (trained <kind>)           :class:`~igcorr.IGC` on the trained network (``trained=True``)
naive correlation              :class:`~igcorr.NaiveCorrelation` (Pearson r of pixel and target)
naive t (p < 0.001)            :class:`~igcorr.NaiveTTest`, t map set to 0 where p ≥ ``p_threshold``
BSC (function, N/10)           :class:`~igcorr.BSC` on the first tenth of the samples
IGC (8 shared baselines)       B only: IGC with one shared draw of dataset baselines (the paper's comparison)
=============================  ==============================================================================

Every IG-based method uses ``baselines`` dataset baselines drawn afresh for every sample (the paper's setting)
and the trapezoid rule with ``n_steps`` nodes. Experiment D has four outputs (one per corner); its maps are
summed over the outputs for the figure and the region table (the centre ring matters for every output, each
corner for one); the table adds, per output, its own corner ring and the other corners' rings relative to its
centre ring (:data:`PER_OUTPUT_RATIOS`).

Outputs per experiment, in ``out_dir``: ``experiment_<X>.png`` (one panel per method, each on its own
symmetric diverging scale ±1.25 × the 99th percentile of |map|), ``experiment_<X>.json`` and
``experiment_<X>.md`` (region means relative to a reference region, correlation with the ground truth,
Σ map vs Pearson r, run time per method, and the qualitative findings checked automatically).

Entry points: :func:`run_experiment`, :func:`run_benchmark` and the ``igcorr benchmark`` command.

The defaults (n = 2,000, 8 per-sample baselines, 16 steps, BSC on 200 samples, one torch thread) are sized
for a CPU; ``docs/benchmark.md`` reports the run times measured with them. D, with four outputs, costs about
four times as much per image as A or B.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from igcorr.baselines import FromData
from igcorr_examples.synthetic import (EXPERIMENTS, SyntheticDataset, experiment_masks, ground_truth_map,
                                         region_masks)
from igcorr_examples.synthetic_models import MODEL_KINDS, train_model, trainable_model
from igcorr import BSC, IGC, IGaC, IGMoments, NaiveCorrelation, NaiveTTest
from igcorr.errors import ConstantTargetError, InputError
from igcorr.plotting import symmetric_limit
from igcorr.result import Result

__all__ = [
    "BenchmarkConfig",
    "ExperimentOutcome",
    "PER_OUTPUT_RATIOS",
    "REFERENCE_REGIONS",
    "TABLE_COLUMNS",
    "experiment_figure",
    "experiment_markdown",
    "parse_experiments",
    "run_benchmark",
    "run_experiment",
]

logger = logging.getLogger(__name__)

#: Reference region and compared regions of each experiment: the table reports
#: mean(map over region) / mean(map over reference) for each compared region.
REFERENCE_REGIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "A": ("positive_surround", ("negative_centre",)),
    "B": ("triple_overlap", ("top_only", "bottom_left_only", "bottom_right_only", "outside")),
    "C": ("left_pair", ("right_pair", "outside")),
    "D": ("centre_ring", ("corner_rings", "centre_square", "corner_squares", "outside")),
}

#: Experiment D also reports, per output (corner) k and then averaged over the four outputs, the mean per pixel
#: in corner k's own ring and in the other corners' rings relative to the centre ring of the same output's map.
PER_OUTPUT_RATIOS: tuple[str, ...] = ("own_corner_ring/centre_ring", "other_corner_rings/centre_ring")

#: Columns of the per-experiment markdown table and of every method row of the JSON report (the region
#: ratio columns ``<region>/<reference>`` follow ``correlation_with_truth``).
TABLE_COLUMNS: tuple[str, ...] = ("method", "seconds", "correlation_with_truth", "map_sum", "pearson_r",
                                  "baseline_term")

# Minimum number of samples: BSC runs on a tenth of them and needs its own dataset baselines.
_MIN_SAMPLES = 50

# Offsets of the training and validation splits' seeds from the evaluation seed (independent images).
_TRAIN_SEED_OFFSET = 1
_VALIDATION_SEED_OFFSET = 2


@dataclass
class BenchmarkConfig:
    """Settings of a benchmark run (CPU-sized defaults; the paper used n = 100,000 and 512 steps).

    Parameters
    ----------
    n : int
        Evaluation images per experiment (≥ 50).
    n_steps : int
        Trapezoid nodes per IG path (both ends included).
    baselines : int
        Dataset baselines per sample, drawn afresh for every sample (the paper's 8).
    bsc_fraction : float
        Share of the samples BSC runs on (the paper's tenth); BSC uses the first ``round(n·bsc_fraction)``.
    bsc_baselines : int
        Dataset baselines per sample for BSC (each costs 4,097 forward passes per sample).
    bsc_permutations : int
        Random orderings per (sample, baseline) for BSC.
    p_threshold : float
        The naive t map is shown where the two-sided p-value is below this.
    shared_baseline_check : bool
        Experiment B: also run IGC with one shared draw of ``baselines`` dataset baselines.
    baseline_draws : int
        Experiment B with ``shared_baseline_check``: repeat the per-sample and the shared IGC for this many
        baseline-draw seeds in total (``seed``, ``seed + 1``, ...; same images) and report the single-disk
        ratios of each draw, to show how much one shared draw moves the map (the first draw is the table's).
    trained : bool
        Also train a network on a separate split and attribute it with IGC.
    model_kind : {"mlp", "convnext"}
        The trained network: :class:`~igcorr_examples.synthetic_models.SyntheticMLP` (fast) or the paper's
        :class:`~igcorr_examples.synthetic_models.SmallConvNeXt` (slow on a CPU).
    n_train : int
        Training images (split ``seed + 1``); a validation split of ``max(200, n_train // 10)`` images uses
        ``seed + 2``.
    epochs : int
        Training epochs.
    lr : float
        AdamW learning rate.
    seed : int
        Seed of the evaluation split and of every random draw (baselines, orderings, training).
    threads : int, optional
        torch threads during the run (restored afterwards); None keeps the current setting. One thread is the
        default because on a shared 2-core machine two torch threads were measured about 4× slower than one.
    progress : bool
        Show progress bars.
    """

    n: int = 2000
    n_steps: int = 16
    baselines: int = 8
    bsc_fraction: float = 0.1
    bsc_baselines: int = 1
    bsc_permutations: int = 1
    p_threshold: float = 1e-3
    shared_baseline_check: bool = True
    baseline_draws: int = 1
    trained: bool = False
    model_kind: str = "mlp"
    n_train: int = 10000
    epochs: int = 10
    lr: float = 1e-3
    seed: int = 0
    threads: int | None = 1
    progress: bool = True

    def validate(self) -> "BenchmarkConfig":
        """Check every setting; returns self. Raises :class:`~igcorr.errors.InputError` with a clear message."""
        _positive_int("n", self.n, _MIN_SAMPLES)
        _positive_int("n_steps", self.n_steps, 2)
        _positive_int("baselines", self.baselines, 1)
        _positive_int("bsc_baselines", self.bsc_baselines, 1)
        _positive_int("bsc_permutations", self.bsc_permutations, 1)
        _positive_int("n_train", self.n_train, _MIN_SAMPLES)
        _positive_int("epochs", self.epochs, 1)
        _positive_int("baseline_draws", self.baseline_draws, 1)
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
            raise InputError(f"seed must be an integer, got {self.seed!r}")
        if self.threads is not None:
            _positive_int("threads", self.threads, 1)
        if not (isinstance(self.bsc_fraction, (int, float)) and 0 < self.bsc_fraction <= 1):
            raise InputError(f"bsc_fraction must lie in (0, 1], got {self.bsc_fraction!r}")
        if not (isinstance(self.p_threshold, (int, float)) and 0 < self.p_threshold < 1):
            raise InputError(f"p_threshold must lie in (0, 1), got {self.p_threshold!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise InputError(f"lr must be a positive number, got {self.lr!r}")
        if self.model_kind not in MODEL_KINDS:
            raise InputError(f"model_kind must be one of {', '.join(MODEL_KINDS)}, got {self.model_kind!r}")
        if self.baselines > self.n:
            raise InputError(f"{self.baselines} baselines per sample need at least as many samples, got n={self.n}")
        if self.bsc_baselines > self.bsc_samples:
            raise InputError(
                f"BSC runs on {self.bsc_samples} samples (n × bsc_fraction) but asks for {self.bsc_baselines} "
                "baselines per sample; raise n or bsc_fraction, or lower bsc_baselines"
            )
        return self

    @property
    def bsc_samples(self) -> int:
        """Number of samples BSC runs on (at least 2)."""
        return max(2, int(round(self.n * self.bsc_fraction)))


def _positive_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise InputError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def parse_experiments(text: str | Iterable[str]) -> list[str]:
    """Experiments named by ``"all"``, one letter or a comma-separated list (case-insensitive).

    Parameters
    ----------
    text : str or iterable of str
        E.g. ``"all"``, ``"B"``, ``"a,c"`` or ``["A", "D"]``.

    Returns
    -------
    list of str
        Upper-case experiment letters in A–D order, without repeats.
    """
    parts = [text] if isinstance(text, str) else list(text)
    names: set[str] = set()
    for part in parts:
        if not isinstance(part, str):
            raise InputError(f"experiments must be given as text, got {part!r}")
        for name in (piece.strip() for piece in part.split(",")):
            if name.lower() == "all":
                names.update(EXPERIMENTS)
            elif name.upper() in EXPERIMENTS:
                names.add(name.upper())
            else:
                raise InputError(f"unknown experiment {name!r}; choose {', '.join(EXPERIMENTS)} or all")
    if not names:
        raise InputError("no experiment given; choose A, B, C, D or all")
    return [name for name in EXPERIMENTS if name in names]


@dataclass
class ExperimentOutcome:
    """What :func:`run_experiment` returns.

    Attributes
    ----------
    report : dict
        JSON-serialisable report (configuration, one row per method, findings, written files, timings).
    maps : dict of str to ndarray
        The 2-D map (size × size) of every row, keyed by the row label, ground truth first; D is summed over
        its four outputs.
    results : dict of str to Result
        The full :class:`~igcorr.result.Result` of every method run, keyed by method key.
    """

    report: dict[str, Any]
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    results: dict[str, Result] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------
# metrics
# ----------------------------------------------------------------------------------------------------------
def _pixel_map(maps: np.ndarray) -> np.ndarray:
    """(K, 1, H, W) or (1, H, W) or (H, W) -> (H, W), summed over outputs and channels."""
    array = np.asarray(maps, dtype=np.float64)
    while array.ndim > 2:
        array = array.sum(axis=0)
    return array


def _correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    a, b = a.ravel(), b.ravel()
    if a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def _region_metrics(image: np.ndarray, regions: dict[str, np.ndarray], experiment: str) -> dict[str, Any]:
    means = {name: float(image[mask].mean()) for name, mask in regions.items()}
    reference, compared = REFERENCE_REGIONS[experiment]
    denominator = means[reference]
    relative = {f"{name}/{reference}": (means[name] / denominator if denominator != 0 else None) for name in compared}
    return {"region_means": means, "relative": relative}


def _corner_ratios(per_output: np.ndarray | None) -> dict[str, float | None]:
    """D: own-corner ring and other-corner rings relative to the centre ring, per output, averaged."""
    if per_output is None or len(per_output) != 4:
        return dict.fromkeys(PER_OUTPUT_RATIOS)
    rings = experiment_masks("D").numpy()[:5]  # centre, then the corners in output order
    own, other = [], []
    for k, image in enumerate(per_output):
        centre = image[rings[0]].mean()
        if centre == 0:
            return dict.fromkeys(PER_OUTPUT_RATIOS)
        others = np.zeros_like(rings[0])
        for corner in range(4):
            if corner != k:
                others |= rings[corner + 1]
        own.append(image[rings[k + 1]].mean() / centre)
        other.append(image[others].mean() / centre)
    return dict(zip(PER_OUTPUT_RATIOS, (float(np.mean(own)), float(np.mean(other)))))


def _per_output(maps: np.ndarray) -> np.ndarray:
    """(K, 1, H, W) -> (K, H, W) float64."""
    array = np.asarray(maps, dtype=np.float64)
    return array.reshape(len(array), *array.shape[-2:])


def _diagnostic_list(result: Result, name: str) -> list[float] | None:
    if name not in result.diagnostics:
        return None
    return [float(v) for v in np.atleast_1d(result.diagnostics[name])]


def _row(key: str, label: str, image: np.ndarray, truth: np.ndarray, regions: dict[str, np.ndarray],
         experiment: str, seconds: float | None, result: Result | None = None, *,
         sums: bool = False, note: str | None = None, per_output: np.ndarray | None = None) -> dict[str, Any]:
    """One method row of the report (``per_output``: the (K, H, W) maps before summing, for D)."""
    row: dict[str, Any] = {"key": key, "method": label, "seconds": seconds,
                           "correlation_with_truth": _correlation(image, truth)}
    row.update(_region_metrics(image, regions, experiment))
    if experiment == "D":
        row["relative"].update(_corner_ratios(per_output))
    row["map_sum"] = row["pearson_r"] = row["baseline_term"] = None
    if result is not None and sums:
        row["map_sum"] = [float(v) for v in result.map_sums]
        row["pearson_r"] = _diagnostic_list(result, "correlation")
        row["baseline_term"] = _diagnostic_list(result, "baseline_term")
    if result is not None and "completeness_mean" in result.diagnostics:
        row["ig_completeness_mean"] = float(np.mean(result.diagnostics["completeness_mean"]))
    if note:
        row["note"] = note
    return row


# ----------------------------------------------------------------------------------------------------------
# findings
# ----------------------------------------------------------------------------------------------------------
def _find(rows: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    return next((row for row in rows if row["key"] == key), None)


def _finding(claim: str, holds: bool | None, detail: str) -> dict[str, Any]:
    return {"claim": claim, "holds": None if holds is None else bool(holds), "detail": detail}


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, (list, tuple)):
        return "/".join(_fmt(v, digits) for v in value)
    if isinstance(value, float):
        if value == 0:
            return "0"  # also for -0.0
        return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:.3e}"
    return str(value)


def _findings(experiment: str, rows: list[dict[str, Any]],
              draws: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The spec's qualitative claims for one experiment, checked on the measured rows."""
    igc, ig_mean = _find(rows, "igc_function"), _find(rows, "ig_mean")
    trained = _find(rows, "igc_trained")
    found: list[dict[str, Any]] = []
    reference = REFERENCE_REGIONS[experiment][0]

    def ratio(row: dict[str, Any] | None, region: str) -> float | None:
        return None if row is None else row["relative"].get(f"{region}/{reference}")

    if experiment == "A":
        means = igc["region_means"]
        found.append(_finding(
            "IGC has a negative centre and a positive surround, like w ⊙ Cw",
            means["negative_centre"] < 0 < means["positive_surround"],
            f"IGC mean per pixel: centre {means['negative_centre']:.3g}, surround {means['positive_surround']:.3g}"))
        found.append(_finding(
            "IGC correlates with w ⊙ Cw better than IG mean",
            (igc["correlation_with_truth"] or 0) > (ig_mean["correlation_with_truth"] or 0),
            f"r(IGC, w⊙Cw) = {_fmt(igc['correlation_with_truth'])}, "
            f"r(IG mean, w⊙Cw) = {_fmt(ig_mean['correlation_with_truth'])}"))
    elif experiment == "B":
        singles = ("top_only", "bottom_left_only", "bottom_right_only")
        values = [ratio(igc, name) for name in singles]
        known = [v for v in values if v is not None]
        found.append(_finding(
            "IGC: the triple overlap is highest per pixel (every single-disk/triple ratio < 1)",
            bool(known) and len(known) == 3 and max(known) < 1,
            "ratios " + _fmt(values)))
        spread = (max(known) / min(known)) if len(known) == 3 and min(known) > 0 else None
        found.append(_finding(
            "IGC is roughly uniform across the three single-disk regions (largest/smallest ratio ≤ 1.5)",
            None if spread is None else spread <= 1.5,
            f"largest/smallest = {_fmt(spread)}; paper (per-sample draws): 0.28/0.30/0.27"))
        shared = _find(rows, "igc_shared")
        if shared is not None:
            shared_values = [ratio(shared, name) for name in singles]
            detail = (f"per-sample {_fmt(values)} vs shared {_fmt(shared_values)}; paper: 0.28/0.30/0.27 vs "
                      "0.19/0.34/0.31")
            holds = None
            if draws and len(draws) > 1:
                def unevenness(key: str) -> float:
                    return float(np.mean([max(d[key]) / min(d[key]) for d in draws]))

                holds = unevenness("shared") > unevenness("per_sample")
                detail += (f"; over {len(draws)} draw seeds the mean largest/smallest ratio is "
                           f"{unevenness('per_sample'):.3g} per-sample vs {unevenness('shared'):.3g} shared")
            found.append(_finding(
                "a small shared baseline set gives less uniform single-disk ratios than per-sample draws",
                holds, detail))
    elif experiment == "C":
        value = ratio(igc, "right_pair")
        found.append(_finding(
            "IGC (function) down-weights the unreliable right pair (right/left < 1)",
            None if value is None else value < 1, f"right/left = {_fmt(value)}"))
        for key, name in (("ig_std", "IG std"), ("igac", "IGaC")):
            other = ratio(_find(rows, key), "right_pair")
            found.append(_finding(
                f"{name}, which never looks at y, does not down-weight the right pair (right/left within 0.8–1.25)",
                None if other is None else 0.8 <= other <= 1.25, f"right/left = {_fmt(other)}"))
        if trained is not None:
            trained_value = ratio(trained, "right_pair")
            found.append(_finding(
                "the trained model's IGC down-weights the right pair more than the function's IGC",
                None if trained_value is None or value is None else trained_value < value,
                f"trained {_fmt(trained_value)} vs function {_fmt(value)}"))
    else:
        corners, centre_square, corner_squares = (ratio(igc, name) for name in
                                                  ("corner_rings", "centre_square", "corner_squares"))
        own, other = (None if igc is None else igc["relative"].get(name) for name in PER_OUTPUT_RATIOS)
        found.append(_finding(
            "IGC: strong centre, weak corners (corner rings / centre ring < 1)",
            None if corners is None else corners < 1,
            f"corner rings / centre ring = {_fmt(corners)} in the map summed over the 4 outputs (the centre "
            f"serves all 4, each corner 1); per output: own corner ring / centre ring = {_fmt(own)}, other "
            f"corners' rings / centre ring = {_fmt(other)}"))
        found.append(_finding(
            "IGC: the squares carry little (each square region below its ring per pixel)",
            None if None in (corners, centre_square, corner_squares)
            else centre_square < 1 and corner_squares < corners,
            f"centre square / centre ring = {_fmt(centre_square)}, corner squares / centre ring = "
            f"{_fmt(corner_squares)} (corner rings {_fmt(corners)})"))
        igac = _find(rows, "igac")
        if igac is not None and corners and corner_squares is not None:
            igac_corners, igac_squares = (ratio(igac, name) for name in ("corner_rings", "corner_squares"))
            if igac_corners and igac_squares is not None:
                found.append(_finding(
                    "IGC discounts the corner squares (permuted in the labels) more than IGaC, which ignores y",
                    corner_squares / corners < igac_squares / igac_corners,
                    f"corner squares / corner rings: IGC {_fmt(corner_squares / corners)}, "
                    f"IGaC {_fmt(igac_squares / igac_corners)}"))
    if ig_mean is not None and igc is not None:
        found.append(_finding(
            "IG mean is noisy: it matches the ground truth less than IGC does",
            (ig_mean["correlation_with_truth"] or 0) < (igc["correlation_with_truth"] or 0),
            f"r with truth: IG mean {_fmt(ig_mean['correlation_with_truth'])}, IGC "
            f"{_fmt(igc['correlation_with_truth'])}"))
    return found


# ----------------------------------------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------------------------------------
def _timed(label: str, call: Callable[[], Result]) -> tuple[Result, float]:
    logger.info("running %s", label)
    started = time.perf_counter()
    result = call()
    seconds = time.perf_counter() - started
    logger.info("%s took %.1f s", label, seconds)
    return result, seconds


def _train(experiment: str, config: BenchmarkConfig) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train the configured network on a separate split; returns it (eval mode) and a training summary."""
    started = time.perf_counter()
    train_split = SyntheticDataset(experiment, config.n_train, seed=config.seed + _TRAIN_SEED_OFFSET,
                                   progress=config.progress)
    standardize: Any = train_split.standardization if experiment != "D" else True
    validation = SyntheticDataset(experiment, max(200, config.n_train // 10),
                                  seed=config.seed + _VALIDATION_SEED_OFFSET, standardize=standardize)
    model = trainable_model(config.model_kind, experiment, seed=config.seed)
    history = train_model(model, train_split, epochs=config.epochs, lr=config.lr, seed=config.seed,
                          progress=config.progress, validation=validation)
    summary = {
        "kind": config.model_kind, "n_train": config.n_train, "n_validation": len(validation),
        "epochs": config.epochs, "lr": config.lr, "loss": "cross_entropy" if experiment == "D" else "mse",
        "final_train_loss": history["train_loss"][-1], "final_validation_loss": history["val_loss"][-1],
        "validation_loss": history["val_loss"], "seconds": time.perf_counter() - started,
    }
    return model, summary


def run_experiment(experiment: str, config: BenchmarkConfig | None = None,
                   out_dir: str | Path | None = None, figures_dir: str | Path | None = None) -> ExperimentOutcome:
    """Run every method on one experiment, and write its figure and tables when ``out_dir`` is given.

    Parameters
    ----------
    experiment : {"A", "B", "C", "D"}
    config : BenchmarkConfig, optional
        Settings (default: :class:`BenchmarkConfig` ()).
    out_dir : str or Path, optional
        Folder for ``experiment_<X>.png``, ``.json`` and ``.md`` (created if needed); nothing is written
        without it.
    figures_dir : str or Path, optional
        Put the figure here instead of ``out_dir`` (e.g. a documentation folder).

    Returns
    -------
    ExperimentOutcome
        The report (see :data:`TABLE_COLUMNS`), the 2-D maps and the full results.
    """
    if not isinstance(experiment, str) or experiment.strip().upper() not in EXPERIMENTS:
        raise InputError(f"run_experiment takes one experiment letter (A, B, C or D), got {experiment!r}")
    experiment = experiment.strip().upper()
    config = (config or BenchmarkConfig()).validate()
    with _threads(config.threads):
        return _run_experiment(experiment, config, out_dir, figures_dir)


@contextlib.contextmanager
def _threads(threads: int | None) -> Iterator[None]:
    """Use ``threads`` torch threads inside the block (None: leave the setting alone)."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _materialise(dataset: SyntheticDataset, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """All images and targets of a split as tensors, generated ``chunk`` images at a time (bounded peak memory)."""
    first, _ = dataset.get_batch([0])
    x = torch.empty((len(dataset), *first.shape[1:]), dtype=first.dtype)
    for start in range(0, len(dataset), chunk):
        stop = min(start + chunk, len(dataset))
        x[start:stop] = dataset.get_batch(np.arange(start, stop))[0]
    return x, dataset.targets


_SINGLE_DISKS = ("top_only", "bottom_left_only", "bottom_right_only")


def _baseline_draws(model: torch.nn.Module, data: tuple[torch.Tensor, torch.Tensor], config: BenchmarkConfig,
                    regions: dict[str, np.ndarray], results: dict[str, Result]) -> list[dict[str, Any]]:
    """B: single-disk / triple-overlap ratios of IGC with per-sample and with shared baselines, per draw seed."""

    def ratios(result: Result) -> list[float]:
        image = _pixel_map(result.maps)
        triple = image[regions["triple_overlap"]].mean()
        return [float(image[regions[name]].mean() / triple) for name in _SINGLE_DISKS]

    draws = [{"seed": config.seed, "per_sample": ratios(results["igc_function"]),
              "shared": ratios(results["igc_shared"]), "shared_sum": float(results["igc_shared"].map_sums[0])}]
    for offset in range(1, config.baseline_draws):
        seed = config.seed + offset
        options = {"n_steps": config.n_steps, "seed": seed, "progress": config.progress}
        per_sample, _ = _timed(f"IGC (per-sample draw, seed {seed})",
                               lambda: IGC(model).attribute(data, baselines=config.baselines, **options))
        shared, _ = _timed(f"IGC (shared draw, seed {seed})", lambda: IGC(model).attribute(
            data, baselines=FromData(config.baselines, shared=True), **options))
        draws.append({"seed": seed, "per_sample": ratios(per_sample), "shared": ratios(shared),
                      "shared_sum": float(shared.map_sums[0])})
    return draws


def _run_experiment(experiment: str, config: BenchmarkConfig, out_dir: str | Path | None,
                    figures_dir: str | Path | None = None) -> ExperimentOutcome:
    started = time.perf_counter()
    dataset = SyntheticDataset(experiment, config.n, seed=config.seed, cache_images=False, progress=config.progress)
    x, y = _materialise(dataset)
    data = (x, y)
    constant = (y[: config.bsc_samples].std(dim=0) == 0).nonzero().reshape(-1).tolist()
    if constant:  # refuse before any compute rather than after the IG methods
        raise InputError(
            f"BSC runs on the first {config.bsc_samples} samples (n × bsc_fraction), too few for experiment "
            f"{experiment}: the target of output(s) {constant} is constant there. Raise n or bsc_fraction"
        )
    model = dataset.function_model()
    truth = _pixel_map(ground_truth_map(experiment).numpy())
    regions = {name: mask.numpy() for name, mask in region_masks(experiment).items()}
    ig_options = {"n_steps": config.n_steps, "seed": config.seed, "progress": config.progress}
    per_sample = config.baselines

    rows: list[dict[str, Any]] = []
    maps: dict[str, np.ndarray] = {"ground truth": truth}
    results: dict[str, Result] = {}
    rows.append(_row("ground_truth", "ground truth", truth, truth, regions, experiment, None))

    moments, seconds = _timed("IG moments", lambda: IGMoments(model).attribute(data, baselines=per_sample,
                                                                               **ig_options))
    results["ig_moments"] = moments
    for key, label, values in (("ig_mean", "IG mean", moments.maps), ("ig_std", "IG std", moments.extra_maps["std"])):
        image = _pixel_map(values)
        maps[label] = image
        rows.append(_row(key, label, image, truth, regions, experiment, seconds, moments,
                         note="IG mean and IG std come from one IGMoments run", per_output=_per_output(values)))

    def add(key: str, label: str, result: Result, seconds: float, *, shown: np.ndarray | None = None,
            sums: bool = True, note: str | None = None) -> None:
        results[key] = result
        per_output = _per_output(result.maps if shown is None else shown)
        image = _pixel_map(per_output)
        maps[label] = image
        rows.append(_row(key, label, image, truth, regions, experiment, seconds, result, sums=sums, note=note,
                         per_output=per_output))

    result, seconds = _timed("IGaC", lambda: IGaC(model).attribute(data, baselines=per_sample, **ig_options))
    add("igac", "IGaC", result, seconds)
    result, seconds = _timed("IGC", lambda: IGC(model).attribute(data, baselines=per_sample, **ig_options))
    add("igc_function", "IGC (function)", result, seconds)

    training: dict[str, Any] | None = None
    if config.trained:
        network, training = _train(experiment, config)
        score = "softmax" if experiment == "D" else None
        result, seconds = _timed("IGC (trained)", lambda: IGC(network, score=score).attribute(
            data, baselines=per_sample, **ig_options))
        add("igc_trained", f"IGC (trained {config.model_kind})", result, seconds,
            note=f"training took {training['seconds']:.1f} s (not included)")

    result, seconds = _timed("naive correlation", lambda: NaiveCorrelation().attribute(data, progress=config.progress))
    add("naive_correlation", "naive correlation", result, seconds, sums=False)
    result, seconds = _timed("naive t-test", lambda: NaiveTTest().attribute(data, progress=config.progress))
    masked = np.where(result.extra_maps["p_value"] < config.p_threshold, result.maps, 0.0)
    add("naive_ttest", f"naive t (p < {config.p_threshold:g})", result, seconds, shown=masked,
        sums=False, note=f"t map set to 0 where p ≥ {config.p_threshold:g}")

    subset = (x[: config.bsc_samples], y[: config.bsc_samples])
    try:
        result, seconds = _timed("BSC", lambda: BSC(model).attribute(
            subset, baselines=config.bsc_baselines, n_permutations=config.bsc_permutations, seed=config.seed,
            progress=config.progress))
    except ConstantTargetError as error:
        raise InputError(
            f"BSC runs on the first {config.bsc_samples} samples (n × bsc_fraction), too few for experiment "
            f"{experiment}: {error}. Raise n or bsc_fraction"
        ) from error
    add("bsc", "BSC (function, N/10)", result, seconds,
        note=f"{config.bsc_samples} samples, {config.bsc_baselines} per-sample baseline(s), "
             f"{config.bsc_permutations} ordering(s)")

    if experiment == "B" and config.shared_baseline_check:
        result, seconds = _timed("IGC (shared baselines)", lambda: IGC(model).attribute(
            data, baselines=FromData(config.baselines, shared=True), **ig_options))
        add("igc_shared", f"IGC ({config.baselines} shared baselines)", result, seconds)
        draws = _baseline_draws(model, data, config, regions, results) if config.baseline_draws > 1 else None
    else:
        draws = None

    report: dict[str, Any] = {
        "experiment": experiment,
        "config": asdict(config),
        "n_samples": config.n,
        "bsc_samples": config.bsc_samples,
        "reference_region": REFERENCE_REGIONS[experiment][0],
        "compared_regions": list(REFERENCE_REGIONS[experiment][1]) + (list(PER_OUTPUT_RATIOS)
                                                                       if experiment == "D" else []),
        "region_sizes": {name: int(mask.sum()) for name, mask in regions.items()},
        "outputs_summed": 4 if experiment == "D" else 1,
        "rows": rows,
        "training": training,
        "baseline_draws": draws,
        "findings": _findings(experiment, rows, draws),
        "seconds_total": time.perf_counter() - started,
        "torch_threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()},
    }
    outcome = ExperimentOutcome(report=report, maps=maps, results=results)
    if out_dir is not None:
        report["files"] = _write(outcome, Path(out_dir), None if figures_dir is None else Path(figures_dir))
    return outcome


def run_benchmark(experiments: str | Sequence[str] = "all", config: BenchmarkConfig | None = None,
                  out_dir: str | Path = "igcorr-out/benchmark", json_path: str | Path | None = None,
                  figures_dir: str | Path | None = None,
                  callback: Callable[[ExperimentOutcome], None] | None = None) -> dict[str, Any]:
    """Run several experiments, write their files and an optional combined JSON report.

    Parameters
    ----------
    experiments : str or sequence of str
        ``"all"``, a letter, or a comma-separated list (see :func:`parse_experiments`).
    config : BenchmarkConfig, optional
        Settings shared by all experiments.
    out_dir : str or Path
        Folder of the per-experiment files.
    json_path : str or Path, optional
        Also write the combined report (every experiment's report) to this file.
    figures_dir : str or Path, optional
        Put the figures here instead of ``out_dir``.
    callback : callable, optional
        Called with each :class:`ExperimentOutcome` as soon as it is done (e.g. to print a summary).

    Returns
    -------
    dict
        ``{"experiments": {letter: report}, "seconds_total": ..., "config": ...}``.
    """
    names = parse_experiments(experiments)
    config = (config or BenchmarkConfig()).validate()
    started = time.perf_counter()
    reports: dict[str, Any] = {}
    with _threads(config.threads):
        for name in names:
            outcome = _run_experiment(name, config, out_dir, figures_dir)
            reports[name] = outcome.report
            if callback is not None:
                callback(outcome)
    combined = {"experiments": reports, "seconds_total": time.perf_counter() - started, "config": asdict(config)}
    if json_path is not None:
        path = Path(json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(combined, indent=2, default=_json_default) + "\n")
        combined["json"] = str(path)
    return combined


# ----------------------------------------------------------------------------------------------------------
# files
# ----------------------------------------------------------------------------------------------------------
def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _write(outcome: ExperimentOutcome, out_dir: Path, figures_dir: Path | None = None) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    figures_dir = out_dir if figures_dir is None else figures_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    figures_dir.mkdir(parents=True, exist_ok=True)
    letter = outcome.report["experiment"]
    paths = {"figure": figures_dir / f"experiment_{letter}.png", "json": out_dir / f"experiment_{letter}.json",
             "markdown": out_dir / f"experiment_{letter}.md"}
    figure = experiment_figure(outcome)
    figure.savefig(paths["figure"], dpi=100, bbox_inches="tight")
    plt.close(figure)
    files = {key: str(path) for key, path in paths.items()}
    outcome.report["files"] = files
    paths["json"].write_text(json.dumps(outcome.report, indent=2, default=_json_default) + "\n")
    figure_link = os.path.relpath(paths["figure"], paths["markdown"].parent)
    paths["markdown"].write_text(experiment_markdown(outcome.report, figure=figure_link))
    logger.info("wrote %s", ", ".join(files.values()))
    return files


def experiment_figure(outcome: ExperimentOutcome, columns: int = 5) -> Any:
    """One panel per method (ground truth first), each on its own symmetric scale ±1.25 × p99(|map|).

    Parameters
    ----------
    outcome : ExperimentOutcome
    columns : int
        Panels per row.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    report = outcome.report
    labels = list(outcome.maps)
    rows = int(math.ceil(len(labels) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(2.3 * columns, 2.45 * rows), squeeze=False)
    for axis in axes.ravel():
        axis.set_axis_off()
    correlations = {row["method"]: row["correlation_with_truth"] for row in report["rows"]}
    for axis, label in zip(axes.ravel(), labels):
        image = outcome.maps[label]
        limit = symmetric_limit(image)
        shown = axis.imshow(image, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
        subtitle = "" if label == "ground truth" else f"\nr(truth) = {_fmt(correlations.get(label), 2)}"
        if not np.any(image):
            subtitle += " (all zero)"
        elif report["experiment"] == "D" and label == "IG mean":
            subtitle += "\n(Σ over outputs ≡ 0)"
        axis.set_title(label + subtitle, fontsize=8)
        bar = figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.03)
        bar.ax.tick_params(labelsize=6)
        bar.ax.yaxis.get_offset_text().set_fontsize(6)
    config = report["config"]
    summed = ", maps summed over the 4 outputs" if report["experiment"] == "D" else ""
    figure.suptitle(f"Synthetic experiment {report['experiment']}: n = {report['n_samples']}, "
                    f"{config['baselines']} per-sample dataset baselines, {config['n_steps']} steps{summed}",
                    fontsize=9)
    figure.tight_layout()
    return figure


def experiment_markdown(report: dict[str, Any], figure: str | None = None) -> str:
    """The markdown table and findings of one experiment report.

    Parameters
    ----------
    report : dict
        ``ExperimentOutcome.report``.
    figure : str, optional
        Path of the figure relative to the markdown file; shown under the heading.

    Returns
    -------
    str
    """
    reference = report["reference_region"]
    ratio_columns = [name if "/" in name else f"{name}/{reference}" for name in report["compared_regions"]]
    header = ["method", "seconds", "corr. with truth"] + ratio_columns + ["Σ map", "Pearson r", "baseline term"]
    config = report["config"]
    lines = [
        f"## Experiment {report['experiment']}",
        "",
        *([f"![Experiment {report['experiment']}]({figure})", ""] if figure else []),
        f"n = {report['n_samples']} images (seed {config['seed']}), {config['baselines']} dataset baselines drawn "
        f"per sample, {config['n_steps']} trapezoid steps; BSC on {report['bsc_samples']} samples. Region "
        f"columns: mean attribution per pixel in the region divided by the mean in `{reference}`."
        + (" D maps are summed over the four outputs, except in the two per-output columns (own corner ring, "
           "other corners' rings, each relative to the centre ring of the same output's map, averaged over the "
           "outputs); Σ map and r are per output." if report["experiment"] == "D" else ""),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in report["rows"]:
        cells = [row["method"], f"{row['seconds']:.2f}" if row["seconds"] is not None else "—",
                 _fmt(row["correlation_with_truth"])]
        cells += [_fmt(row["relative"].get(column)) for column in ratio_columns]
        cells += [_fmt(row["map_sum"]), _fmt(row["pearson_r"]), _fmt(row["baseline_term"], 2)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Region sizes (pixels): " + ", ".join(f"{k} {v}" for k, v in report["region_sizes"].items()),
              ""]
    if report.get("baseline_draws"):
        lines += ["IGC single-disk / triple-overlap ratios (top, bottom-left, bottom-right) for several baseline "
                  "draw seeds (same images):", "",
                  "| draw seed | per-sample draws | one shared draw | Σ map (shared) |", "|---|---|---|---|"]
        for draw in report["baseline_draws"]:
            lines.append(f"| {draw['seed']} | {_fmt(draw['per_sample'])} | {_fmt(draw['shared'])} | "
                         f"{draw['shared_sum']:.4f} |")
        lines.append("")
    if report.get("training"):
        training = report["training"]
        lines += [f"Trained {training['kind']}: {training['n_train']} training images, {training['epochs']} epochs, "
                  f"lr {training['lr']:g}, final validation loss ({training['loss']}) "
                  f"{training['final_validation_loss']:.4g}, {training['seconds']:.1f} s.", ""]
    lines += ["Findings:", ""]
    for finding in report["findings"]:
        mark = {True: "yes", False: "**no**", None: "(measured)"}[finding["holds"]]
        lines.append(f"- {finding['claim']}: {mark} — {finding['detail']}")
    lines += ["", f"Total time {report['seconds_total']:.1f} s with {report['torch_threads']} torch thread(s).", ""]
    return "\n".join(lines)
