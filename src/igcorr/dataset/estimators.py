"""What a dataset run computes per sample: a path and an estimator, as typed objects.

A dataset-wise method streams per-sample attributions into a reducer. Which attributions is decided by one
:class:`Estimator`: a fixed quadrature rule on straight paths (:class:`FixedRule`), adaptive refinement to a
completeness tolerance (:class:`Adaptive`), Monte-Carlo points with per-point baselines (:class:`MonteCarlo`),
IG2's iterative gradient paths (:class:`IG2Path`), straight paths split at a layer (:class:`LayerRegion`, for
internal neurons), sampled orderings (:class:`ShapleySampling`, for BSC) or none at all
(:class:`NoAttribution`, for the statistics of the inputs themselves). :class:`ShiftedGrid` integrates on
randomised grids whose errors have mean zero, and :class:`AutoRule` chooses its number of nodes for a
tolerance on the dataset map, from a pilot on the data (:meth:`Estimator.resolve`), checked at the end of the
run (:meth:`Estimator.finish`).

Estimators are frozen settings: :meth:`Estimator.bind` turns one into the per-batch function of one run, so
whatever a run resolves (an IG2 representation, a layer check) stays with that run. :meth:`Estimator.describe`
is what metadata and checkpoint fingerprints record. The keyword arguments of ``IGC.attribute`` map onto
these objects through :func:`estimator_from_options`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from igcorr import baselines as baseline_forms
from igcorr import distributed
from igcorr._validation import check_choice, check_finite, check_fraction, check_int, check_number, check_positive_int
from igcorr.attribution.baseline_shapley import baseline_shapley, check_n_permutations
from igcorr.attribution.ig2 import OtherClassReferences
from igcorr.data import DataSource, as_tensor
from igcorr.dataset.targets import encode_targets
from igcorr.errors import InputError
from igcorr.model import Extras, ModelAdapter, take_rows
from igcorr.paths.gradient import (DEFAULT_STEPS, Representation, check_clip, check_eps, check_step_size,
                                   check_steps, integrate_grad_path)
from igcorr.paths.integrator import PathIntegrals, PathIntegrator
from igcorr.paths.layer import LayerCut, integrate_layer, region_mask
from igcorr.paths.quadrature import Rule, shifted_nodes, stratified_nodes
from igcorr.paths.quadrature import rule as quadrature_rule
from igcorr.paths.straight import integrate_adaptive, integrate_straight
from igcorr.reducers.base import Computed
from igcorr.seeding import keyed_integers, keyed_permutation

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
    reader : SampleReader, optional
        Samples by index, for estimators that look at the data before the stream.
    """

    adapter: ModelAdapter
    integrator: PathIntegrator
    outputs: torch.Tensor
    n_model_outputs: int
    seed: int
    baselines: baseline_forms.BaselineSpec
    probe: torch.Tensor
    probe_extras: Extras = field(default_factory=dict)
    reader: "SampleReader | None" = None


