"""Dataset-wise deletion and insertion curves: does the model's correlation with the targets fall first when the
components a map ranks first are taken away?

A dataset-wise map ranks the input components (or regions) once for the whole dataset. For a fraction f of the
components, the ranked ones are replaced in every sample (deletion: the top f; insertion: all but the top f)
and the model's correlation with the targets is measured again over the dataset. A faithful map makes the
deletion curve fall early (small area under the curve) and the insertion curve rise early (large area). Random
rankings give the reference band.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from igcorr._docs import fill_doc
from igcorr._validation import (check_bool, check_choice, check_int, check_number, check_optional_positive_int,
                                check_positive_int, check_seed)
from igcorr.data import DataSource
from igcorr.dataset.targets import encode_targets
from igcorr.errors import ConstantTargetError, InputError, ShapeError
from igcorr.evaluation.truth import named_maps
from igcorr.evaluation.replacement import REPLACEMENTS, LinearImputation, Replacement, reference_tensor
from igcorr.model import ModelAdapter, resolve_outputs
from igcorr.seeding import generator_for

__all__ = ["DEFAULT_FRACTIONS", "Faithfulness", "faithfulness", "removal_counts"]

logger = logging.getLogger(__name__)

#: fractions 0, 0.05, ..., 1
DEFAULT_FRACTIONS = tuple(np.round(np.linspace(0.0, 1.0, 21), 10).tolist())
#: how components are ranked
ORDERS = ("signed", "absolute")
#: samples per batch when ``batch_size`` is not given (linear imputation: more, as each mask is factorised
#: once per batch)
_DEFAULT_BATCH = 64
_DEFAULT_LINEAR_BATCH = 256
#: tag of the random rankings' draws
_RANDOM_TAG = 0x5EED_0ADD_0002
#: predictions whose spread is below this many float epsilons of their scale count as constant (correlation 0)
_CONSTANT_EPSILONS = 100.0


def removal_counts(fractions: Sequence[float], units: int) -> np.ndarray:
    """Components (or regions) replaced at each fraction: ⌊f·units + ½⌋ (so 0 → none and 1 → all)."""
    return np.floor(np.asarray(fractions, dtype=np.float64) * units + 0.5).astype(np.int64)


def _trapezoid(x: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Trapezoid rule along the last axis."""
    return ((values[..., 1:] + values[..., :-1]) * np.diff(x) / 2.0).sum(axis=-1)


