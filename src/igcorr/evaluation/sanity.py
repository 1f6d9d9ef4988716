"""Sanity checks of dataset-wise maps: does the map change when the model's parameters are randomised?

A map meant to explain a model must depend on that model. The model-parameter randomisation test (Adebayo et
al. 2018) re-draws the parameters layer by layer from the output, either cumulatively (cascading) or one layer
at a time (independent), recomputes the map on each randomised copy, and compares it with the original map by
rank correlation and structural similarity. A map that stays the same after every layer is randomised is
computed from the data alone, whatever it claims. The label counterpart (does the map differ from maps computed
with permuted targets?) is the permutation test of :meth:`igcorr.IGC.attribute` (``permutations=P``), whose
p-values are reported alongside when the original result holds them.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from igcorr._validation import check_bool, check_number, check_seed
from igcorr.errors import InputError, ModelError, ShapeError
from igcorr.evaluation.truth import named_maps
from igcorr.evaluation.similarity import rank_correlation, ssim
from igcorr.seeding import generator_for

__all__ = ["SanityCheck", "model_randomisation", "parameter_layers"]

logger = logging.getLogger(__name__)

#: tag of the parameter draws (kept apart from every other draw of a seed)
_RANDOMISE_TAG = 0x5EED_0ADD_0003
#: level of the label-permutation p-values counted as significant in the table
_ALPHA = 0.05


def parameter_layers(model: Any) -> list[str]:
    """Names of the model's modules that hold parameters of their own, from the output back to the input
    (reverse registration order); "" is the model itself when it holds parameters directly."""
    if not isinstance(model, nn.Module):
        raise ModelError(f"model-parameter randomisation needs an nn.Module, got {type(model).__name__} (a plain "
                         "function has no parameters to randomise)")
    names = [name for name, module in model.named_modules()
             if any(parameter.numel() for parameter in module.parameters(recurse=False))]
    return names[::-1]


@dataclass
class SanityCheck:
    """Result of :func:`model_randomisation`.

    Attributes
    ----------
    layers : list of str
        The randomised layers, in order (from the output).
    steps : list of dict
        One per randomised copy: ``mode`` ("cascading" or "independent"), ``layers`` (the layers randomised in
        that copy) and ``scores`` {map name: {"rank_correlation", "rank_correlation_abs", "ssim" (means over
        outputs), and the same with "_per_output"}} comparing the copy's map with the original.
    flagged : dict of str → bool
        True for a map that did not change: rank correlation and SSIM both at least ``threshold`` after every
        layer was randomised (the last cascading step; without cascading, after each independent step).
    label_permutation : dict of str → dict
        For original Results of a label-permutation test (``permutations=P``): ``p_min``, ``p_fwe_min``
        (family-wise) and ``share_significant`` (share of components with family-wise p < 0.05, or p < 0.05
        without it).
    threshold : float
        The similarity above which a map counts as unchanged.
    metadata : dict
        Seed, modes, run time.
    """

    layers: list[str]
    steps: list[dict[str, Any]]
    flagged: dict[str, bool]
    label_permutation: dict[str, dict[str, float | None]] = field(default_factory=dict)
    threshold: float = 0.9
    metadata: dict[str, Any] = field(default_factory=dict)

    def final(self, mode: str = "cascading") -> dict[str, dict[str, Any]] | None:
        """Scores of the last step of ``mode`` (for cascading: every layer randomised), or None."""
        chosen = [step for step in self.steps if step["mode"] == mode]
        return chosen[-1]["scores"] if chosen else None

    def table(self) -> list[dict[str, Any]]:
        """One row per map: ``randomised_<score>`` after all layers are randomised (cascading) and
        ``independent_min_<score>``, the lowest over the single-layer randomisations, for the scores
        ``rank_correlation``, ``rank_correlation_abs`` (of |map|) and ``ssim``; ``model_independent`` (the flag);
        ``label_p_min`` and ``label_p_fwe_min`` (the label-permutation test, when given)."""
        cascading = self.final("cascading")
        independent = [step["scores"] for step in self.steps if step["mode"] == "independent"]
        rows = []
        for name in self.flagged:
            row: dict[str, Any] = {"method": name}
            for key in ("rank_correlation", "rank_correlation_abs", "ssim"):
                row[f"randomised_{key}"] = None if cascading is None else cascading[name][key]
                values = [scores[name][key] for scores in independent if np.isfinite(scores[name][key])]
                row[f"independent_min_{key}"] = float(min(values)) if values else None
            row["model_independent"] = self.flagged[name]
            permutation = self.label_permutation.get(name, {})
            row["label_p_min"] = permutation.get("p_min")
            row["label_p_fwe_min"] = permutation.get("p_fwe_min")
            rows.append(row)
        return rows

    def plot(self, *, title: str | None = None) -> Any:
        """Rank correlation and SSIM with the original map after each cascading step (lines) and each
        independent step (markers), per map.

        Returns
        -------
        matplotlib.figure.Figure
        """
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
        cascading = [step for step in self.steps if step["mode"] == "cascading"]
        independent = [step for step in self.steps if step["mode"] == "independent"]
        labels = [step["layers"][-1] or "(model)" for step in (cascading or independent)]
        positions = np.arange(len(labels))
        for axis, key, label in zip(axes, ("rank_correlation", "ssim"), ("Spearman rank correlation", "SSIM")):
            for index, name in enumerate(self.flagged):
                colour = f"C{index % 10}"
                if cascading:
                    axis.plot(positions, [step["scores"][name][key] for step in cascading], color=colour, marker="o",
                              markersize=3, label=name + (" (flagged)" if self.flagged[name] else ""))
                if independent:
                    axis.plot(positions[:len(independent)], [step["scores"][name][key] for step in independent],
                              color=colour, marker="x", linestyle="none",
                              label=None if cascading else name + (" (flagged)" if self.flagged[name] else ""))
            axis.axhline(self.threshold, color="0.6", linestyle="--", linewidth=0.8)
            axis.set_xticks(positions, labels, rotation=45, ha="right", fontsize=7)
            axis.set_ylabel(f"{label} with the original map")
            axis.set_xlabel("randomised down to layer (lines: cascading, x: that layer alone)")
            axis.set_ylim(-1.05, 1.05)
        axes[0].legend(fontsize=7)
        if title:
            figure.suptitle(title, fontsize=10)
        figure.tight_layout()
        return figure

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable steps, flags, p-values and table."""
        return {"layers": self.layers, "steps": self.steps, "flagged": self.flagged,
                "label_permutation": self.label_permutation, "threshold": self.threshold, "table": self.table(),
                "metadata": self.metadata}


