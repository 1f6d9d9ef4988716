"""Evaluate every dataset-wise method of the synthetic benchmark: faithfulness, sanity checks, localisation.

For each experiment (A–D, ``docs/benchmark.md``) the benchmark's methods run as in ``igcorr benchmark``
(:func:`igcorr_examples.synthetic_runner.run_experiment`, the statistic as the model), then their maps are
evaluated with :mod:`igcorr.evaluation`:

- faithfulness: deletion and insertion curves of the model's correlation with the targets on the evaluation
  images, against a band of random rankings;
- localisation: share of |map| inside the truth and the ROC AUC of |map| against it (A: the pixels where
  |w ⊙ Cw| is at least a tenth of its maximum; B–D: the union of the masks).

The statistic has no parameters, so the model-parameter randomisation needs another model: a small MLP trained
on a separate split. Every method runs again on it (the first ``sanity_samples`` images, lighter settings),
its maps get their own faithfulness curves (measured on the MLP) and localisation, and the sanity check
randomises its linear layers (cascading and independent) and recomputes every map; the MLP's IGC also gets a
label-permutation test (``sanity_permutations``).

One table (CSV and markdown) covers every experiment, model and method; each experiment also gets figures of
its curves and of its sanity scores, and everything goes into one JSON file. Entry points:
:func:`evaluate_experiment`, :func:`run_evaluation` and the ``igcorr evaluate`` command.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import platform
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from igcorr import BSC, IGC, IGaC, IGMoments, NaiveCorrelation, NaiveTTest
from igcorr._files import atomic_write
from igcorr.errors import InputError
from igcorr.evaluation import faithfulness, localisation, model_randomisation, write_table
from igcorr.evaluation.replacement import REPLACEMENTS as _REPLACEMENTS
from igcorr.result import Result
from igcorr_examples.synthetic import SyntheticDataset, ground_truth_map
from igcorr_examples.synthetic_models import train_model, trainable_model
from igcorr_examples.synthetic_runner import BenchmarkConfig, parse_experiments, run_experiment

__all__ = ["EvaluationConfig", "TABLE_COLUMNS", "benchmark_maps", "evaluate_experiment", "localisation_truth",
           "run_evaluation", "sanity_attribution"]

logger = logging.getLogger(__name__)

#: columns of the markdown table (the CSV holds every column)
TABLE_COLUMNS: tuple[str, ...] = (
    "experiment", "model", "method", "deletion_auc", "random_deletion_auc", "random_deletion_low", "random_deletion_high",
    "insertion_auc", "random_insertion_auc", "random_insertion_high", "share_in_truth", "roc_auc",
    "randomised_rank_correlation", "randomised_ssim", "independent_min_rank_correlation", "model_independent",
    "label_p_fwe_min",
)
_HEADERS = {"deletion_auc": "deletion AUC ↓", "random_deletion_auc": "random del.",
            "random_deletion_low": "rand. del. min",
            "random_deletion_high": "rand. del. max", "insertion_auc": "insertion AUC ↑",
            "random_insertion_auc": "random ins.", "random_insertion_high": "rand. ins. max",
            "share_in_truth": "share in truth", "roc_auc": "ROC AUC", "randomised_rank_correlation": "ρ randomised",
            "randomised_ssim": "SSIM randomised", "independent_min_rank_correlation": "min ρ one layer",
            "model_independent": "flagged", "label_p_fwe_min": "label perm. p_FWE"}

#: relative threshold of |w ⊙ Cw| that defines experiment A's truth mask
A_TRUTH_LEVEL = 0.1
#: offsets of the sanity network's training and validation splits from the evaluation seed (as the benchmark)
_TRAIN_SEED_OFFSET = 1
_VALIDATION_SEED_OFFSET = 2


@dataclass
class EvaluationConfig:
    """Settings of ``igcorr evaluate`` (CPU-sized defaults).

    Parameters
    ----------
    n : int
        Evaluation images per experiment (>= 50); the methods run on them as in ``igcorr benchmark``.
    n_steps, baselines : int
        Trapezoid nodes per path and dataset baselines per sample of the benchmark's IG methods.
    replacement : {"mean", "baseline", "linear"}
        What removed pixels become (:func:`igcorr.evaluation.faithfulness`).
    fractions : int
        Points of each curve, evenly spaced from 0 to 1.
    random_rankings : int
        Random rankings of the reference band.
    order : {"signed", "absolute"}
        Pixel ranking by the signed map or its magnitude.
    sanity : bool
        Run the model-parameter randomisation (trains a small MLP per experiment).
    independent : bool
        Also randomise each layer alone (besides cascading).
    sanity_samples, sanity_steps, sanity_baselines : int
        Images (default: the first min(300, n)), trapezoid nodes and per-sample baselines of the methods
        recomputed on every randomised network.
    sanity_bsc_samples : int, optional
        Images BSC runs on in the sanity check (default: a tenth of the sanity images, at least 10); BSC costs
        4,097 forward passes per image.
    sanity_permutations : int
        Label permutations of the original network's IGC (0: none).
    n_train, epochs, hidden : int, int, tuple of int
        The sanity network: :class:`~igcorr_examples.synthetic_models.SyntheticMLP` with these hidden layers,
        trained on ``n_train`` images (split ``seed + 1``) for ``epochs`` epochs.
    seed : int
        Seed of the images, the draws of every method, the random rankings, the imputation noise, the training
        and the parameter draws.
    threads : int, optional
        torch threads during the run (restored afterwards); None keeps the current setting.
    progress : bool
        Show progress bars.
    """

    n: int = 1000
    n_steps: int = 16
    baselines: int = 8
    replacement: str = "mean"
    fractions: int = 21
    random_rankings: int = 5
    order: str = "signed"
    sanity: bool = True
    independent: bool = True
    sanity_samples: int | None = None
    sanity_steps: int = 8
    sanity_baselines: int = 4
    sanity_bsc_samples: int | None = None
    sanity_permutations: int = 199
    n_train: int = 4000
    epochs: int = 5
    hidden: tuple[int, ...] = (64, 32)
    seed: int = 0
    threads: int | None = 1
    progress: bool = True

    def validate(self) -> "EvaluationConfig":
        """Check every setting; returns self (InputError with a clear message otherwise)."""
        from igcorr._validation import check_bool, check_choice, check_int, check_seed

        check_int(self.n, "n", minimum=50, hint="evaluation images")
        check_int(self.n_steps, "n_steps", minimum=2)
        check_int(self.baselines, "baselines", minimum=1)
        check_choice(self.replacement, "replacement", _REPLACEMENTS)
        check_int(self.fractions, "fractions", minimum=2, hint="points per curve")
        check_int(self.random_rankings, "random_rankings", minimum=0)
        check_choice(self.order, "order", ("signed", "absolute"))
        check_bool(self.sanity, "sanity")
        check_bool(self.independent, "independent")
        if self.sanity_samples is not None:
            check_int(self.sanity_samples, "sanity_samples", minimum=20, maximum=self.n,
                      hint="images of the sanity check, at most n")
        check_int(self.sanity_steps, "sanity_steps", minimum=2)
        if self.sanity_bsc_samples is not None:
            check_int(self.sanity_bsc_samples, "sanity_bsc_samples", minimum=2, maximum=self.sanity_size)
        check_int(self.sanity_baselines, "sanity_baselines", minimum=1, maximum=self.sanity_size)
        check_int(self.sanity_permutations, "sanity_permutations", minimum=0)
        check_int(self.n_train, "n_train", minimum=50)
        check_int(self.epochs, "epochs", minimum=1)
        if not self.hidden or not all(isinstance(width, int) and width > 0 for width in self.hidden):
            raise InputError(f"hidden must be a tuple of positive layer widths, got {self.hidden!r}")
        check_seed(self.seed)
        if self.threads is not None:
            check_int(self.threads, "threads", minimum=1)
        check_bool(self.progress, "progress")
        if self.baselines > self.n:
            raise InputError(f"{self.baselines} baselines per sample need at least as many samples, got n={self.n}")
        return self

    @property
    def sanity_size(self) -> int:
        """Images of the sanity check."""
        return min(300, self.n) if self.sanity_samples is None else int(self.sanity_samples)

    @property
    def sanity_bsc_size(self) -> int:
        """Images BSC runs on in the sanity check."""
        if self.sanity_bsc_samples is not None:
            return int(self.sanity_bsc_samples)
        return min(self.sanity_size, max(10, self.sanity_size // 10))

    @property
    def fraction_values(self) -> np.ndarray:
        return np.linspace(0.0, 1.0, self.fractions)


@contextlib.contextmanager
def _threads(threads: int | None) -> Iterator[None]:
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def benchmark_maps(results: dict[str, Result]) -> dict[str, np.ndarray]:
    """The map of every method of a benchmark run (``ExperimentOutcome.results``), named as in its table.

    The naive t-test contributes its t map (not the thresholded map the benchmark's figure shows), so that
    it ranks every pixel.
    """
    maps: dict[str, np.ndarray] = {}
    labels = {"igac": "IGaC", "igc_function": "IGC", "igc_trained": "IGC (trained)",
              "naive_correlation": "naive correlation", "naive_ttest": "naive t", "bsc": "BSC (N/10)",
              "igc_shared": "IGC (shared baselines)"}
    if "ig_moments" in results:
        maps["IG mean"] = results["ig_moments"].maps
        maps["IG std"] = results["ig_moments"].extra_maps["std"]
    for key, label in labels.items():
        if key in results:
            maps[label] = results[key].maps
    return maps


def localisation_truth(experiment: str) -> np.ndarray:
    """The truth mask (1, 64, 64) of an experiment: A, |w ⊙ Cw| at least a tenth of its maximum (the centre
    and the ring); B–D, the union of the masks."""
    truth = ground_truth_map(experiment).numpy().astype(np.float64)
    if experiment.upper() == "A":
        return np.abs(truth) >= A_TRUTH_LEVEL * np.abs(truth).max()
    return truth > 0


def sanity_attribution(data: tuple[torch.Tensor, torch.Tensor], config: EvaluationConfig, *, score: Any = None,
                       permutations: int = 0) -> Callable[[torch.nn.Module], dict[str, Result]]:
    """The callable the sanity check recomputes on every randomised network: every method of the benchmark
    (lighter settings), returning {method: Result}. ``permutations`` adds a label-permutation test to IGC."""
    x, y = data
    bsc_samples = min(len(x), config.sanity_bsc_size)
    options = {"n_steps": config.sanity_steps, "seed": config.seed, "progress": False}

    def attribute(model: torch.nn.Module) -> dict[str, Result]:
        with warnings.catch_warnings():
            # a randomised network is rough: the coarse quadrature's completeness warning says nothing about the
            # ranking the comparison uses
            warnings.filterwarnings("ignore", message=".*the quadrature .* is too coarse", category=UserWarning)
            return maps(model)

    def maps(model: torch.nn.Module) -> dict[str, Result]:
        moments = IGMoments(model, score=score).attribute(data, baselines=config.sanity_baselines, **options)
        mean = Result("ig_moments", moments.maps, metadata=moments.metadata)
        spread = Result("ig_moments", moments.extra_maps["std"], metadata=moments.metadata)
        return {
            "IG mean": mean, "IG std": spread,
            "IGaC": IGaC(model, score=score).attribute(data, baselines=config.sanity_baselines, **options),
            "IGC": IGC(model, score=score).attribute(data, baselines=config.sanity_baselines,
                                                     permutations=permutations, **options),
            "naive correlation": NaiveCorrelation(model, score=score).attribute(data, progress=False),
            "naive t": NaiveTTest(model, score=score).attribute(data, progress=False),
            "BSC (N/10)": BSC(model, score=score).attribute((x[:bsc_samples], y[:bsc_samples]), baselines=1,
                                                          n_permutations=1, seed=config.seed, progress=False),
        }

    return attribute


def _train(experiment: str, config: EvaluationConfig) -> tuple[torch.nn.Module, dict[str, Any]]:
    started = time.perf_counter()
    train_split = SyntheticDataset(experiment, config.n_train, seed=config.seed + _TRAIN_SEED_OFFSET)
    standardize: Any = train_split.standardization if experiment != "D" else True
    validation = SyntheticDataset(experiment, max(200, config.n_train // 10),
                                  seed=config.seed + _VALIDATION_SEED_OFFSET, standardize=standardize)
    network = trainable_model("mlp", experiment, seed=config.seed, hidden=tuple(config.hidden))
    history = train_model(network, train_split, epochs=config.epochs, seed=config.seed, progress=config.progress,
                          validation=validation)
    return network.eval(), {"kind": "mlp", "hidden": list(config.hidden), "n_train": config.n_train,
                            "epochs": config.epochs, "final_validation_loss": history["val_loss"][-1],
                            "seconds": time.perf_counter() - started}


def evaluate_experiment(experiment: str, config: EvaluationConfig | None = None) -> dict[str, Any]:
    """Run the benchmark's methods on one experiment and evaluate their maps.

    Two models are evaluated: the statistic itself (every method of ``igcorr benchmark`` on ``n`` images;
    faithfulness and localisation) and, with ``sanity``, a small MLP trained on a separate split (every method
    on the first ``sanity_samples`` images; faithfulness against the MLP, localisation, and the
    model-parameter randomisation).

    Returns
    -------
    dict
        ``rows`` (per model and method, plus each model's random band: faithfulness, localisation and, for the
        MLP, sanity columns), ``faithfulness`` and ``localisation`` ({model: result}), ``sanity``
        (:class:`~igcorr.evaluation.SanityCheck` or None), ``timings`` (seconds per stage), ``training`` and
        ``original_correlation`` ({model: r per output on the unmodified images}).
    """
    experiment = _single(experiment)
    config = (config or EvaluationConfig()).validate()
    timings: dict[str, float] = {}
    curves: dict[str, Any] = {}
    found: dict[str, Any] = {}
    truth = localisation_truth(experiment)
    options = {"replacement": config.replacement, "fractions": config.fraction_values, "order": config.order,
               "random_rankings": config.random_rankings, "seed": config.seed, "progress": config.progress}
    with _threads(config.threads):
        started = time.perf_counter()
        benchmark = BenchmarkConfig(n=config.n, n_steps=config.n_steps, baselines=config.baselines, seed=config.seed,
                                    threads=None, progress=config.progress)
        outcome = run_experiment(experiment, benchmark)
        timings["methods"] = time.perf_counter() - started
        maps = benchmark_maps(outcome.results)

        started = time.perf_counter()
        dataset = SyntheticDataset(experiment, config.n, seed=config.seed)
        x, y = dataset.get_batch(np.arange(config.n))
        curves["statistic"] = faithfulness(dataset.function_model(), (x, y), maps, **options)
        found["statistic"] = localisation(maps, truth, mode="absolute")
        timings["faithfulness"] = time.perf_counter() - started

        sanity = training = None
        if config.sanity:
            started = time.perf_counter()
            network, training = _train(experiment, config)
            timings["training"] = time.perf_counter() - started
            started = time.perf_counter()
            subset = (x[: config.sanity_size], y[: config.sanity_size])
            score = "softmax" if experiment == "D" else None
            original = sanity_attribution(subset, config, score=score,
                                          permutations=config.sanity_permutations)(network)
            timings["MLP methods"] = time.perf_counter() - started
            started = time.perf_counter()
            network_maps = {name: result.maps for name, result in original.items()}
            curves["MLP"] = faithfulness(network, subset, network_maps, score=score, **options)
            found["MLP"] = localisation(network_maps, truth, mode="absolute")
            timings["MLP faithfulness"] = time.perf_counter() - started
            started = time.perf_counter()
            sanity = model_randomisation(network, sanity_attribution(subset, config, score=score), original=original,
                                         independent=config.independent, seed=config.seed, progress=config.progress)
            timings["sanity"] = time.perf_counter() - started
    rows = _rows(experiment, "statistic", curves["statistic"], found["statistic"], None)
    if sanity is not None:
        rows += _rows(experiment, "MLP", curves["MLP"], found["MLP"], sanity)
    return {"experiment": experiment, "rows": rows, "faithfulness": curves, "sanity": sanity, "localisation": found,
            "timings": timings, "training": training,
            "original_correlation": {name: result.original.tolist() for name, result in curves.items()},
            "n_samples": config.n, "benchmark_seconds": {row["method"]: row["seconds"]
                                                         for row in outcome.report["rows"] if row["seconds"]}}


def _single(experiment: Any) -> str:
    names = parse_experiments(experiment)
    if len(names) != 1:
        raise InputError(f"evaluate_experiment takes one experiment letter (A, B, C or D), got {experiment!r}")
    return names[0]


def _rows(experiment: str, model: str, curves: Any, found: Any, sanity: Any) -> list[dict[str, Any]]:
    located = {row["method"]: row for row in found.table()}
    checked = {row["method"]: row for row in sanity.table()} if sanity is not None else {}
    rows = []
    for row in curves.table():
        name = row["method"]
        merged = {"experiment": experiment, "model": model, **row}
        merged.update({key: value for key, value in located.get(name, {}).items() if key != "method"})
        merged.update({key: value for key, value in checked.get(name, {}).items() if key != "method"})
        rows.append(merged)
    if len(curves.random_deletion):
        first = rows[0]
        rows.append({"experiment": experiment, "model": model,
                     "method": f"random ({len(curves.random_deletion)} rankings)",
                     "deletion_auc": first["random_deletion_auc"], "insertion_auc": first["random_insertion_auc"],
                     "random_deletion_low": first["random_deletion_low"],
                     "random_deletion_high": first["random_deletion_high"],
                     "random_insertion_low": first["random_insertion_low"],
                     "random_insertion_high": first["random_insertion_high"]})
    return rows


def run_evaluation(experiments: str | Sequence[str] = "all", config: EvaluationConfig | None = None,
                   out_dir: str | Path = "igcorr-out/evaluation", figures_dir: str | Path | None = None,
                   callback: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Evaluate several experiments and write one table (``evaluation.csv``, ``evaluation.md``), one JSON report
    (``evaluation.json``) and two figures per experiment (``faithfulness_<X>.png``, ``sanity_<X>.png``).

    Parameters
    ----------
    experiments : str or sequence of str
        ``"all"``, a letter or a comma-separated list.
    config : EvaluationConfig, optional
    out_dir : path
        Folder of the table and the JSON report (created if needed).
    figures_dir : path, optional
        Folder of the figures (default ``out_dir``).
    callback : callable, optional
        Called with each experiment's report as soon as it is done.

    Returns
    -------
    dict
        ``{"experiments": {letter: report}, "rows": [...], "files": {...}, "seconds_total": ...}``.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    names = parse_experiments(experiments)
    config = (config or EvaluationConfig()).validate()
    out = Path(out_dir)
    figures = out if figures_dir is None else Path(figures_dir)
    started = time.perf_counter()
    reports: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    files: dict[str, str] = {}
    for name in names:
        report = evaluate_experiment(name, config)
        figures.mkdir(parents=True, exist_ok=True)
        for model, curves in report["faithfulness"].items():
            suffix = "" if model == "statistic" else "_mlp"
            figure = curves.plot(title=_curve_title(name, model, curves, config))
            path = figures / f"faithfulness_{name}{suffix}.png"
            figure.savefig(path, dpi=100, bbox_inches="tight")
            plt.close(figure)
            files[f"faithfulness_{name}{suffix}"] = str(path)
        if report["sanity"] is not None:
            figure = report["sanity"].plot(title=f"Experiment {name}: model-parameter randomisation of the trained "
                                                 f"MLP ({config.sanity_size} images)")
            path = figures / f"sanity_{name}.png"
            figure.savefig(path, dpi=100, bbox_inches="tight")
            plt.close(figure)
            files[f"sanity_{name}"] = str(path)
        rows.extend(report["rows"])
        reports[name] = report
        if callback is not None:
            callback(report)
    seconds = time.perf_counter() - started
    written = write_table(rows, out / "evaluation")
    markdown = _markdown(rows, reports, config, seconds)
    atomic_write(written["markdown"], lambda handle: handle.write(markdown.encode()), "evaluation table")
    files.update({key: str(value) for key, value in written.items()})
    serialisable = {
        "config": asdict(config), "seconds_total": seconds, "rows": rows, "files": files,
        "experiments": {name: {"faithfulness": {model: curves.to_dict()
                                                for model, curves in report["faithfulness"].items()},
                               "sanity": None if report["sanity"] is None else report["sanity"].to_dict(),
                               "localisation": {model: found.table()
                                                for model, found in report["localisation"].items()},
                               "timings": report["timings"],
                               "training": report["training"], "original_correlation": report["original_correlation"],
                               "benchmark_seconds": report["benchmark_seconds"]}
                        for name, report in reports.items()},
        "torch_threads": config.threads or torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()},
    }
    json_path = out / "evaluation.json"
    text = json.dumps(_finite(serialisable), indent=2, default=_json_default, allow_nan=False) + "\n"
    atomic_write(json_path, lambda handle: handle.write(text.encode()), "evaluation report")
    files["json"] = str(json_path)
    return {"experiments": reports, "rows": rows, "files": files, "seconds_total": seconds}


def _curve_title(name: str, model: str, curves: Any, config: EvaluationConfig) -> str:
    r = curves.original
    who = (f"the statistic, n = {config.n}" if model == "statistic"
           else f"the trained MLP, n = {config.sanity_size}")
    return (f"Experiment {name}, {who}: {config.replacement} replacement, {config.order} ranking; r on the "
            f"unmodified images {'/'.join(f'{value:.3f}' for value in r)}"
            + (" (curves averaged over the 4 outputs)" if len(r) > 1 else ""))


#: stages of an experiment's run time, in the order of the markdown table
_STAGES = ("methods", "faithfulness", "training", "MLP methods", "MLP faithfulness", "sanity")


def _markdown(rows: list[dict[str, Any]], reports: dict[str, Any], config: EvaluationConfig, seconds: float) -> str:
    from igcorr.evaluation import markdown_table

    rankings = f"{config.random_rankings} random ranking{'s' if config.random_rankings != 1 else ''}"
    lines = ["# Evaluation of the dataset-wise maps of the synthetic benchmark", "",
             f"Model `statistic`: the experiment's statistic as the model, every method on n = {config.n} images "
             f"(seed {config.seed}), {config.baselines} per-sample dataset baselines and {config.n_steps} trapezoid "
             f"steps for the IG methods, as in `igcorr benchmark`. Deletion and insertion curves: {config.replacement} "
             f"replacement, {config.order} ranking, {config.fractions} fractions, {rankings}; areas averaged over "
             "the outputs (D has four). Localisation: |map| against the truth mask."]
    if config.sanity:
        lines[-1] += (f" Model `MLP`: a {'/'.join(map(str, config.hidden))} MLP trained on {config.n_train} images "
                      f"({config.epochs} epochs), every method on the first {config.sanity_size} images "
                      f"({config.sanity_baselines} baselines, {config.sanity_steps} steps; BSC on "
                      f"{config.sanity_bsc_size}); its curves are measured on the MLP, and its sanity columns compare "
                      "each map with the map recomputed after randomising the MLP's layers (ρ = Spearman rank "
                      "correlation; flagged = unchanged after every layer is randomised). The label-permutation "
                      f"p-value is IGC's ({config.sanity_permutations} permutations).")
    lines += ["", markdown_table(rows, TABLE_COLUMNS, headers=_HEADERS),
              "", "Run time per experiment (seconds):", "",
              "| experiment | " + " | ".join(_STAGES) + " |", "|---" * (len(_STAGES) + 1) + "|"]
    for name, report in reports.items():
        timings = report["timings"]
        lines.append(f"| {name} | " + " | ".join(f"{timings[key]:.1f}" if key in timings else "—"
                                                 for key in _STAGES) + " |")
    lines += ["", f"Total {seconds:.1f} s with {config.threads or torch.get_num_threads()} torch thread(s).", ""]
    return "\n".join(lines)


def _finite(value: Any) -> Any:
    """The same structure with NaN and infinite floats as None (strict JSON)."""
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    if isinstance(value, np.ndarray):
        return _finite(value.tolist())
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__}")