@dataclass
class Faithfulness:
    """Deletion and insertion curves of dataset-wise maps, with the random-ranking band.

    Attributes
    ----------
    fractions : ndarray (F,)
        Fractions of the components (or regions) replaced (deletion) or kept (insertion).
    outputs : list of int
        The model outputs the curves measure.
    deletion, insertion : dict of str → ndarray (K, F)
        The metric (by default Pearson r of each output with its target) at each fraction, per map.
    random_deletion, random_insertion : ndarray (R, K, F)
        The same for R random rankings (seeded).
    original : ndarray (K,)
        The metric on the unmodified data.
    metric : str
        "pearson" or the name of the user's callable.
    metadata : dict
        Replacement, ordering, counts per fraction, samples, seed, batch sizes, run time.
    """

    fractions: np.ndarray
    outputs: list[int]
    deletion: dict[str, np.ndarray]
    insertion: dict[str, np.ndarray]
    random_deletion: np.ndarray
    random_insertion: np.ndarray
    original: np.ndarray
    metric: str = "pearson"
    metadata: dict[str, Any] = field(default_factory=dict)

    def auc(self, direction: str = "deletion") -> dict[str, np.ndarray]:
        """Area under each map's curve (trapezoid rule over the fractions), per output: {name: (K,)}."""
        check_choice(direction, "direction", ("deletion", "insertion"))
        curves = self.deletion if direction == "deletion" else self.insertion
        return {name: _trapezoid(self.fractions, values) for name, values in curves.items()}

    def random_auc(self, direction: str = "deletion") -> np.ndarray:
        """Area under each random ranking's curve, (R, K)."""
        check_choice(direction, "direction", ("deletion", "insertion"))
        curves = self.random_deletion if direction == "deletion" else self.random_insertion
        return _trapezoid(self.fractions, curves)

    def table(self) -> list[dict[str, Any]]:
        """One row per map, areas averaged over the outputs.

        Columns: ``method``, ``deletion_auc``, ``insertion_auc`` (smaller is better for deletion, larger for
        insertion), the random band ``random_deletion_auc`` (mean over seeds) with ``random_deletion_low`` and
        ``random_deletion_high`` (smallest and largest seed), the same for insertion, ``deletion_gap`` (random
        mean − map) and ``insertion_gap`` (map − random mean), positive when the map beats random, and
        ``beats_random_deletion`` / ``beats_random_insertion``: the map's area lies outside the whole band on
        the good side (None without random rankings).
        """
        rows = []
        band: dict[str, tuple[float, float, float] | None] = {}
        for direction in ("deletion", "insertion"):
            areas = self.random_auc(direction).mean(axis=1) if len(self.random_deletion) else None
            band[direction] = None if areas is None else (float(areas.mean()), float(areas.min()), float(areas.max()))
        deletion, insertion = self.auc("deletion"), self.auc("insertion")
        for name in self.deletion:
            row: dict[str, Any] = {"method": name, "deletion_auc": float(deletion[name].mean()),
                                   "insertion_auc": float(insertion[name].mean())}
            for direction in ("deletion", "insertion"):
                reference = band[direction]
                mean, low, high = reference if reference is not None else (None, None, None)
                row[f"random_{direction}_auc"] = mean
                row[f"random_{direction}_low"] = low
                row[f"random_{direction}_high"] = high
            d_band, i_band = band["deletion"], band["insertion"]
            row["deletion_gap"] = None if d_band is None else d_band[0] - row["deletion_auc"]
            row["insertion_gap"] = None if i_band is None else row["insertion_auc"] - i_band[0]
            row["beats_random_deletion"] = None if d_band is None else bool(row["deletion_auc"] < d_band[1])
            row["beats_random_insertion"] = None if i_band is None else bool(row["insertion_auc"] > i_band[2])
            rows.append(row)
        return rows

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable curves, areas and metadata."""
        return {
            "fractions": self.fractions.tolist(), "outputs": list(self.outputs), "metric": self.metric,
            "original": self.original.tolist(),
            "deletion": {name: values.tolist() for name, values in self.deletion.items()},
            "insertion": {name: values.tolist() for name, values in self.insertion.items()},
            "random_deletion": self.random_deletion.tolist(), "random_insertion": self.random_insertion.tolist(),
            "table": self.table(), "metadata": self.metadata,
        }

    def plot(self, output: int | None = None, *, title: str | None = None) -> Any:
        """Deletion and insertion curves of every map on one figure, with the random band (min–max over the
        seeds, dashed mean).

        Parameters
        ----------
        output : int, optional
            Position in ``outputs`` of the output to draw; None: the curves averaged over the outputs.
        title : str, optional
            Figure title.

        Returns
        -------
        matplotlib.figure.Figure
        """
        import matplotlib.pyplot as plt

        if output is not None:
            output = check_int(output, "output", minimum=0, maximum=len(self.outputs) - 1,
                               hint="a position in Faithfulness.outputs")

        def pick(values: np.ndarray) -> np.ndarray:  # (..., K, F) → (..., F)
            return values.mean(axis=-2) if output is None else values[..., output, :]

        figure, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        unit = self.metadata.get("units", "components")
        for axis, direction in zip(axes, ("deletion", "insertion")):
            curves = self.deletion if direction == "deletion" else self.insertion
            random = self.random_deletion if direction == "deletion" else self.random_insertion
            if len(random):
                chosen = pick(random)
                axis.fill_between(self.fractions, chosen.min(axis=0), chosen.max(axis=0), color="0.85",
                                  label=f"random ({len(random)} seeds)")
                axis.plot(self.fractions, chosen.mean(axis=0), color="0.45", linestyle="--", linewidth=1)
            for name, values in curves.items():
                curve = pick(values)
                axis.plot(self.fractions, curve, linewidth=1.4,
                          label=f"{name} ({float(_trapezoid(self.fractions, curve)):.3f})")
            verb = "replaced" if direction == "deletion" else "kept"
            axis.set_xlabel(f"fraction of {unit} {verb} (ranked by the map)")
            axis.set_ylabel(self.metric if self.metric != "pearson" else "Pearson r (model, target)")
            axis.set_title(f"{direction} (area in the legend; {'lower' if direction == 'deletion' else 'higher'} "
                           "is better)", fontsize=9)
            axis.axhline(0.0, color="0.7", linewidth=0.6)
            axis.legend(fontsize=7)
        if title:
            figure.suptitle(title, fontsize=10)
        figure.tight_layout()
        return figure


class _Pearson:
    """Streaming float64 co-moments of predictions (B, Q, K) with targets (B, K), merged batch by batch
    (Chan et al.), so the result does not depend on the batch size beyond rounding."""

    def __init__(self, shape: tuple[int, ...], device: torch.device) -> None:
        zeros = torch.zeros(shape, dtype=torch.float64, device=device)
        self.n = 0
        self.mean_p, self.m2_p, self.c_py = zeros.clone(), zeros.clone(), zeros.clone()
        self.mean_y = self.m2_y = None

    def update(self, predictions: torch.Tensor, targets: torch.Tensor) -> None:
        b = predictions.shape[0]
        if b == 0:
            return
        targets = targets.reshape(b, *([1] * (predictions.ndim - 2)), targets.shape[-1])
        mean_p, mean_y = predictions.mean(dim=0), targets.mean(dim=0)
        dp, dy = predictions - mean_p, targets - mean_y
        m2_p, m2_y, c_py = (dp * dp).sum(dim=0), (dy * dy).sum(dim=0), (dp * dy).sum(dim=0)
        if self.n == 0:
            self.n, self.mean_p, self.mean_y, self.m2_p, self.m2_y, self.c_py = b, mean_p, mean_y, m2_p, m2_y, c_py
            return
        total = self.n + b
        delta_p, delta_y = mean_p - self.mean_p, mean_y - self.mean_y
        weight = self.n * b / total
        self.m2_p = self.m2_p + m2_p + delta_p * delta_p * weight
        self.m2_y = self.m2_y + m2_y + delta_y * delta_y * weight
        self.c_py = self.c_py + c_py + delta_p * delta_y * weight
        self.mean_p = self.mean_p + delta_p * (b / total)
        self.mean_y = self.mean_y + delta_y * (b / total)
        self.n = total

    def correlation(self, scale: torch.Tensor, tolerance: float) -> torch.Tensor:
        """Pearson r; 0 where the predictions are constant (spread ≤ tolerance × scale)."""
        std_p = torch.sqrt(self.m2_p.clamp_min(0.0) / self.n)
        constant = std_p <= tolerance * torch.maximum(scale, self.mean_p.abs())
        r = self.c_py / torch.sqrt(self.m2_p.clamp_min(0.0) * self.m2_y)
        return torch.where(constant, torch.zeros_like(r), r)


def _fractions(fractions: Any) -> np.ndarray:
    if fractions is None:
        return np.asarray(DEFAULT_FRACTIONS)
    if isinstance(fractions, torch.Tensor):
        fractions = fractions.detach().cpu().tolist()
    if isinstance(fractions, (str, bytes)) or not hasattr(fractions, "__len__"):
        raise InputError(f"fractions must be a sequence of numbers between 0 and 1, got {fractions!r}")
    values = [check_number(value, "every fraction", hint="a share of the components, from 0 to 1")
              for value in np.asarray(fractions, dtype=object).reshape(-1)]
    if len(values) < 2:
        raise InputError(f"fractions must hold at least two values (the curve's ends), got {list(values)}")
    bad = [value for value in values if not 0.0 <= value <= 1.0]
    if bad:
        raise InputError(f"fractions must lie between 0 and 1 (0 % to 100 % of the components), got {bad[0]!r}")
    array = np.asarray(values, dtype=np.float64)
    if (np.diff(array) <= 0).any():
        raise InputError("fractions must be strictly increasing, e.g. numpy.linspace(0, 1, 21)")
    return array


def _outputs_of_results(maps: Any) -> list[int] | None:
    """The outputs the given Results attribute, when they all agree (used when ``outputs`` is not given)."""
    from igcorr.result import Result

    values = list(maps.values()) if isinstance(maps, dict) else [maps]
    found = {tuple(value.outputs) for value in values if isinstance(value, Result)}
    return list(next(iter(found))) if len(found) == 1 else None


def _rank(values: np.ndarray, order: str) -> np.ndarray:
    """Unit indices from the most to the least relevant (ties in index order)."""
    scores = np.abs(values) if order == "absolute" else values
    return np.argsort(-scores, kind="stable")


@fill_doc
def faithfulness(model: Callable[..., torch.Tensor], data: Any, maps: Any, *, score: Any = None,
                 replacement: str = "mean", baseline: Any = 0.0, fractions: Sequence[float] | None = None,
                 order: str = "signed", regions: Any = None, random_rankings: int = 5,
                 metric: str | Callable[[torch.Tensor, torch.Tensor], Any] = "pearson",
                 outputs: int | Sequence[int] | None = None, batch_size: int | None = None,
                 chunk_size: int = 1024, noise: float = 0.01, seed: int = 0, progress: bool = True) -> Faithfulness:
    """Dataset-wise deletion and insertion curves of one or several maps, with a random-ranking band.

    Each map ranks the input components from the most to the least relevant (per output for maps of shape
    (K, *x_shape)). For every fraction f, the top ⌊f·D + ½⌋ components are replaced in every sample (deletion)
    or all but those (insertion), and the metric between the model's outputs on the modified inputs and the
    targets is measured over the dataset. The data are read once: each batch is evaluated for all maps,
    fractions and random rankings in batched forward passes without gradients, and the Pearson statistics are
    streamed in float64 (so the curves do not depend on ``batch_size`` beyond rounding). Where the predictions
    become constant (e.g. everything replaced) the correlation is reported as 0.

    For a linear model f(x) = wᵀx + b and ``replacement="mean"``, removing a set S changes the predictions to
    f(x) − Σ_{i∈S} w_i (x_i − μ_i), so the deletion curve is the correlation of Σ_{i∉S} w_i x_i with y.

    Parameters
    ----------
    %(model)s
    %(data)s
    maps : array (K, *x_shape) or (*x_shape), Result, or dict of name → array or Result
        The maps to evaluate. A (K, *x_shape) map ranks the components of output k by its k-th map; an
        (*x_shape) map ranks them once for all outputs. Their shape must match the inputs.
    %(score)s
    replacement : {"mean", "baseline", "linear"}
        What a removed component becomes: the dataset mean of that component (computed by reading the inputs
        once before the model pass, without model calls), ``baseline``, or a noisy linear imputation from the
        kept neighbours (ROAD; inputs of shape (D,), (H, W) or (C, H, W)): each removed component is the
        weighted mean of its neighbours, so removed patches are filled smoothly from their border and the
        modified inputs stay closer to the data than a constant would, plus Gaussian noise of standard
        deviation ``noise``, drawn once per sample and keyed by (seed, sample index).
    baseline : float or array of shape x_shape
        The replacement value for "baseline"; for "linear", the value of removed patches with no kept neighbour
        at all (e.g. everything removed).
    fractions : sequence of float, optional
        Strictly increasing values in [0, 1] (default 0, 0.05, ..., 1).
    order : {"signed", "absolute"}
        Rank by the map's value (largest first: positive evidence first) or by its magnitude.
    regions : regions, optional
        Rank and remove whole regions (any form of :func:`igcorr.regions.as_region_masks`): a region's score is
        the map's mean over it, and the fraction counts regions. Components outside every region are never
        removed by deletion and always replaced by insertion.
    random_rankings : int
        Random rankings for the reference band (each a permutation keyed by (seed, ranking)); 0 for none.
    metric : "pearson" or callable
        "pearson": Pearson r of each output with its target, streamed. A callable ``metric(predictions,
        targets)`` receives float64 tensors (N, K) (the attributed scores on the modified inputs, and the
        encoded targets) and returns K values or one; it keeps every prediction in memory (N·C·2·F·K floats for
        C maps and rankings). For a metric over all outputs together, such as accuracy, give maps of shape
        x_shape, which rank the components once for all outputs.
    %(outputs)s
    batch_size : int, optional
        Samples per batch (default 64; 256 with "linear"). Results do not depend on it beyond float rounding.
    chunk_size : int
        Modified inputs per forward pass.
    noise : float
        Standard deviation of the noise of the linear imputation, in the units of the inputs (ROAD used 0.01 on
        normalised images); 0 for none.
    %(seed)s
    %(progress)s

    Returns
    -------
    Faithfulness
        Curves (K, F) per map, the random curves (R, K, F), the metric on the unmodified data; ``auc()``,
        ``table()``, ``plot()``.

    Raises
    ------
    ShapeError
        If a map's shape does not match the inputs (or its K the selected outputs), or ``baseline`` does not.
    InputError
        For fractions outside [0, 1] or not increasing, unknown options, a linear imputation of inputs that are
        not (D,), (H, W) or (C, H, W), fewer than two samples.
    ConstantTargetError
        If a target is constant over the dataset.
    """
    started = time.perf_counter()
    check_choice(replacement, "replacement", REPLACEMENTS)
    check_choice(order, "order", ORDERS)
    fraction_values = _fractions(fractions)
    random_rankings = check_int(random_rankings, "random_rankings", minimum=0, hint="random rankings for the band")
    if not (metric == "pearson" or callable(metric)):
        raise InputError(f"metric must be 'pearson' or a callable metric(predictions, targets), got {metric!r}")
    batch_size = check_optional_positive_int(batch_size, "batch_size", hint="samples per batch")
    chunk_size = check_positive_int(chunk_size, "chunk_size", hint="modified inputs per forward pass")
    noise = check_number(noise, "noise", non_negative=True, hint="standard deviation of the imputation noise")
    seed = check_seed(seed)
    progress = check_bool(progress, "progress")
    if outputs is None:
        outputs = _outputs_of_results(maps)
    named = named_maps(maps)
    if any(name.startswith("random") for name in named):
        raise InputError("map names starting with 'random' are reserved for the random rankings; rename the map")

    adapter = ModelAdapter(model, score)
    default_batch = _DEFAULT_LINEAR_BATCH if replacement == "linear" else _DEFAULT_BATCH
    source = DataSource(data, batch_size or default_batch)
    if source.has_length and len(source) < 2:
        raise InputError("a correlation over samples needs at least two samples" if len(source) else
                         "the dataset is empty: there is nothing to evaluate")
    with adapter.frozen():
        probe = adapter.prepare_inputs(source.head(4))
        x_shape = tuple(probe.shape[1:])
        n_features = int(np.prod(x_shape, dtype=np.int64))
        groups: dict[str, int] = {}
        for name, array in named.items():
            if array.shape == x_shape:
                groups[name] = 0
            elif array.shape[1:] == x_shape:
                groups[name] = array.shape[0]
            else:
                raise ShapeError(f"the map {name!r} has shape {array.shape} but the inputs have shape {x_shape}; give "
                                 f"maps of shape {x_shape} or (K, {', '.join(map(str, x_shape))})")
        if regions is not None:
            from igcorr.regions import as_region_masks

            region_names, region_masks = as_region_masks(regions, x_shape)
            unit_masks = torch.as_tensor(region_masks.reshape(len(region_masks), n_features))
            n_units = len(region_names)
        else:
            region_names, unit_masks, n_units = None, None, n_features
        reference = reference_tensor(baseline, x_shape, "baseline")
        replacer: Replacement | LinearImputation | None = None
        if replacement == "linear":
            replacer = LinearImputation(x_shape, reference, noise, seed)
        n_model_outputs = adapter.n_outputs(probe)
        adapter.check_batch_independence(probe)
        selected = resolve_outputs(outputs, n_model_outputs)
        k_outputs = len(selected)
        for name, group in groups.items():
            if group not in (0, k_outputs):
                raise ShapeError(f"the map {name!r} has {group} maps but {k_outputs} outputs are evaluated "
                                 f"({selected}); give one map per output, one map for all, or outputs=...")
        pair = source.in_memory_pair
        if pair is not None:
            targets = encode_targets(torch.as_tensor(pair[1]), n_model_outputs, selected)
            constant = (targets.std(dim=0) == 0).nonzero().reshape(-1).tolist()
            if constant:
                raise ConstantTargetError(f"the target of output {selected[constant[0]]} is constant over the "
                                          "dataset, so its correlation with the model is undefined")

        curve_names = list(named) + [f"random_{r}" for r in range(random_rankings)]
        rankings = _rankings(named, groups, unit_masks, order, n_units, random_rankings, seed)
        counts = removal_counts(fraction_values, n_units)
        n_fractions = len(fraction_values)
        masks, source_index = _plan(rankings, counts, unit_masks, n_features, len(curve_names), k_outputs)
        device, dtype = probe.device, probe.dtype
        mask_tensor = torch.as_tensor(np.stack(masks) if masks else np.zeros((0, n_features), dtype=bool),
                                      device=device)
        if replacement == "mean":
            reference = _input_mean(source, adapter, n_features, progress)
        if replacer is None:
            replacer = Replacement(reference)
        replacer = replacer.to(device, dtype)
        full_mask = torch.ones((1, n_features), dtype=torch.bool, device=device)
        output_index = torch.as_tensor(selected, dtype=torch.int64, device=device)
        gather_index = torch.as_tensor(source_index.reshape(1, -1, k_outputs), device=device)

        n_queries = len(curve_names) * 2 * n_fractions
        streamed = metric == "pearson"
        accumulator = _Pearson((n_queries, k_outputs), device) if streamed else None
        original_stats = _Pearson((k_outputs,), device)
        kept_predictions: list[torch.Tensor] = []
        kept_targets: list[torch.Tensor] = []
        kept_original: list[torch.Tensor] = []
        forwards = 0
        seen = 0
        total = len(source) if source.has_length else None
        with tqdm(total=total, desc="deletion/insertion", unit="sample", disable=not progress, leave=False) as bar:
            for batch in source.batches():
                x = adapter.prepare_inputs(batch.x)
                if tuple(x.shape[1:]) != x_shape:
                    raise ShapeError(f"sample {batch.start} has shape {tuple(x.shape[1:])} but earlier samples have "
                                     f"{x_shape}")
                b = len(x)
                indices = np.arange(batch.start, batch.start + b)
                y = encode_targets(batch.y, n_model_outputs, selected).to(device)
                flat = x.reshape(b, n_features)
                stack = [adapter.evaluate(x, output_index).to(torch.float64)[None]]
                modified = replacer.apply(flat, full_mask, [-1], indices)
                stack.append(_scores(adapter, modified, x_shape, output_index, chunk_size))
                per_forward = max(1, chunk_size // b)
                for start in range(0, len(masks), per_forward):
                    stop = min(start + per_forward, len(masks))
                    modified = replacer.apply(flat, mask_tensor[start:stop], list(range(start, stop)), indices)
                    stack.append(_scores(adapter, modified, x_shape, output_index, chunk_size))
                forwards += b * (len(masks) + 2)
                scores = torch.cat(stack).permute(1, 0, 2)  # (B, rows, K)
                predictions = torch.gather(scores, 1, gather_index.expand(b, -1, -1))  # (B, Q, K)
                original_stats.update(scores[:, 0], y)
                if streamed:
                    accumulator.update(predictions, y)
                else:
                    kept_predictions.append(predictions.cpu())
                    kept_targets.append(y.cpu())
                    kept_original.append(scores[:, 0].cpu())
                seen += b
                bar.update(b)
    if seen < 2:
        raise InputError("a correlation over samples needs at least two samples")
    if original_stats.m2_y is not None and bool((original_stats.m2_y == 0).any()):
        k = int((original_stats.m2_y == 0).nonzero()[0])
        raise ConstantTargetError(f"the target of output {selected[k]} is constant over the dataset, so its "
                                  "correlation with the model is undefined")
    tolerance = _CONSTANT_EPSILONS * torch.finfo(dtype).eps
    spread = torch.sqrt(original_stats.m2_p / original_stats.n)
    original = original_stats.correlation(spread, tolerance)
    if streamed:
        values = accumulator.correlation(spread.expand(n_queries, -1), tolerance)
        metric_name = "pearson"
    else:
        predictions = torch.cat(kept_predictions)
        targets = torch.cat(kept_targets)
        values = torch.stack([_user_metric(metric, predictions[:, q], targets, k_outputs) for q in range(n_queries)])
        original = _user_metric(metric, torch.cat(kept_original), targets, k_outputs)
        metric_name = getattr(metric, "__name__", type(metric).__name__)
    curves = values.reshape(len(curve_names), 2, n_fractions, k_outputs).permute(0, 1, 3, 2).cpu().numpy()
    n_maps = len(named)
    seconds = time.perf_counter() - started
    metadata = {
        "replacement": replacement, "replacement_detail": replacer.describe(), "order": order,
        "units": "regions" if region_names is not None else "components", "n_units": n_units,
        "regions": region_names, "counts": counts.tolist(), "n_samples": seen, "x_shape": list(x_shape),
        "random_rankings": random_rankings, "seed": seed, "batch_size": source.batch_size,
        "chunk_size": chunk_size, "distinct_masks": len(masks), "forward_evaluations": forwards,
        "seconds": seconds,
    }
    logger.info("deletion/insertion curves of %d maps on %d samples: %d forward evaluations in %.1f s", n_maps, seen,
                forwards, seconds)
    return Faithfulness(
        fractions=fraction_values, outputs=selected,
        deletion={name: curves[c, 0] for c, name in enumerate(named)},
        insertion={name: curves[c, 1] for c, name in enumerate(named)},
        random_deletion=curves[n_maps:, 0], random_insertion=curves[n_maps:, 1],
        original=original.cpu().numpy(), metric=metric_name, metadata=metadata)


def _rankings(named: dict[str, np.ndarray], groups: dict[str, int], unit_masks: torch.Tensor | None, order: str,
              n_units: int, random_rankings: int, seed: int) -> list[tuple[int, int, np.ndarray]]:
    """(curve, group, unit order) of every map's rankings, then the random ones; group −1 serves all outputs.

    A region's score is the mean of the (signed or absolute) map over it."""
    rankings: list[tuple[int, int, np.ndarray]] = []
    for c, (name, array) in enumerate(named.items()):
        per_output = array.reshape(max(groups[name], 1), -1)
        for g, values in enumerate(per_output):
            if unit_masks is not None:
                membership = unit_masks.numpy()
                magnitude = np.abs(values) if order == "absolute" else values
                ranking = np.argsort(-(membership * magnitude).sum(axis=1) / membership.sum(axis=1), kind="stable")
            else:
                ranking = _rank(values, order)
            rankings.append((c, g if groups[name] else -1, ranking))
    for r in range(random_rankings):
        permutation = torch.randperm(n_units, generator=generator_for(seed, _RANDOM_TAG, r)).numpy()
        rankings.append((len(named) + r, -1, permutation))
    return rankings