def _draws(model: nn.Module, layers: list[str], everything: list[str], seed: int) -> dict[str, dict[str, torch.Tensor]]:
    """New values of every parameter of each layer: a Gaussian with the parameter's own mean and standard
    deviation (1, or its absolute mean, when it has no spread), keyed by (seed, layer position, parameter
    position) so a layer gets the same draw in every copy."""
    modules = dict(model.named_modules())
    draws: dict[str, dict[str, torch.Tensor]] = {}
    for name in layers:
        position = everything.index(name)
        new: dict[str, torch.Tensor] = {}
        changed = False
        for index, (key, parameter) in enumerate(modules[name].named_parameters(recurse=False)):
            if parameter.numel() == 0:
                continue
            values = parameter.detach().to(device="cpu", dtype=torch.float64)
            mean = float(values.mean())
            spread = float(values.std(unbiased=False)) if values.numel() > 1 else 0.0
            scale = spread if spread > 0 else (abs(mean) or 1.0)
            noise = torch.randn(values.shape, generator=generator_for(seed, _RANDOMISE_TAG, position, index),
                                dtype=torch.float64)
            drawn = (mean + scale * noise).to(dtype=parameter.dtype, device=parameter.device)
            changed = changed or not torch.equal(drawn, parameter.detach())
            new[key] = drawn
        if not changed:
            raise ModelError(f"randomising layer {name or '(the model itself)'!r} leaves every parameter unchanged; "
                             "the sanity check needs layers whose parameters can be re-drawn")
        draws[name] = new
    return draws


