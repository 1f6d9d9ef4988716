"""What a dataset run computes per sample: a path and an estimator, as typed objects.

A dataset-wise method streams per-sample attributions into a reducer. Which attributions is decided by one
:class:`Estimator`: a fixed quadrature rule on straight paths (:class:`FixedRule`), adaptive refinement to a
completeness tolerance (:class:`Adaptive`), Monte-Carlo points with per-point baselines (:class:`MonteCarlo`),
IG2's iterative gradient paths (:class:`IG2Path`), straight paths split at a layer (:class:`LayerRegion`, for
internal neurons), sampled orderings (:class:`ShapleySampling`, for BSC) or none at all
(:class:`NoAttribution`, for the statistics of the inputs themselves).

Estimators are frozen settings: :meth:`Estimator.bind` turns one into the per-batch function of one run, so
whatever a run resolves (an IG2 representation, a layer check) stays with that run. :meth:`Estimator.describe`
is what metadata and checkpoint fingerprints record. The keyword arguments of ``IGC.attribute`` map onto
these objects through :func:`estimator_from_options`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from igcorr import baselines as baseline_forms
from igcorr._validation import check_choice, check_int, check_number, check_positive_int
from igcorr.attribution.baseline_shapley import baseline_shapley, check_n_permutations
from igcorr.attribution.ig2 import OtherClassReferences
from igcorr.errors import InputError
from igcorr.model import Extras, ModelAdapter
from igcorr.paths.gradient import (DEFAULT_STEPS, Representation, check_clip, check_eps, check_step_size,
                                   check_steps, integrate_grad_path)
from igcorr.paths.integrator import PathIntegrals, PathIntegrator
from igcorr.paths.layer import LayerCut, integrate_layer, region_mask
from igcorr.paths.quadrature import Rule, stratified_nodes
from igcorr.paths.quadrature import rule as quadrature_rule
from igcorr.paths.straight import integrate_adaptive, integrate_straight

#: default number of quadrature nodes (and of Monte-Carlo points) per path
DEFAULT_STEPS_STRAIGHT = 64
#: default starting number of nodes of adaptive quadrature
DEFAULT_ADAPTIVE_START = 9

PerBatch = Callable[[torch.Tensor, np.ndarray, Extras], "PathIntegrals | None"]


@dataclass
class RunSetup:
    """What a dataset run resolved before streaming, handed to :meth:`Estimator.bind`.

    Attributes
    ----------
    adapter : ModelAdapter
        The model (behind the data's input layout).
    integrator : PathIntegrator
        Configured for the run's outputs.
    outputs : LongTensor (K,)
        The attributed outputs.
    n_model_outputs : int
        Number of scores the model produces.
    seed : int
        Seed of every random draw.
    baselines : BaselineSpec
        The baselines (prepared for the data).
    probe : Tensor
        The first samples of the data, on the model's device.
    probe_extras : dict of Tensor
        Their extra (not attributed) model inputs.
    """

    adapter: ModelAdapter
    integrator: PathIntegrator
    outputs: torch.Tensor
    n_model_outputs: int
    seed: int
    baselines: baseline_forms.BaselineSpec
    probe: torch.Tensor
    probe_extras: Extras = field(default_factory=dict)


class Estimator:
    """How the per-sample attributions of a dataset run are computed."""

    #: whether the run draws baselines (or references) for the estimator
    uses_baselines: bool = True

    def run_baselines(self, spec: baseline_forms.BaselineSpec) -> baseline_forms.BaselineSpec:
        """The baselines the run prepares, from the method's ``baselines`` argument."""
        return spec

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable settings for metadata and checkpoint fingerprints."""
        raise NotImplementedError

    def bind(self, run: RunSetup) -> PerBatch:
        """The per-batch function ``(x, indices, extras) -> PathIntegrals`` (or None) of one run; ``extras`` are
        the samples' model inputs that are not attributed."""
        raise NotImplementedError


@dataclass(frozen=True)
class FixedRule(Estimator):
    """Straight paths integrated with a fixed quadrature rule."""

    method: str = "trapezoid"
    n_steps: int = DEFAULT_STEPS_STRAIGHT
    rule: Rule = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rule", quadrature_rule(self.method, self.n_steps))

    def describe(self) -> dict[str, Any]:
        return {"n_steps": len(self.rule.nodes), "method": self.method}

    def bind(self, run: RunSetup) -> PerBatch:
        def per_batch(x: torch.Tensor, indices: np.ndarray, extras: Extras) -> PathIntegrals:
            baselines = run.baselines.for_samples(indices, x)
            return integrate_straight(run.integrator, x, baselines, self.rule, first_index=int(indices[0]),
                                      extras=extras)
        return per_batch


@dataclass(frozen=True)
class Adaptive(Estimator):
    """Straight paths, trapezoid rule refined per sample until the completeness residual |Σ IG − (f(x) − mean
    f(b))| is at most ``tolerance`` for every output, or ``max_steps`` nodes are reached."""

    tolerance: float
    start_steps: int = DEFAULT_ADAPTIVE_START
    max_steps: int = 1025

    def __post_init__(self) -> None:
        check_number(self.tolerance, "tolerance", positive=True)
        quadrature_rule("trapezoid", self.start_steps)
        check_int(self.max_steps, "max_steps")
        if self.max_steps < self.start_steps:
            raise InputError(f"max_steps={self.max_steps} is below the starting n_steps={self.start_steps}")

    def describe(self) -> dict[str, Any]:
        return {"n_steps": int(self.start_steps), "method": "trapezoid", "tolerance": float(self.tolerance),
                "max_steps": int(self.max_steps)}

    def bind(self, run: RunSetup) -> PerBatch:
        def per_batch(x: torch.Tensor, indices: np.ndarray, extras: Extras) -> PathIntegrals:
            baselines = run.baselines.for_samples(indices, x)
            return integrate_adaptive(run.integrator, x, baselines, float(self.tolerance),
                                      start_steps=int(self.start_steps), max_steps=int(self.max_steps),
                                      first_index=int(indices[0]), extras=extras)
        return per_batch


@dataclass(frozen=True)
class MonteCarlo(Estimator):
    """Monte-Carlo IG: each of a sample's ``points`` evaluations has its own baseline, drawn from the baseline
    distribution, and its own position α, stratified along the path. Unbiased for the map with that baseline
    distribution; the per-sample variance gives the map's standard error."""

    points: int = DEFAULT_STEPS_STRAIGHT

    def __post_init__(self) -> None:
        check_int(self.points, "n_steps", minimum=2, hint="the Monte-Carlo estimator's points per sample")

    def run_baselines(self, spec: baseline_forms.BaselineSpec) -> baseline_forms.BaselineSpec:
        return baseline_forms.per_point_draws(spec, int(self.points))

    def describe(self) -> dict[str, Any]:
        return {"n_steps": int(self.points), "estimator": "montecarlo"}

    def bind(self, run: RunSetup) -> PerBatch:
        one_node = Rule(np.array([0.5]), np.array([1.0]))

        def per_batch(x: torch.Tensor, indices: np.ndarray, extras: Extras) -> PathIntegrals:
            baselines = run.baselines.for_samples(indices, x)
            alphas = stratified_nodes(run.seed, indices, baselines.shape[1]).to(x.device)
            return integrate_straight(run.integrator, x, baselines, one_node, path_alphas=alphas,
                                      first_index=int(indices[0]), extras=extras)
        return per_batch


@dataclass(frozen=True)
class IG2Path(Estimator):
    """IG2 as the per-sample attribution of the dataset-wise methods (``IGC(...).attribute(..., path=IG2Path())``).

    The path of every (sample, reference) pair is the GradPath, and the GradCF endpoints take the place of the
    baselines: the reducers receive IG2 attributions, f(x) and mean_r f(GradCF_r), so Σ_i IGC_{k,i} =
    ρ(ŷ_k, y_k) + baseline_term_k (−Cov_n(mean_r f_k(GradCF_r), y_k)/(σ_y σ_ŷ)) up to the IG2 completeness error.
    The references come from the method's ``baselines`` argument: an int R draws R samples of another class
    than the sample's predicted one (:class:`igcorr.attribution.ig2.OtherClassReferences`), a tensor
    (R, *x_shape) gives references shared by all samples, any ``igcorr.baselines`` spec is used as it is. All K
    attributed outputs share one path per pair.

    Parameters
    ----------
    representation : None, "auto", str, nn.Module or callable
        As for :class:`igcorr.IG2`.
    steps : int
        Gradient steps k per path.
    step_size : float or "auto"
        η (see :meth:`igcorr.IG2.attribute`).
    clip : None or (lo, hi)
        Valid input range.
    eps : float
        ε of the gradient normalisation.
    """

    representation: Any = None
    steps: int = DEFAULT_STEPS
    step_size: float | str = "auto"
    clip: tuple[Any, Any] | None = None
    eps: float = 1e-12

    def __post_init__(self) -> None:
        check_steps(self.steps)
        check_step_size(self.step_size)
        check_clip(self.clip)
        check_eps(self.eps)

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable settings for result metadata."""
        representation = self.representation
        if not (representation is None or isinstance(representation, str)):
            representation = type(representation).__name__
        return {"path": "ig2", "representation": representation, "steps": int(self.steps),
                "step_size": self.step_size if isinstance(self.step_size, str) else float(self.step_size),
                "clip": None if self.clip is None else [_describe_bound(b) for b in self.clip]}

    def bind(self, run: RunSetup) -> PerBatch:
        representation = Representation(self.representation, run.adapter.model).resolved(run.adapter, run.probe)
        everything = torch.arange(run.n_model_outputs, device=run.probe.device)

        def per_batch(x: torch.Tensor, indices: np.ndarray, extras: Extras) -> PathIntegrals:
            spec = run.baselines
            if isinstance(spec, OtherClassReferences):
                predicted = run.adapter.evaluate(x, everything, extras=extras).argmax(dim=1)
                references = spec.for_samples(indices, x, predicted)
            else:
                references = spec.for_samples(indices, x)
            integrals, _ = integrate_grad_path(run.integrator, representation, x, references, steps=self.steps,
                                               step_size=self.step_size, clip=self.clip, eps=self.eps,
                                               first_index=int(indices[0]), extras=extras)
            return integrals
        return per_batch


def _describe_bound(bound: Any) -> Any:
    return float(bound) if isinstance(bound, (int, float, np.floating, np.integer)) else "tensor"


@dataclass(frozen=True)
class LayerRegion(Estimator):
    """Region-to-neuron attributions: straight paths split at ``layer``, for the input region ``region`` (a
    boolean mask of one sample's shape, shared by all samples)."""

    layer: Any
    region: Any
    method: str = "trapezoid"
    n_steps: int = 32
    jvp: str = "forward"

    def describe(self) -> dict[str, Any]:
        return {"n_steps": int(self.n_steps), "method": self.method, "jvp": self.jvp}

    def bind(self, run: RunSetup) -> PerBatch:
        rule = quadrature_rule(self.method, self.n_steps)
        cut = LayerCut(run.adapter, self.layer)
        cut.check(run.adapter, run.probe, run.probe_extras)
        region = region_mask(self.region, run.probe, per_sample=False)[:1]

        def per_batch(x: torch.Tensor, indices: np.ndarray, extras: Extras) -> PathIntegrals:
            baselines = run.baselines.for_samples(indices, x)
            return integrate_layer(run.integrator, cut, x, baselines, region.expand(len(x), *x.shape[1:]), rule,
                                   jvp=self.jvp, first_index=int(indices[0]), extras=extras)
        return per_batch


@dataclass(frozen=True)
class ShapleySampling(Estimator):
    """Baseline Shapley values by sampled orderings of the input components (keyed by seed, sample index and
    ordering index)."""

    n_permutations: int = 10

    def __post_init__(self) -> None:
        check_n_permutations(self.n_permutations)

    def describe(self) -> dict[str, Any]:
        return {"n_permutations": int(self.n_permutations)}

    def bind(self, run: RunSetup) -> PerBatch:
        def per_batch(x: torch.Tensor, indices: np.ndarray, extras: Extras) -> PathIntegrals:
            baselines = run.baselines.for_samples(indices, x)
            return baseline_shapley(run.adapter, x, baselines, run.outputs, n_permutations=int(self.n_permutations),
                                    seed=run.seed, indices=indices, chunk_points=run.integrator.chunk_points,
                                    extras=extras)
        return per_batch


@dataclass(frozen=True)
class NoAttribution(Estimator):
    """No per-sample attribution: the reducer works on the inputs themselves (naive statistics)."""

    uses_baselines = False

    def describe(self) -> dict[str, Any]:
        return {}

    def bind(self, run: RunSetup) -> PerBatch:
        return lambda x, indices, extras: None


ESTIMATORS = ("quadrature", "montecarlo")


def estimator_from_options(*, n_steps: int | None, method: str, tolerance: float | None, max_steps: int,
                           estimator: str, path: Any) -> Estimator:
    """The estimator that the keyword arguments of ``IGC.attribute`` (and its family) describe.

    ``path`` may also be an estimator object (``FixedRule``, ``Adaptive``, ``MonteCarlo`` or ``IG2Path``), which
    then says everything and the quadrature keywords must stay at their defaults.
    """
    if isinstance(path, str) and path == "ig2":
        path = IG2Path()
    if path not in (None, "straight"):
        if not isinstance(path, (FixedRule, Adaptive, MonteCarlo, IG2Path)):
            raise InputError(f"path must be None/'straight' (IG), 'ig2', an igcorr.IG2Path or a straight-path "
                             f"estimator (FixedRule, Adaptive, MonteCarlo), got {path!r}")
        if n_steps is not None or tolerance is not None or estimator != "quadrature" or method != "trapezoid":
            what = ("IG2Path(steps=..., step_size=...)" if isinstance(path, IG2Path)
                    else f"the {type(path).__name__} object")
            raise InputError(f"n_steps, method, tolerance and estimator set the straight-line quadrature; with "
                             f"path={type(path).__name__}(...) set them in {what} instead")
        return path
    check_choice(estimator, "estimator", ESTIMATORS)
    if estimator == "montecarlo":
        if tolerance is not None:
            raise InputError("tolerance applies to quadrature; the Monte-Carlo estimator reports a standard error")
        return MonteCarlo(DEFAULT_STEPS_STRAIGHT if n_steps is None else n_steps)
    if tolerance is not None:
        if method != "trapezoid":
            raise InputError("adaptive quadrature (tolerance=...) refines the trapezoid rule: use method='trapezoid'")
        check_number(tolerance, "tolerance", positive=True)
        return Adaptive(tolerance, DEFAULT_ADAPTIVE_START if n_steps is None else n_steps, max_steps)
    return FixedRule(method, DEFAULT_STEPS_STRAIGHT if n_steps is None else n_steps)


def baselines_for(estimator: Estimator, baselines: Any) -> baseline_forms.BaselineSpec:
    """The baseline spec of a run from the ``baselines`` argument (references for IG2 paths)."""
    if isinstance(estimator, IG2Path):
        if baselines is None:
            raise InputError("an IG2 path needs references: pass baselines=R (R samples of another class drawn per "
                             "sample) or a tensor of references (R, *x_shape)")
        if isinstance(baselines, (int, np.integer)) and not isinstance(baselines, bool):
            return OtherClassReferences(check_positive_int(baselines, "baselines"))
    return estimator.run_baselines(baseline_forms.resolve(baselines))


__all__ = ["Adaptive", "Estimator", "FixedRule", "IG2Path", "LayerRegion", "MonteCarlo", "NoAttribution",
           "RunSetup", "ShapleySampling", "estimator_from_options", "baselines_for"]