def _plan(rankings: list[tuple[int, int, np.ndarray]], counts: np.ndarray, unit_masks: torch.Tensor | None,
          n_features: int, n_curves: int, k_outputs: int) -> tuple[list[np.ndarray], np.ndarray]:
    """The distinct removal masks, and for every (curve, direction, fraction, output) the row of a batch's score
    stack that holds its predictions: 0 = the original inputs, 1 = everything replaced, 2 + u = mask u.

    Deletion at a count m removes the first m units of the ranking; insertion removes all the others."""
    masks: list[np.ndarray] = []
    known: dict[bytes, int] = {}
    source_index = np.zeros((n_curves, 2, len(counts), k_outputs), dtype=np.int64)
    for c, g, ranking in rankings:
        for direction in (0, 1):
            for j, count in enumerate(counts):
                units = ranking[:count] if direction == 0 else ranking[count:]
                if unit_masks is None:
                    mask = np.zeros(n_features, dtype=bool)
                    mask[units] = True
                elif len(units):
                    mask = unit_masks[torch.as_tensor(units, dtype=torch.int64)].any(dim=0).numpy()
                else:
                    mask = np.zeros(n_features, dtype=bool)
                removed = int(mask.sum())
                if removed == 0:
                    row = 0
                elif removed == n_features:
                    row = 1
                else:
                    key = np.packbits(mask).tobytes()
                    if key not in known:
                        known[key] = len(masks)
                        masks.append(mask)
                    row = 2 + known[key]
                source_index[c, direction, j, slice(None) if g < 0 else g] = row
    return masks, source_index