class SampleReader:
    """A run's samples by global index, read before the stream: inputs (on the model's device and dtype),
    targets encoded for the attributed outputs and extra model inputs.

    In-memory (X, Y) pairs are indexed directly; other sources are read once from the start up to the last
    wanted sample (no model call).
    """

    def __init__(self, source: DataSource, prepare: Callable[[torch.Tensor], torch.Tensor], n_model_outputs: int,
                 outputs: list[int]) -> None:
        self.source, self.prepare = source, prepare
        self.n_model_outputs, self.outputs = n_model_outputs, outputs
        #: number of samples (None if the source does not know it)
        self.n_samples: int | None = len(source) if source.has_length else None
        #: samples per batch of the run (what fits the memory budget)
        self.batch_size = source.batch_size

    def read(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, Extras]:
        """Inputs (n, *x_shape), encoded targets (n, K) float64 and extras of the samples ``indices``, in that
        order."""
        wanted = np.asarray(indices, dtype=np.int64).reshape(-1)
        pair = self.source.in_memory_pair
        if pair is not None:
            raw = self.source.raw_inputs_at(wanted)
            x = self.source.encode(raw).detach()
            y = as_tensor(pair[1], "Y")[torch.as_tensor(wanted)]
            extras = self.source.extras(raw)
        else:
            rows: dict[int, tuple[torch.Tensor, torch.Tensor, Extras]] = {}
            wanted_set = set(wanted.tolist())
            with torch.no_grad():  # a read, not the attribution's pass over the data
                for batch in self.source.batches(0, int(wanted.max()) + 1):
                    for j in range(len(batch.x)):
                        if batch.start + j in wanted_set:
                            rows[batch.start + j] = (batch.x[j].clone(), batch.y[j].clone(), {
                                name: value.clone() for name, value in take_rows(batch.extras, slice(j, j + 1)).items()})
            missing = sorted(wanted_set - set(rows))
            if missing:
                raise InputError(f"sample {missing[0]} could not be read: the data holds fewer samples than it says")
            x = torch.stack([rows[int(i)][0] for i in wanted])
            y = torch.stack([rows[int(i)][1] for i in wanted])
            names = rows[int(wanted[0])][2].keys()
            extras = {name: torch.cat([rows[int(i)][2][name] for i in wanted]) for name in names}
        check_finite(x, "input", wanted)
        check_finite(y.reshape(len(y), -1), "target", wanted)
        x = self.prepare(x)
        targets = encode_targets(y.detach(), self.n_model_outputs, self.outputs).to(x.device)
        return x, targets, {name: value.to(x.device) for name, value in extras.items()}

    def everything(self, adapter: ModelAdapter, outputs: torch.Tensor,
                   chunk: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Every sample's encoded targets and attributed scores (N, K), float64 on the CPU, when the data are in
        memory (one forward pass per sample, no gradients); None for other sources."""
        if self.source.in_memory_pair is None or self.n_samples is None:
            return None
        targets, scores = [], []
        for begin in range(0, self.n_samples, max(self.batch_size, 1)):
            x, y, extras = self.read(np.arange(begin, min(begin + max(self.batch_size, 1), self.n_samples)))
            targets.append(y.cpu())
            scores.append(adapter.evaluate(x, outputs, chunk, extras).to(torch.float64).cpu())
        return torch.cat(targets), torch.cat(scores)


class Estimator:
    """How the per-sample attributions of a dataset run are computed."""

    #: whether the run draws baselines (or references) for the estimator
    uses_baselines: bool = True
    #: whether the per-batch integrals go to the reducer as the integrator returns them (nothing reads the
    #: attributions in between), so that their projection through a linear readout can be left to the reducer
    integrals_go_to_reducer: bool = False

    def run_baselines(self, spec: baseline_forms.BaselineSpec) -> baseline_forms.BaselineSpec:
        """The baselines the run prepares, from the method's ``baselines`` argument."""
        return spec

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable settings for metadata and checkpoint fingerprints."""
        raise NotImplementedError

    def resolve(self, run: RunSetup) -> "Estimator":
        """The estimator the run streams with, once it has seen the data (itself, unless it decides something
        from the data, as :class:`AutoRule` does). Called on every process with the same data and seed, so it
        must decide the same everywhere."""
        return self

    def bind(self, run: RunSetup) -> PerBatch:
        """The per-batch function ``(x, indices, extras) -> PathIntegrals`` (or None) of one run; ``extras`` are
        the samples' model inputs that are not attributed."""
        raise NotImplementedError

    def finish(self, computed: Computed, parameters: dict[str, Any]) -> None:
        """After the stream: add diagnostics to ``computed`` and entries to the metadata's ``parameters``
        (nothing by default)."""


@dataclass(frozen=True)
class FixedRule(Estimator):
    """Straight paths integrated with a fixed quadrature rule."""

    integrals_go_to_reducer = True

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


#: the automatic choice's first node count (the cheapest grids, measured on every drawn sample)
AUTO_START_STEPS = 2
#: default upper limit of the automatic choice's nodes per path
AUTO_MAX_STEPS = 1024
#: the automatic choice takes the cheapest grid whose estimated error is at most this share of the tolerance
AUTO_MARGIN = 0.8
#: how fast each family's map error is assumed to fall with the node count (error ∝ n_steps^-p) before two of
#: its grids were measured; afterwards p is fitted to them
AUTO_FIRST_EXPONENT = {"riemann_middle": 2.0, "shifted": 1.5}
#: most grids the pilot measures after the first before it settles
AUTO_MAX_LEVELS = 4
#: share of the memory budget that one grid's pilot integrals kept for the stream may take (at most three are
#: kept at a time), and that the first grid's per-sample errors may take for the systematic-error test
_CACHE_SHARE = 0.08
#: key of the draw of the pilot and check samples
_PILOT_STREAM = 0xA070
#: the first grids are measured on twice the pilot and check samples, at least the first and at most the
#: second number: the map's norm, the error's scale and the midpoint rule's systematic error come from them
_NORM_SAMPLES = (24, 64)
#: the two families the automatic choice compares
FAMILIES = ("riemann_middle", "shifted")


def integrate_shifted(run: RunSetup, x: torch.Tensor, indices: np.ndarray, extras: Extras, n_steps: int,
                      replicate: int = 0, with_scores: bool = True) -> PathIntegrals:
    """IG of the samples ``indices`` on shifted grids of ``n_steps`` nodes (draw ``replicate``)."""
    baselines = run.baselines.for_samples(indices, x)
    nodes = shifted_nodes(run.seed, indices, baselines.shape[1], n_steps, replicate).to(x.device)
    # the midpoint rule's n_steps weights (1/n_steps each); its nodes are replaced by every path's own
    return integrate_straight(run.integrator, x, baselines, quadrature_rule("riemann_middle", n_steps),
                              path_nodes=nodes, with_scores=with_scores, first_index=int(indices[0]), extras=extras)


def _integrate(run: RunSetup, family: str, x: torch.Tensor, indices: np.ndarray, extras: Extras, n_steps: int,
               with_scores: bool = True) -> PathIntegrals:
    """IG of the samples ``indices`` with ``n_steps`` nodes of a family (the midpoint rule or shifted grids)."""
    if family == "shifted":
        return integrate_shifted(run, x, indices, extras, n_steps, with_scores=with_scores)
    return integrate_straight(run.integrator, x, run.baselines.for_samples(indices, x),
                              quadrature_rule("riemann_middle", n_steps), with_scores=with_scores,
                              first_index=int(indices[0]), extras=extras)


def _check_shifted_steps(n_steps: Any, name: str = "n_steps") -> int:
    n_steps = check_int(n_steps, name, minimum=2, hint="nodes per path of a shifted grid")
    if n_steps % 2:
        raise InputError(f"a shifted grid places its nodes in antithetic pairs: {name} must be even, got {n_steps}")
    return n_steps


@dataclass(frozen=True)
class ShiftedGrid(Estimator):
    """Straight paths on randomised grids: ``n_steps`` nodes per path, in antithetic pairs shifted at random
    within n_steps/2 equal cells and stratified over the baselines of a sample
    (:func:`igcorr.paths.quadrature.shifted_nodes`).

    Every path's integral is estimated without bias, so the quadrature errors of different samples have mean
    zero and cancel in the dataset map (a fixed rule's errors can add up instead). Draws are keyed by
    (seed, sample index), so the maps do not depend on batching. One of the two families :class:`AutoRule`
    chooses from.
    """

    n_steps: int = DEFAULT_STEPS_STRAIGHT

    def __post_init__(self) -> None:
        _check_shifted_steps(self.n_steps)

    def describe(self) -> dict[str, Any]:
        return {"n_steps": int(self.n_steps), "method": "shifted"}

    def bind(self, run: RunSetup) -> PerBatch:
        def per_batch(x: torch.Tensor, indices: np.ndarray, extras: Extras) -> PathIntegrals:
            return integrate_shifted(run, x, indices, extras, int(self.n_steps))
        return per_batch


WEIGHTINGS = ("targets", "predictions", "mean")


@dataclass(frozen=True)
class AutoRule(Estimator):
    """The rule and nodes per path chosen for a tolerance on the dataset map, from the data itself.

    ``map_tolerance`` is the acceptable relative L2 error of the map, ‖map − converged map‖ / ‖converged map‖
    over all attributed outputs together. Two families are compared, each with its own error estimate:

    * the midpoint rule, whose per-path errors are smallest at kinks (ReLU networks) but fixed: over the
      samples they cancel only as far as they are unrelated to the map's weights. A pilot measures each
      sample's error (against the nested rule with three times the nodes) and extrapolates the sum of their
      squares to the N samples; the part that does not cancel is estimated from the same samples' weighted
      errors (the squared mean against the mean square), and the estimate is multiplied by the factor it adds;
    * shifted grids (:class:`ShiftedGrid`), whose errors have mean zero by construction: each sample's variance
      is half the squared difference of two independent draws, and the map's error is the root of their sum.

    Errors are weighted as the method weights the sample in the map (IGC: centred target over σ_y σ_ŷ) and
    divided by the map's norm estimated from the same samples. The pilot samples are drawn with the seed,
    stratified by their weight when the data are in memory. Both families are measured at 2 nodes first; then
    the smallest grid either family predicts is measured next (from how its error fell so far), until one is
    estimated under 80 % of the tolerance (one standard error of the pilot's mean added) and no smaller grid
    of the other family may save more than measuring it costs. That grid is used for every sample and the pilot's
    integrals on it are reused. Then ``check_samples`` other samples are measured on it; after the stream, with
    the run's own normalisation and map, they and the pilot give ``Result.diagnostics["map_error_estimate"]``
    (per output) and ``metadata["parameters"]["checked_map_error"]``, with a warning above the tolerance.

    Parameters
    ----------
    map_tolerance : float
        Acceptable relative L2 error of the dataset map, in (0, 1) (0.01: 1 %).
    pilot_samples : int, optional
        Samples the choice is made on (default N/16, between 12 and 32).
    check_samples : int, optional
        Other samples for the final check (default N/32, between 4 and 16).
    max_steps : int
        Most nodes per path (even); a tolerance not reached there is reported with a warning.
    weighting : {"targets", "predictions", "mean"}
        How the map weights the samples: by the centred targets (IGC), the centred predictions (IGaC) or
        equally (IGMoments' mean map). Set by the method.
    """

    map_tolerance: float = 0.01
    pilot_samples: int | None = None
    check_samples: int | None = None
    max_steps: int = AUTO_MAX_STEPS
    weighting: str = "targets"

    def __post_init__(self) -> None:
        check_fraction(self.map_tolerance, "map_tolerance", hint="the relative L2 error of the map, e.g. 0.01")
        if self.pilot_samples is not None:
            check_int(self.pilot_samples, "pilot_samples", minimum=2)
        if self.check_samples is not None:
            check_int(self.check_samples, "check_samples", minimum=0)
        _check_shifted_steps(self.max_steps, "max_steps")
        check_choice(self.weighting, "weighting", WEIGHTINGS)

    def describe(self) -> dict[str, Any]:
        return {"estimator": "auto", "map_tolerance": float(self.map_tolerance), "max_steps": int(self.max_steps)}

    def bind(self, run: RunSetup) -> PerBatch:
        return self.resolve(run).bind(run)

    def sizes(self, n_samples: int) -> tuple[int, int, int]:
        """(pilot samples, check samples, samples measured on the first grids) for a dataset of ``n_samples``:
        by default N/16 (12 to 32), N/32 (4 to 16) and 24 to 64 (N/16)."""
        pilot = self.pilot_samples if self.pilot_samples is not None else min(max(n_samples // 16, 12), 32)
        pilot = min(int(pilot), n_samples)
        check = self.check_samples if self.check_samples is not None else min(max(n_samples // 32, 4), 16)
        check = min(int(check), n_samples - pilot)
        norm = max(pilot + check, min(max(n_samples // 16, _NORM_SAMPLES[0]), _NORM_SAMPLES[1], n_samples))
        return pilot, check, norm

    def resolve(self, run: RunSetup) -> "Estimator":
        reader = run.reader
        if reader is None or reader.n_samples is None:
            raise InputError("map_tolerance extrapolates a pilot to the whole dataset and needs its number of "
                             "samples: pass an (X, Y) pair or a map-style Dataset, or choose n_steps yourself")
        n_samples = reader.n_samples
        n_pilot, n_check, n_norm = self.sizes(n_samples)
        counts = (n_pilot, n_check, n_norm - n_pilot - n_check)
        everything = reader.everything(run.adapter, run.outputs, run.integrator.chunk_points)
        centre = scale = None
        if everything is not None:  # in memory: the draws are stratified by the samples' weights in the map
            centre, scale = _weight_moments(self.weighting, *everything)
            size = map_weights(self.weighting, *everything, centre, scale).square().sum(dim=1).numpy()
            parts = _stratified_draw(run.seed, size, counts)
        else:
            drawn = keyed_permutation(run.seed, _PILOT_STREAM, np.arange(n_norm), n_samples)
            parts = np.split(drawn, np.cumsum(counts)[:-1])
        pilot = _Pilot(run, reader, np.concatenate([np.sort(part) for part in parts]), self.weighting, n_samples,
                       centre, scale)
        pilot_rows, check_rows = np.arange(n_pilot), np.arange(n_pilot, n_pilot + n_check)
        planner = _Planner(pilot, pilot_rows, AUTO_MARGIN * float(self.map_tolerance), int(self.max_steps))
        family, chosen = planner.choose()
        _, world_size = distributed.world()
        if world_size > 1:  # every rank measured the same pilot; rank 0's choice is everyone's
            family, chosen = distributed.all_gather((family, chosen))[0]
        level = planner.level(family, chosen)
        estimate = planner.error(family, level)
        if level is planner.first:  # the check samples were measured on the first grids already
            final = [level]
        else:
            final = [level] + ([pilot.measure(family, check_rows, chosen, keep_errors=family == "riemann_middle")]
                               if n_check else [])
        systematic = pilot.systematic_factor(final, with_error=True) if family == "riemann_middle" else (1.0, 0.0)
        return _AutoChoice(self, family, chosen, measured={f: sorted(e) for f, e in planner.errors.items()},
                           estimate=estimate, systematic=systematic, first=planner.first, final=final,
                           pilot=pilot, sizes=(n_pilot, n_check, n_norm))


@dataclass
class _Level:
    """One grid of a family measured on some pilot rows: each row's squared error (n, K) (shifted grids: the
    variance from two independent draws; the midpoint rule: against the nested rule with three times the
    nodes), and the rows' integrals to reuse (global index → attributions, prediction, baseline prediction).
    The first level holds the shifted grid at 2 nodes on every drawn sample, the sums that give the map's norm
    and the midpoint rule's 2-node level; midpoint levels keep the rows' weighted errors (n, K·D) for the
    systematic-error test when they fit the memory budget."""

    family: str
    steps: int
    rows: np.ndarray
    squared_errors: torch.Tensor
    cache: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    weighted_sum: torch.Tensor | None = None
    weighted_squares: torch.Tensor | None = None
    midpoint: "_Level | None" = None
    midpoint_errors: torch.Tensor | None = None


class _Planner:
    """The pilot's search: measures grids of the two families and says which is cheapest under the target."""

    def __init__(self, pilot: "_Pilot", pilot_rows: np.ndarray, target: float, max_steps: int) -> None:
        self.pilot, self.pilot_rows, self.target, self.max_steps = pilot, pilot_rows, target, max_steps
        self.first = pilot.measure_first(np.arange(len(pilot.indices)))
        self.norm_squared = pilot.map_norm_squared(self.first)
        self.levels: dict[str, dict[int, _Level]] = {"shifted": {AUTO_START_STEPS: self.first}, "riemann_middle": {}}
        self.errors: dict[str, dict[int, float]] = {
            "shifted": {AUTO_START_STEPS: self.error("shifted", self.first, bound=True)}, "riemann_middle": {}}
        # the midpoint rule at 2 nodes against the shifted grids' mean: only to predict where to start
        self.midpoint_start = self.error("riemann_middle", self.first.midpoint, independent=True)

    def error(self, family: str, level: _Level, bound: bool = False, independent: bool = False) -> float:
        """The estimated relative error of the N-sample map on this grid (with ``bound``, plus one standard
        error of the pilot's mean); for the midpoint rule, times the grid's systematic factor (unless
        ``independent``; see :meth:`_Pilot.systematic_factor`: with the factor's upper bound instead, the
        pilot asked for about twice the nodes the tolerance needs on the speed benchmark's W1)."""
        mean, error = self.pilot.spread(level, with_error=True)
        squared = (mean + (error if bound else 0.0)) / self.pilot.n_samples
        if family == "riemann_middle" and not independent:
            squared *= self.pilot.systematic_factor([level])
        return math.sqrt(max(squared, 0.0) / self.norm_squared)

    def level(self, family: str, steps: int) -> _Level:
        if steps not in self.levels[family]:
            self.levels[family][steps] = self.pilot.measure(family, self.pilot_rows, steps,
                                                            keep_errors=family == "riemann_middle")
        return self.levels[family][steps]

    def passing(self, family: str) -> list[int]:
        errors = self.errors[family]
        fitted = _fitted_errors(errors)
        return sorted(s for s, error in errors.items() if max(error, fitted.get(s, 0.0)) <= self.target)

    def choose(self) -> tuple[str, int]:
        """The family and node count, best first: the grid measured next is the smallest either family
        predicts (the midpoint rule's first from its 2-node error and usual exponent, then each family's next
        from how its error fell); once a grid passes, only smaller grids are measured, and only where what they
        may save on the run exceeds what measuring them costs on the pilot (3 or 2 integrals per pilot sample).
        On a tie the shifted grid is preferred (its estimate does not rest on the systematic factor)."""
        n_pilot, n_run = len(self.pilot_rows), self.pilot.n_samples - len(self.pilot_rows)
        start = self.midpoint_start
        pending: dict[str, int | None] = {
            "riemann_middle": int(min(max(_node_grid(AUTO_START_STEPS * (start / self.target) ** (
                1.0 / AUTO_FIRST_EXPONENT["riemann_middle"]), "riemann_middle"), AUTO_START_STEPS + 1),
                self.max_steps)) if np.isfinite(start) else None,
            "shifted": self._next("shifted", AUTO_START_STEPS)}
        for _ in range(2 * AUTO_MAX_LEVELS):
            best = self._best()
            options = []
            for family, steps in pending.items():
                if steps is None or steps in self.errors[family]:
                    continue
                cost = (3 if family == "riemann_middle" else 2) * steps * n_pilot
                if best is not None and (steps >= best[0] or (best[0] - steps) * n_run <= cost):
                    continue
                options.append((steps, family != "shifted", family))
            if not options:
                break
            steps, _, family = min(options)
            self.errors[family][steps] = self.error(family, self.level(family, steps), bound=True)
            pending[family] = self._next(family, steps)
            best = self._best()
            for name, levels in self.levels.items():  # keep the integrals of the grid that would be chosen
                for size, level in levels.items():
                    if level is not self.first and (best is None or (size, name) != best):
                        level.cache = {}
        best = self._best()
        if best is not None:
            return best[1], best[0]
        # none passed: the family whose largest grid came closest, at that grid
        largest = {family: max(errors) for family, errors in self.errors.items() if errors}
        family = min(largest, key=lambda name: (self.errors[name][largest[name]], name != "shifted"))
        return family, largest[family]

    def _best(self) -> tuple[int, str] | None:
        """The cheapest passing grid over both families (shifted first on a tie), or None."""
        found = [(passing[0], family != "shifted", family) for family in FAMILIES
                 for passing in [self.passing(family)] if passing]
        if not found:
            return None
        steps, _, family = min(found)
        return steps, family

    def _next(self, family: str, steps: int) -> int | None:
        """The grid of a family to measure after ``steps`` (see :func:`_next_steps`)."""
        return _next_steps(self.errors[family], steps, self.target, self.passing(family), self.max_steps,
                           self.pilot.n_samples, len(self.pilot_rows), family)


def _next_steps(errors: dict[int, float], steps: int, target: float, passing: list[int], max_steps: int,
                n_samples: int, n_pilot: int, family: str) -> int | None:
    """The next grid of a family the pilot measures, or None once the choice is made.

    The error is taken to fall like n_steps^-p, p fitted to every grid measured so far (least squares in
    log-log, between 0.75 and 3; the family's usual exponent while only one is). Below the target, a grid at
    most 3/4 as large is tried if it is predicted to pass and measuring it costs less than it saves; above it,
    the next grid is the predicted one, at least 1.25 times as large.
    """
    sizes = sorted(errors)
    exponent = AUTO_FIRST_EXPONENT[family]
    usable = [s for s in sizes if errors[s] > 0 and np.isfinite(errors[s])]
    if len(usable) >= 2:
        logs = np.log(np.asarray(usable, dtype=float))
        slope = np.polyfit(logs, np.log([errors[s] for s in usable]), 1)[0]
        exponent = float(np.clip(-slope, 0.75, 3.0))
    if passing:
        best = passing[0]
        failing_below = [s for s in sizes if s < best]
        guess = _node_grid(best * (errors[best] / target) ** (1.0 / exponent), family)
        floor = max(failing_below) if failing_below else 0
        if (floor < guess <= 0.75 * best and guess not in errors
                and (best - guess) * (n_samples - n_pilot) > 3 * guess * n_pilot):
            return guess
        return None
    if steps >= max_steps:
        return None
    error = errors[steps]
    guess = _node_grid(steps * (error / target) ** (1.0 / exponent), family) if np.isfinite(error) else 2 * steps
    return min(max(guess, _node_grid(1.25 * steps, family)), max_steps)


def _fitted_errors(errors: dict[int, float]) -> dict[int, float]:
    """The errors of the measured grids on the power law a·n_steps^-p fitted to them (least squares in log-log),
    when at least three were measured; else none."""
    usable = sorted(s for s, error in errors.items() if error > 0 and np.isfinite(error))
    if len(usable) < 3:
        return {}
    logs = np.log(np.asarray(usable, dtype=float))
    slope, intercept = np.polyfit(logs, np.log([errors[s] for s in usable]), 1)
    return {s: float(np.exp(intercept + slope * log)) for s, log in zip(usable, logs)}


def _node_grid(value: float, family: str = "shifted") -> int:
    """The smallest node count the automatic choice uses that is at least ``value``: every count (the midpoint
    rule) or every even count (shifted grids) up to 16, then multiples of 4 up to 32, of 8 up to 64 and of 16
    beyond."""
    value = max(float(value), float(AUTO_START_STEPS))
    first_step = 1 if family == "riemann_middle" else 2
    for step, limit in ((first_step, 16), (4, 32), (8, 64)):
        rounded = int(np.ceil(value / step - 1e-9)) * step
        if rounded <= limit:
            return rounded
    return int(np.ceil(value / 16 - 1e-9)) * 16


def _nested_rule(n_steps: int) -> Rule:
    """The 2·n_steps nodes that the midpoint rule with 3·n_steps nodes adds to the one with n_steps, with equal
    weights (that rule is one third of the coarse one plus two thirds of this one)."""
    fine = quadrature_rule("riemann_middle", 3 * n_steps).nodes
    added = np.delete(fine, np.arange(1, 3 * n_steps, 3))
    return Rule(added, np.full(len(added), 1.0 / len(added)))


class _Pilot:
    """The pilot and check samples of an automatic choice: inputs, targets, predictions and map weights.

    ``centre`` and ``scale`` (K,) of the weights come from every sample when known, else from these samples.
    """

    def __init__(self, run: RunSetup, reader: SampleReader, indices: np.ndarray, weighting: str,
                 n_samples: int, centre: torch.Tensor | None = None, scale: torch.Tensor | None = None) -> None:
        self.run, self.indices, self.weighting, self.n_samples = run, indices, weighting, n_samples
        self.batch_size = max(1, int(reader.batch_size))
        self.x, self.targets, self.extras = reader.read(indices)
        self.predictions = run.adapter.evaluate(self.x, run.outputs, run.integrator.chunk_points,
                                                self.extras).to(torch.float64)
        device = self.predictions.device
        self.centre = centre.to(device) if centre is not None else None
        self.weights = map_weights(weighting, self.targets, self.predictions, self.centre,
                                   scale.to(device) if scale is not None else None)
        per_sample = 8 * len(run.outputs) * int(np.prod(self.x.shape[1:], dtype=np.int64))
        self.cache_rows = run.integrator.budget.fraction(_CACHE_SHARE).bytes // max(per_sample, 1)

    def _batches(self, rows: np.ndarray) -> Iterator[tuple[torch.Tensor, np.ndarray, torch.Tensor, Extras]]:
        for begin in range(0, len(rows), self.batch_size):
            part = torch.as_tensor(rows[begin:begin + self.batch_size], device=self.x.device)
            yield part, self.indices[rows[begin:begin + self.batch_size]], self.x[part], take_rows(self.extras, part)

    @staticmethod
    def _keep(cache: dict, indices: np.ndarray, integrals: PathIntegrals) -> None:
        for j, index in enumerate(indices):
            cache[int(index)] = (integrals.attributions[j], integrals.predictions[j], integrals.baseline_predictions[j])

    def measure(self, family: str, rows: np.ndarray, steps: int, keep_errors: bool = False) -> _Level:
        """``rows`` on ``steps`` nodes of a family: each row's squared error and its integrals (kept for the
        stream when they fit the memory budget). Shifted grids: half the squared difference of two independent
        draws; the midpoint rule: against the nested rule with three times the nodes, error(n) ≈ (9/8)(I_n −
        I_3n) (and, with ``keep_errors``, each row's weighted error (n, K·D) when it fits the budget)."""
        run, keep = self.run, len(rows) <= self.cache_rows
        squared, cache, kept = [], {}, []
        for part, indices, x, extras in self._batches(rows):
            first = _integrate(run, family, x, indices, extras, steps)
            a = first.attributions.flatten(start_dim=2)
            if family == "shifted":
                second = integrate_shifted(run, x, indices, extras, steps, replicate=1, with_scores=False)
                squared.append(0.5 * (a - second.attributions.flatten(start_dim=2)).square().sum(dim=2))
            else:  # I_3n = I_n / 3 + 2 I_added / 3, so (9/8)(I_n − I_3n) = (3/4)(I_n − I_added)
                added = integrate_straight(run.integrator, x, run.baselines.for_samples(indices, x),
                                           _nested_rule(steps), with_scores=False, first_index=int(indices[0]),
                                           extras=extras)
                error = 0.75 * (a - added.attributions.flatten(start_dim=2))
                squared.append(error.square().sum(dim=2))
                if keep_errors:
                    kept.append((self.weights[part].unsqueeze(2) * error).flatten(start_dim=1))
            if keep:
                self._keep(cache, indices, first)
        empty = torch.zeros(0, len(run.outputs), dtype=torch.float64, device=self.x.device)
        level = _Level(family, steps, rows, torch.cat(squared) if squared else empty, cache)
        if kept:
            errors = torch.cat(kept)
            if run.integrator.budget.fraction(_CACHE_SHARE).fits(errors.numel() * 8):
                level.midpoint_errors = errors
        return level

    def measure_first(self, rows: np.ndarray) -> _Level:
        """Both families at 2 nodes on every drawn sample: the shifted grid twice (its variance and the map's
        norm) and the midpoint rule, whose squared difference to the shifted grids' mean, less that mean's
        variance, estimates each sample's squared error (only to predict where the midpoint rule starts)."""
        run, keep = self.run, len(rows) <= self.cache_rows
        steps, k_outputs = AUTO_START_STEPS, len(self.run.outputs)
        variances, differences, cache = [], [], {}
        weighted_sum: torch.Tensor | None = None
        weighted_squares = torch.zeros(k_outputs, dtype=torch.float64, device=self.x.device)
        for part, indices, x, extras in self._batches(rows):
            first = integrate_shifted(run, x, indices, extras, steps)
            second = integrate_shifted(run, x, indices, extras, steps, replicate=1, with_scores=False)
            midpoint = _integrate(run, "riemann_middle", x, indices, extras, steps, with_scores=False)
            a, b = first.attributions.flatten(start_dim=2), second.attributions.flatten(start_dim=2)
            variance = 0.5 * (a - b).square().sum(dim=2)
            variances.append(variance)
            difference = midpoint.attributions.flatten(start_dim=2) - 0.5 * (a + b)
            differences.append(difference.square().sum(dim=2) - 0.5 * variance)
            weighted = self.weights[part].unsqueeze(2) * 0.5 * (a + b)
            weighted_sum = weighted.sum(dim=0) if weighted_sum is None else weighted_sum + weighted.sum(dim=0)
            weighted_squares += weighted.square().sum(dim=(0, 2))
            if keep:
                self._keep(cache, indices, first)
        empty = torch.zeros(0, k_outputs, dtype=torch.float64, device=self.x.device)
        midpoint_level = _Level("riemann_middle", steps, rows, torch.cat(differences) if differences else empty, {})
        return _Level("shifted", steps, rows, torch.cat(variances) if variances else empty, cache,
                      weighted_sum, weighted_squares, midpoint_level)

    def spread(self, level: _Level, rows: np.ndarray | None = None, with_error: bool = False) -> Any:
        """Mean over the level's rows (or the given ones, a subset) of Σ_k w_k² e_k, e the squared error: a
        sample's contribution to N² ‖map error‖² when errors cancel over samples (and the standard error of
        that mean, for samples drawn without replacement, with ``with_error``)."""
        rows = level.rows if rows is None else rows
        if len(rows) == 0:
            return (0.0, 0.0) if with_error else 0.0
        position = {int(row): j for j, row in enumerate(level.rows)}
        selected = level.squared_errors[torch.as_tensor([position[int(row)] for row in rows])]
        weights = self.weights[torch.as_tensor(rows, device=self.x.device)]
        contributions = (weights.square() * selected.to(weights)).sum(dim=1)
        mean = float(contributions.mean())
        if not with_error:
            return mean
        n_rows = len(contributions)
        spread = float(contributions.var()) if n_rows > 1 else mean ** 2
        return mean, math.sqrt(max(spread, 0.0) * (1.0 - n_rows / self.n_samples) / n_rows)

    def map_norm_squared(self, level: _Level) -> float:
        """‖map‖² of the N-sample map, estimated from the level's rows (drawn without replacement): the square
        of their mean less the part their own sampling noise adds, and at least the part the N samples' own
        noise adds."""
        n_rows = len(level.rows)
        mean = level.weighted_sum / n_rows
        spread = float((level.weighted_squares.sum() - n_rows * mean.square().sum()) / max(n_rows - 1, 1))
        estimate = float(mean.square().sum()) - (1.0 - n_rows / self.n_samples) * spread / n_rows
        return max(estimate, spread / self.n_samples, 1e-300)

    def systematic_factor(self, levels: list[_Level], with_error: bool = False) -> Any:
        """How much the midpoint rule's map error exceeds what independent per-sample errors give, from the
        levels' rows (one grid): the squared map error estimated without that assumption (the square of the
        rows' mean weighted error, less the part their sampling noise adds), over the sum of their squares
        extrapolated to N (and, with ``with_error``, its jackknife standard error over the rows).

        That ratio is noisy when the rows are few against N (its jackknife standard error was 5 on the speed
        benchmark's W1, 16 of 128 samples, where the errors were in fact independent), but it is unbiased; an
        upper bound asked for twice the nodes the tolerance needs there, and a lower bound missed the part
        that does not cancel on a smooth one-output model (the estimate 2.5 times too low). The point estimate
        is used, at least 1. Infinite when the rows' errors were not kept (memory budget) or are too few."""
        if any(level.midpoint_errors is None for level in levels):
            return (math.inf, math.inf) if with_error else math.inf
        errors = torch.cat([level.midpoint_errors for level in levels])
        if len(errors) < 4:
            return (math.inf, math.inf) if with_error else math.inf
        gram = (errors @ errors.T).to(torch.float64).cpu().numpy()
        value = self._factor_of(gram)
        if not with_error:
            return value
        n_rows = len(gram)
        left_out = [self._factor_of(np.delete(np.delete(gram, row, axis=0), row, axis=1)) for row in range(n_rows)]
        spread = float(np.sum((np.asarray(left_out) - np.mean(left_out)) ** 2))
        return value, math.sqrt((n_rows - 1) / n_rows * spread)

    def _factor_of(self, gram: np.ndarray) -> float:
        """The systematic factor from the Gram matrix of some rows' weighted errors (see systematic_factor)."""
        n_rows, shrink = len(gram), 1.0 - len(gram) / self.n_samples
        trace = float(np.trace(gram))
        independent = trace / n_rows / self.n_samples
        if independent <= 0:
            return 1.0
        mean_squared = float(gram.sum()) / n_rows ** 2
        value = mean_squared - shrink * (trace - n_rows * mean_squared) / (n_rows - 1) / n_rows
        return max(1.0, value / independent)


def map_weights(weighting: str, targets: torch.Tensor, predictions: torch.Tensor, centre: torch.Tensor | None = None,
                scale: torch.Tensor | None = None) -> torch.Tensor:
    """Each sample's weight in a dataset map (n, K): (t − centre)/scale with t the targets (scale σ_t σ_ŷ) or
    the predictions (scale σ_ŷ²), or 1 for a mean map. ``centre`` (the mean of t) and ``scale`` come from the
    samples themselves when not given."""
    if weighting == "mean":
        return torch.ones_like(predictions)
    values = predictions if weighting == "predictions" else targets
    centre = values.mean(dim=0) if centre is None else centre.to(values)
    if scale is None:
        scale = values.std(dim=0, unbiased=False) * predictions.std(dim=0, unbiased=False)
    scale = torch.where(scale > 0, scale.to(values), torch.ones_like(values[0]))
    return (values - centre) / scale


def _weight_moments(weighting: str, targets: torch.Tensor, predictions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(centre, scale) of the map's weights over every sample (see :func:`map_weights`)."""
    values = predictions if weighting == "predictions" else targets
    return values.mean(dim=0), values.std(dim=0, unbiased=False) * predictions.std(dim=0, unbiased=False)


def _stratified_draw(seed: int, size: np.ndarray, counts: tuple[int, ...]) -> list[np.ndarray]:
    """Disjoint draws of ``counts`` samples, each stratified by ``size`` (N,): the samples not drawn yet, in the
    order of their size, are cut into as many equal strata as the draw has samples and one is taken from each
    (keyed by seed, draw and stratum). Each draw's mean is then an unbiased estimate of the mean over all
    samples, and it covers the rare large ones that dominate a sum."""
    taken = np.zeros(len(size), dtype=bool)
    order = np.argsort(size, kind="stable")
    draws = []
    for draw, count in enumerate(counts):
        if count == 0:
            draws.append(np.zeros(0, dtype=np.int64))
            continue
        strata = np.array_split(order[~taken[order]], count)
        picks = np.array([stratum[int(keyed_integers(seed, len(stratum), _PILOT_STREAM, draw, j))]
                          for j, stratum in enumerate(strata)], dtype=np.int64)
        taken[picks] = True
        draws.append(picks)
    return draws


class _AutoChoice(Estimator):
    """What an :class:`AutoRule` chose for one run: a family and its nodes, the pilot's integrals to reuse and
    the squared errors on that grid for the final check."""

    def __init__(self, settings: AutoRule, family: str, steps: int, *, measured: dict[str, list[int]],
                 estimate: float, systematic: tuple[float, float], first: _Level, final: list[_Level],
                 pilot: _Pilot, sizes: tuple[int, int, int]) -> None:
        self.settings, self.family, self.steps, self.measured = settings, family, int(steps), measured
        self.estimate, self.first, self.final, self.pilot = estimate, first, final, pilot
        #: the midpoint rule's systematic factor on the final rows and its jackknife standard error
        self.systematic, self.systematic_error = systematic
        self.n_pilot, self.n_check, self.n_norm = sizes
        self.cache = {index: entry for level in final for index, entry in level.cache.items()}

    def describe(self) -> dict[str, Any]:
        return {**self.settings.describe(), "method": self.family, "n_steps": self.steps,
                "pilot_samples": self.n_pilot, "check_samples": self.n_check, "first_samples": self.n_norm,
                "pilot_steps": self.measured,
                "systematic_factor": float(f"{self.systematic:.2g}") if math.isfinite(self.systematic) else None,
                "systematic_factor_error": (float(f"{self.systematic_error:.2g}")
                                            if math.isfinite(self.systematic_error) else None),
                "estimated_map_error": float(f"{self.estimate:.2g}")}

    def bind(self, run: RunSetup) -> PerBatch:
        cache, steps, family = self.cache, self.steps, self.family

        def per_batch(x: torch.Tensor, indices: np.ndarray, extras: Extras) -> PathIntegrals:
            entries = [cache.get(int(i)) for i in indices]
            missing = [j for j, entry in enumerate(entries) if entry is None]
            if len(missing) == len(entries):
                return _integrate(run, family, x, indices, extras, steps)
            if missing:
                rows = torch.as_tensor(missing, device=x.device)
                fresh = _integrate(run, family, x[rows], indices[missing], take_rows(extras, rows), steps)
                for j, row in enumerate(missing):
                    entries[row] = (fresh.attributions[j], fresh.predictions[j], fresh.baseline_predictions[j])
            return PathIntegrals(torch.stack([e[0] for e in entries]), torch.stack([e[1] for e in entries]),
                                 torch.stack([e[2] for e in entries]))
        return per_batch

    def finish(self, computed: Computed, parameters: dict[str, Any]) -> None:
        """The final check, with the run's own normalisation and map: the pilot and check samples' squared
        errors on the chosen grid (the check samples were not used to choose it), extrapolated to N (times the
        systematic factor for the midpoint rule), over the map's norm.

        The warning is given when the estimate exceeds the tolerance by more than the factor's own uncertainty
        (the estimate with the factor one standard error lower, at least 1, is above the tolerance): from a few
        samples against N the factor is noisy, and with the point factor the check warned on the speed
        benchmark's W1 (1.35 % estimated) for a map whose measured error was 0.80 %."""
        if computed.maps is None:
            return
        pilot, diagnostics = self.pilot, computed.diagnostics
        scale = None
        if pilot.weighting == "targets" and {"target_std", "prediction_std"} <= set(diagnostics):
            scale = diagnostics["target_std"] * diagnostics["prediction_std"]
        elif pilot.weighting == "predictions" and "prediction_std" in diagnostics:
            scale = diagnostics["prediction_std"].square()
        squared_weights = map_weights(pilot.weighting, pilot.targets, pilot.predictions, pilot.centre,
                                      scale.to(pilot.predictions) if scale is not None else None).square()
        rows = np.concatenate([level.rows for level in self.final])
        squared = torch.cat([level.squared_errors for level in self.final]).to(squared_weights)
        selected = squared_weights[torch.as_tensor(rows, device=squared_weights.device)]
        error_squared = (selected * squared).mean(dim=0) / pilot.n_samples
        factor = low_factor = 1.0
        if self.family == "riemann_middle" and math.isfinite(self.systematic):
            factor = self.systematic
            low_factor = max(1.0, self.systematic - self.systematic_error)
        maps = computed.maps.reshape(len(error_squared), -1).to(error_squared)
        norms = maps.square().sum(dim=1)
        independent = float((error_squared.clamp(min=0).sum() / norms.sum().clamp(min=1e-300)).sqrt())
        error_squared = error_squared * factor
        per_output = (error_squared.clamp(min=0) / norms.clamp(min=1e-300)).sqrt()
        overall = independent * math.sqrt(factor)
        diagnostics["map_error_estimate"] = per_output.to(computed.maps.device)
        parameters["checked_map_error"] = overall
        tolerance = float(self.settings.map_tolerance)
        if independent * math.sqrt(low_factor) > tolerance:
            exponent = AUTO_FIRST_EXPONENT[self.family]
            needed = _node_grid(self.steps * (overall / (AUTO_MARGIN * tolerance)) ** (1.0 / exponent), self.family)
            by_hand = (f"n_steps={min(needed, 4096)}, method='riemann_middle'" if self.family == "riemann_middle"
                       else f"path=ShiftedGrid({min(needed, 4096)})")
            warnings.warn(
                f"the map's estimated relative error is {overall:.2%}, above map_tolerance={tolerance:g}, with "
                f"{self.steps} nodes per path ({self.family}; checked on {len(rows)} samples"
                + (", at max_steps" if self.steps >= int(self.settings.max_steps) else "")
                + f"). Run again with a larger max_steps or {by_hand}", UserWarning, stacklevel=6)


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
                           estimator: str, path: Any, map_tolerance: float | None = None) -> Estimator:
    """The estimator that the keyword arguments of ``IGC.attribute`` (and its family) describe.

    ``path`` may also be an estimator object (``FixedRule``, ``Adaptive``, ``MonteCarlo``, ``ShiftedGrid``,
    ``AutoRule`` or ``IG2Path``), which then says everything and the quadrature keywords must stay at their
    defaults. ``map_tolerance`` lets an :class:`AutoRule` choose the rule and the nodes, so it excludes the
    keywords that choose them by hand; ``method="shifted"`` is a :class:`ShiftedGrid`.
    """
    if isinstance(path, str) and path == "ig2":
        path = IG2Path()
    if path not in (None, "straight"):
        if not isinstance(path, (FixedRule, Adaptive, MonteCarlo, ShiftedGrid, AutoRule, IG2Path)):
            raise InputError(f"path must be None/'straight' (IG), 'ig2', an igcorr.IG2Path or a straight-path "
                             f"estimator (FixedRule, Adaptive, MonteCarlo, ShiftedGrid, AutoRule), got {path!r}")
        if (n_steps is not None or tolerance is not None or estimator != "quadrature" or method != "trapezoid"
                or map_tolerance is not None):
            what = ("IG2Path(steps=..., step_size=...)" if isinstance(path, IG2Path)
                    else f"the {type(path).__name__} object")
            raise InputError(f"n_steps, method, tolerance, map_tolerance and estimator set the straight-line "
                             f"quadrature; with path={type(path).__name__}(...) set them in {what} instead")
        return path
    if map_tolerance is not None:
        if n_steps is not None or tolerance is not None or estimator != "quadrature" or method != "trapezoid":
            raise InputError("map_tolerance chooses the rule and the number of nodes from the data: leave n_steps, "
                             "method, tolerance and estimator at their defaults, or drop map_tolerance to choose "
                             "them yourself")
        max_steps = check_int(max_steps, "max_steps", minimum=2)
        return AutoRule(map_tolerance, max_steps=max_steps - max_steps % 2)
    check_choice(estimator, "estimator", ESTIMATORS)
    if method == "shifted" and estimator == "quadrature":
        if tolerance is not None:
            raise InputError("adaptive quadrature (tolerance=...) refines the trapezoid rule: use method='trapezoid'")
        return ShiftedGrid(DEFAULT_STEPS_STRAIGHT if n_steps is None else n_steps)
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


__all__ = ["Adaptive", "AutoRule", "Estimator", "FixedRule", "IG2Path", "LayerRegion", "MonteCarlo", "NoAttribution",
           "RunSetup", "SampleReader", "ShapleySampling", "ShiftedGrid", "estimator_from_options", "baselines_for",
           "integrate_shifted", "map_weights"]