def _randomised(model: nn.Module, draws: dict[str, dict[str, torch.Tensor]], layers: Sequence[str]) -> nn.Module:
    """A deep copy of ``model`` with the given layers' parameters replaced by their draws."""
    clone = copy.deepcopy(model)
    modules = dict(clone.named_modules())
    with torch.no_grad():
        for name in layers:
            parameters = dict(modules[name].named_parameters(recurse=False))
            for key, value in draws[name].items():
                parameters[key].copy_(value)
    return clone


def _per_output(array: np.ndarray) -> np.ndarray:
    """(K, *x_shape) maps as they are; a 1-D array is one map."""
    return array[None] if array.ndim == 1 else array


def _compare(original: dict[str, np.ndarray], randomised: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    if set(original) != set(randomised):
        raise InputError(f"the attribution callable returned maps {sorted(randomised)} for a randomised model but "
                         f"{sorted(original)} for the original; it must return the same maps every time")
    scores: dict[str, dict[str, Any]] = {}
    for name, first in original.items():
        second = randomised[name]
        if first.shape != second.shape:
            raise ShapeError(f"the map {name!r} has shape {second.shape} for a randomised model but {first.shape} "
                             "for the original")
        first_k, second_k = _per_output(first), _per_output(second)
        spearman = [rank_correlation(a, b) for a, b in zip(first_k, second_k)]
        spearman_abs = [rank_correlation(np.abs(a), np.abs(b)) for a, b in zip(first_k, second_k)]
        structure = [ssim(a, b) for a, b in zip(first_k, second_k)]

        def mean(values: list[float]) -> float:
            finite = [v for v in values if np.isfinite(v)]
            return float(np.mean(finite)) if finite else float("nan")

        scores[name] = {"rank_correlation": mean(spearman), "rank_correlation_abs": mean(spearman_abs),
                        "ssim": mean(structure), "rank_correlation_per_output": spearman,
                        "rank_correlation_abs_per_output": spearman_abs, "ssim_per_output": structure}
    return scores


def _label_permutation(original: Any) -> dict[str, dict[str, float | None]]:
    from igcorr.result import Result

    items = original.items() if isinstance(original, dict) else [("map", original)]
    found: dict[str, dict[str, float | None]] = {}
    for name, value in items:
        inference = value.metadata.get("inference") if isinstance(value, Result) else None
        permuted = isinstance(inference, dict) and int(inference.get("permutations") or 0) > 0
        if permuted and "p_value" in value.extra_maps:
            p = np.asarray(value.extra_maps["p_value"], dtype=np.float64)
            fwe = value.extra_maps.get("p_fwe")
            counted = np.asarray(fwe if fwe is not None else p, dtype=np.float64)
            found[name] = {"p_min": float(p.min()),
                           "p_fwe_min": None if fwe is None else float(np.min(fwe)),
                           "share_significant": float((counted < _ALPHA).mean())}
    return found


def model_randomisation(model: nn.Module, attribute: Callable[[nn.Module], Any], *, original: Any = None,
                        cascading: bool = True, independent: bool = True, layers: Sequence[str] | None = None,
                        seed: int = 0, threshold: float = 0.9, progress: bool = True) -> SanityCheck:
    """Model-parameter randomisation test of dataset-wise maps.

    The parameter-holding modules are randomised from the output back to the input (reverse registration
    order): cascading (the top layer, then the top two, ... until every layer is randomised) and/or independent
    (each layer alone). Each randomised model is a deep copy of ``model`` (which is never modified) whose
    layer's parameters are re-drawn from a Gaussian with that parameter's own mean and standard deviation
    (keyed by ``seed`` and the layer's position, so a layer gets the same draw in every copy).
    ``attribute(copy)`` recomputes the maps on each copy; each map is compared with the original by the
    Spearman rank correlation (signed and of the absolute values) and the structural similarity (SSIM, maps
    normalised by their largest magnitude), averaged over outputs.

    Parameters
    ----------
    model : nn.Module
        The trained model.
    attribute : callable
        ``attribute(model)`` returns the maps: a Result, an array (K, *x_shape) (a 1-D array is one map), or a
        dict of name → Result or array for several methods at once, e.g. ``lambda m: {"IGC":
        igcorr.IGC(m).attribute(data, ...), "naive": igcorr.NaiveCorrelation(m).attribute(data, ...)}``. It
        must return the same maps every time.
    original : Result, array or dict, optional
        The maps of ``model`` if already computed (e.g. with ``permutations=P``, whose p-values are then
        reported); by default ``attribute(model)``.
    cascading, independent : bool
        Which randomisations to run (at least one).
    layers : sequence of str, optional
        Names (``model.named_modules()``) of the layers to randomise; default every module that holds
        parameters. They are randomised in the order of :func:`parameter_layers` whatever the order given.
    seed : int
        Seed of the parameter draws.
    threshold : float
        A map whose rank correlation and SSIM with the original both stay at least this after every layer is
        randomised is flagged as not depending on the model.
    progress : bool
        Show a progress bar over the randomised copies.

    Returns
    -------
    SanityCheck
        Per-step scores, flags, label-permutation p-values; ``table()`` and ``plot()``.

    Raises
    ------
    ModelError
        If the model is not an ``nn.Module``, holds no parameters, or a layer's parameters cannot change.
    InputError
        For a layer name that is not a parameter-holding module of the model, or no randomisation asked for.
    """
    started = time.perf_counter()
    if not callable(attribute):
        raise InputError(f"attribute must be a callable attribute(model) returning maps, got {attribute!r}")
    cascading = check_bool(cascading, "cascading")
    independent = check_bool(independent, "independent")
    if not (cascading or independent):
        raise InputError("ask for cascading=True, independent=True or both: there is nothing to run")
    seed = check_seed(seed)
    threshold = check_number(threshold, "threshold", hint="similarity above which a map counts as unchanged")
    progress = check_bool(progress, "progress")
    everything = parameter_layers(model)
    if not everything:
        raise ModelError("the model holds no parameters, so randomising it changes nothing; the model-parameter "
                         "randomisation check needs a model with parameters")
    if layers is None:
        chosen = list(everything)
    else:
        if isinstance(layers, str) or not all(isinstance(name, str) for name in layers):
            raise InputError(f"layers must be a list of module names, got {layers!r}")
        unknown = [name for name in layers if name not in everything]
        if unknown:
            raise InputError(f"the model has no parameter-holding layer {unknown[0]!r}; its layers from the output "
                             f"are {everything}")
        if not layers:
            raise InputError("layers is empty; give at least one layer name, or None for all")
        chosen = [name for name in everything if name in set(layers)]
    draws = _draws(model, chosen, everything, seed)  # checks every layer can change, before any attribution

    plan: list[tuple[str, list[str]]] = []
    if cascading:
        plan += [("cascading", chosen[: i + 1]) for i in range(len(chosen))]
    if independent:
        plan += [("independent", [name]) for name in chosen]
    reference = named_maps(attribute(model) if original is None else original, "the original maps")
    for array in reference.values():
        ssim(_per_output(array)[0], _per_output(array)[0])  # refuses maps SSIM cannot compare, before the copies
    steps: list[dict[str, Any]] = []
    for mode, randomised_layers in tqdm(plan, desc="randomisation", unit="model", disable=not progress, leave=False):
        clone = _randomised(model, draws, randomised_layers)
        maps = named_maps(attribute(clone), "the maps of a randomised model")
        del clone
        steps.append({"mode": mode, "layers": list(randomised_layers), "scores": _compare(reference, maps)})
        logger.info("%s randomisation down to %r: %s", mode, randomised_layers[-1], {
            name: round(values["rank_correlation"], 3) for name, values in steps[-1]["scores"].items()})

    def unchanged(scores: dict[str, Any]) -> bool:
        return bool(scores["rank_correlation"] >= threshold and scores["ssim"] >= threshold)

    flagged = {}
    for name in reference:
        if cascading:
            flagged[name] = unchanged(steps[len(chosen) - 1]["scores"][name])
        else:
            flagged[name] = all(unchanged(step["scores"][name]) for step in steps)
    metadata = {"seed": seed, "cascading": cascading, "independent": independent,
                "seconds": time.perf_counter() - started, "draw": "Gaussian with each parameter's mean and std"}
    return SanityCheck(layers=chosen, steps=steps, flagged=flagged,
                       label_permutation=_label_permutation(original), threshold=threshold, metadata=metadata)