def _scores(adapter: ModelAdapter, modified: torch.Tensor, x_shape: tuple[int, ...], output_index: torch.Tensor,
            chunk_size: int) -> torch.Tensor:
    """Scores (U, B, K) in float64 of modified inputs (U, B, D)."""
    units, b = modified.shape[:2]
    flat = modified.reshape(units * b, *x_shape)
    return adapter.evaluate(flat, output_index, chunk=chunk_size).to(torch.float64).reshape(units, b, -1)


def _user_metric(metric: Callable[..., Any], predictions: torch.Tensor, targets: torch.Tensor, k: int) -> torch.Tensor:
    value = metric(predictions, targets)
    array = torch.as_tensor(np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value,
                                       dtype=np.float64))
    if array.numel() == 1:
        return array.reshape(1).expand(k).clone()
    if array.numel() != k:
        raise ShapeError(f"the metric returned {array.numel()} values; it must return one value or one per output "
                         f"({k})")
    return array.reshape(k)


def _input_mean(source: DataSource, adapter: ModelAdapter, n_features: int, progress: bool) -> torch.Tensor:
    """The dataset mean of every input component, float64 (D,): one read of the inputs, no model calls."""
    total = torch.zeros(n_features, dtype=torch.float64)
    count = 0
    length = len(source) if source.has_length else None
    with tqdm(total=length, desc="input mean", unit="sample", disable=not progress, leave=False) as bar:
        for batch in source.batches():
            x = adapter.prepare_inputs(batch.x).detach().to(device="cpu", dtype=torch.float64)
            total += x.reshape(len(x), n_features).sum(dim=0)
            count += len(x)
            bar.update(len(x))
    if count == 0 or not math.isfinite(float(total.abs().max())):
        raise InputError("the dataset mean of the inputs could not be computed (no samples, or values overflow)")
    return total / count
