"""Dataset-wise attribution methods: a per-sample attribution streamed into a mergeable reducer.

Each method says which per-sample quantity it computes (an :class:`~igcorr.dataset.estimators.Estimator`) and
which reducer it feeds; :class:`~igcorr.dataset.run.DatasetRun` does the rest (data, targets, baselines, path
integrals, checkpoints, processes, metadata) in one loop shared by all of them.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable, Sequence
from statistics import NormalDist
from typing import Any

import numpy as np
import torch

from igcorr import baselines as baseline_forms
from igcorr._docs import fill_doc
from igcorr._validation import check_bool, check_choice, check_optional_positive_int
from igcorr.data import DataSource
from igcorr.dataset.checkpoint import DEFAULT_EVERY_SECONDS
from igcorr.dataset.estimators import (Adaptive, AutoRule, Estimator, FixedRule, NoAttribution, ShapleySampling,
                                       baselines_for, estimator_from_options)
from igcorr.dataset.run import DatasetRun, EngineOptions, RunOptions, RunOutcome
from igcorr.dataset.targets import encode_targets, target_columns
from igcorr.errors import InputError
from igcorr.inputs import InputLayout
from igcorr.model import ModelAdapter, OutputSelector, ScoreLike
from igcorr.paths.budget import MemoryBudget
from igcorr.paths.integrator import OUTPUT_STRATEGIES
from igcorr.reducers import CorrelationReducer, MomentsReducer, PearsonReducer, Reducer, TTestReducer
from igcorr.reducers.correlation import check_not_constant
from igcorr.reducers.inference import InferencePlan
from igcorr.result import Result


class DatasetMethod:
    """Base of the dataset-wise methods.

    Parameters
    ----------
    %(model)s
    %(score)s
    %(output)s
    max_memory : int, optional
        The memory budget in bytes (default: a quarter of the available memory, at most 4 GiB). The chunks of
        path points take at most three quarters of it and a batch's per-sample buffers (attributions, baselines,
        Monte-Carlo draws) the last quarter (at most 128 MiB when ``batch_size`` is not given); the state the run
        accumulates (maps, permutations, bootstrap replicates) must fit it too, which is checked before any path
        integral. See :mod:`igcorr.paths.budget`.
    output_strategy : {"auto", "loop", "batched"}
        One backward pass per output, or all outputs in one batched pass; "auto" times both on the first chunks.
    chunk_points : int, optional
        Path points per forward pass; by default the fastest size that fits ``max_memory``, found by timing
        the first chunks (``metadata["engine"]["microseconds_per_point"]``).
    readout : "auto", False, str or nn.Linear
        Linear-readout shortcut for models with more attributed outputs than readout inputs (exact); "auto"
        detects a final ``nn.Linear``. Reported in ``Result.metadata["engine"]``.
    first_layer : "auto", False, str or nn.Module
        First-layer shortcut for straight paths (exact): when an ``nn.Linear`` or a zero-padded convolution
        alone reads the input, the points are placed in its output space and each path's gradients go back
        through it once, instead of through it at every point and for every output. "auto" detects it; False
        disables it. Reported in ``Result.metadata["engine"]``.
    inputs : igcorr.inputs layout, optional
        How the model's inputs are attributed. By default one tensor per sample is attributed as it is, and
        samples holding a tuple or dict of tensors (a multi-input model, called as ``model(*inputs)`` or
        ``model(**inputs)``) are attributed input by input (``result["name"]``, ``result.input_maps()``).
        ``igcorr.inputs.Embedded("embedding_module")`` attributes token or category ids in embedding space.
    autocast : None, "bfloat16" or "float16"
        Evaluate the model under ``torch.autocast`` (gradients accumulated in float64); off by default.
    compile : bool or dict
        Run the model's forward pass (and so its backward pass) through ``torch.compile`` during the path
        integrals; a dict is passed to ``torch.compile`` as keyword arguments (e.g. ``{"backend":
        "aot_eager"}``). Off by default: compiling costs seconds to minutes up front and does not always pay
        on the CPU (see the speed page of the documentation). The last, smaller chunk of a run triggers one
        recompilation for its shape.
    """

    name = "dataset_method"

    def __init__(self, model: Callable[..., torch.Tensor], score: ScoreLike = None, *,
                 max_memory: int | None = None, output_strategy: str = "auto", readout: Any = "auto",
                 first_layer: Any = "auto", inputs: InputLayout | None = None, autocast: str | None = None,
                 compile: bool | dict = False, chunk_points: int | None = None, output: OutputSelector = None) -> None:
        MemoryBudget.of(max_memory)  # validates max_memory now, not at the first call
        check_choice(output_strategy, "output_strategy", OUTPUT_STRATEGIES)
        check_optional_positive_int(chunk_points, "chunk_points")
        self.adapter = ModelAdapter(model, score, readout=readout, first_layer=first_layer, autocast=autocast,
                                    compile=compile, output=output)
        self.engine_options = EngineOptions(max_memory, chunk_points, output_strategy, inputs)
        self.model = model
        self.score = score

    # -- hooks for subclasses
    def make_reducer(self, outputs: list[int]) -> Reducer:
        """A fresh reducer for the attributed ``outputs``."""
        raise NotImplementedError

    def check_targets(self, source: DataSource, n_model_outputs: int, outputs: list[int]) -> None:
        """Refuse unusable targets before spending any compute (default: constant in-memory targets)."""
        pair = source.in_memory_pair
        if pair is None:
            return
        targets = encode_targets(pair[1], n_model_outputs, outputs)
        check_not_constant(targets.std(dim=0, unbiased=False), targets.mean(dim=0), "target", outputs)

    def prepare_run(self, source: DataSource, n_model_outputs: int, outputs: list[int],
                    parameters: dict[str, Any]) -> None:
        """Called once before streaming, after the outputs are resolved (e.g. to derive settings from the data).

        May add JSON-serialisable entries to ``parameters``, which go into the result's metadata.
        """

    # -- the run
    def _run(self, data: Any, *, estimator: Estimator, baselines: baseline_forms.BaselineSpec | None,
             outputs: int | Sequence[int] | None, options: RunOptions, inference: InferencePlan | None = None,
             parameters: dict[str, Any] | None = None, adapter: ModelAdapter | None = None) -> Result:
        run = DatasetRun(self.name, adapter or self.adapter, self.engine_options)
        outcome = run.run(data, estimator=estimator, baselines=baselines, make_reducer=self.make_reducer,
                          outputs=outputs, options=options, inference=inference, parameters=parameters,
                          check_targets=self.check_targets, prepare=self.prepare_run)
        return self._result(outcome, inference)

    def _result(self, outcome: RunOutcome, inference: InferencePlan | None) -> Result:
        computed, k, shape = outcome.computed, len(outcome.outputs), outcome.map_shape
        return Result(
            method=self.name,
            maps=computed.maps.reshape(k, *shape).cpu().numpy(),
            diagnostics={name: value.cpu().numpy() for name, value in computed.diagnostics.items()},
            extra_maps={name: value.reshape(k, *shape).cpu().numpy() for name, value in computed.extra_maps.items()},
            metadata=outcome.metadata,
            region_inference=_region_arrays(computed.regions, inference),
        )


#: relative gap between Σ map and correlation + baseline term above which a run warns (1 %)
SUM_GAP_WARNING = 0.01


def warn_if_map_misses_its_sum(result: Result) -> None:
    """Warn when Σ map misses correlation + baseline term (the sum it must have up to quadrature error) by more
    than ``SUM_GAP_WARNING`` of it (at least of 0.05): the quadrature was too coarse for the model."""
    diagnostics = result.diagnostics
    if not {"map_sum", "correlation", "baseline_term"} <= set(diagnostics):
        return
    layout = result.metadata.get("inputs") or {}
    if layout.get("kind") == "Embedded" and layout.get("reduce") not in ("sum", None):
        return  # a reduction that is not a sum (e.g. a norm) does not keep the map's sum
    expected = np.asarray(diagnostics["correlation"]) + np.asarray(diagnostics["baseline_term"])
    gap = np.abs(np.asarray(diagnostics["map_sum"]) - expected)
    allowed = SUM_GAP_WARNING * np.maximum(np.abs(expected), 0.05)
    if not bool((gap > allowed).any()):
        return
    k = int(np.argmax(gap / allowed))
    output = result.metadata.get("outputs", list(range(len(gap))))[k]
    parameters = result.metadata.get("parameters", {})
    worst = float(np.max(diagnostics.get("completeness_max", [np.nan])))
    warnings.warn(
        f"the map of output {output} sums to {float(diagnostics['map_sum'][k]):.4g} but correlation + baseline term "
        f"is {float(expected[k]):.4g}: the quadrature ({parameters.get('method')}, {parameters.get('n_steps')} "
        f"nodes) is too coarse for this model (per-sample completeness errors up to {worst:.3g}). Use "
        "tolerance=... (adaptive quadrature) or more n_steps", UserWarning, stacklevel=3)


def _region_arrays(regions: dict[str, Any], plan: InferencePlan | None) -> dict[str, np.ndarray]:
    """Per-region inference arrays (K, R) and the region masks (R, *x_shape) for the Result."""
    if plan is None or not plan.active or plan.masks is None:
        return {}
    arrays = {name: np.asarray(values.cpu() if isinstance(values, torch.Tensor) else values, dtype=np.float64)
              for name, values in regions.items()}
    arrays["masks"] = plan.masks
    return arrays


@fill_doc
class IGC(DatasetMethod):
    """Integrated Gradient Correlation: which input components carry the model's correlation with the targets.

    For every sample n, output k and input component i the integrated gradients IG_{n,k,i} (averaged over the
    sample's baselines) are weighted by the centred target and normalised:

        IGC_{k,i} = Cov_n(IG_{·,k,i}, y_{·,k}) / (σ_y σ_ŷ),

    so that Σ_i IGC_{k,i} = ρ(ŷ_k, y_k) + baseline_term_k (zero for shared baselines) up to quadrature error,
    and any region's sum is its share of the correlation.

    Parameters
    ----------
    %(model)s
    %(score)s
    """

    name = "igc"

    @fill_doc
    def attribute(self, data: Any, baselines: Any = None, n_steps: int | None = None, method: str = "trapezoid",
                  outputs: int | Sequence[int] | None = None, batch_size: int | None = None, seed: int = 0,
                  progress: bool = True, checkpoint: str | os.PathLike | None = None,
                  checkpoint_every: float = DEFAULT_EVERY_SECONDS, tolerance: float | None = None,
                  max_steps: int = 1025, estimator: str = "quadrature", permutations: int = 0, bootstrap: int = 0,
                  regions: Any = None, regions_only: bool = False, level: float = 0.95, path: Any = None,
                  map_tolerance: float | None = None) -> Result:
        """Compute the IGC maps over a dataset in one streaming pass.

        Parameters
        ----------
        %(data)s
        baselines : None, float, tensor, int or igcorr.baselines spec
            None: zero; float: constant; tensor: one baseline (x_shape) or M baselines (M, *x_shape) shared by
            all samples; int M: M baselines drawn from the data afresh for every sample (the paper's setting;
            use ``igcorr.baselines.FromData(M, shared=True)`` for one shared draw).
        n_steps : int, optional
            Quadrature nodes per path (default 64); with ``tolerance``, the starting number of nodes (default
            9); with ``estimator="montecarlo"``, the evaluation points per sample (default 64). To let igcorr
            choose, give ``map_tolerance`` instead.
        method : str
            Quadrature rule: "trapezoid" (default), "riemann_left", "riemann_right", "riemann_middle",
            "gausslegendre", or "shifted" (randomised grids, even ``n_steps``: see ``map_tolerance``).
        %(outputs)s
        %(batch_size)s
        %(seed)s
        %(progress)s
        checkpoint : path, optional
            Save progress to this file (atomically, every ``checkpoint_every`` seconds and at the end); calling
            again with the same arguments resumes after the last saved sample. Under torch.distributed each
            rank writes ``<checkpoint>.rank<r>-of-<world>``.
        checkpoint_every : float
            Seconds between checkpoint writes (0: after every batch).
        tolerance : float, optional
            Adaptive quadrature (trapezoid only): instead of a fixed number of steps, each sample's paths are
            refined (intervals halved, reusing evaluated nodes) until its completeness residual
            |Σ IG − (f(x) − mean f(b))| is at most ``tolerance`` for every output, or ``max_steps`` is reached.
            ``Result.diagnostics["steps_mean"]`` reports the nodes used.
        max_steps : int
            Upper limit of nodes per path for adaptive quadrature and for ``map_tolerance`` (rounded down to
            an even number there).
        permutations : int
            Permutation test in the same pass (IGC is linear in the centred targets, so each permutation is one
            more accumulator, memory P·K·D, or P·K·R with ``regions_only``): ``Result.extra_maps`` gains
            ``p_value`` (two-sided), ``p_fwe`` (max-statistic family-wise) and ``q_value``
            (Benjamini–Hochberg). Needs every target up front (one extra read of the targets for a Dataset).
        bootstrap : int
            Poisson bootstrap replicates in the same pass (memory 2·B·K·D): ``extra_maps`` ``ci_low``,
            ``ci_high``, ``bootstrap_se`` and ``diagnostics`` ``correlation_low/high/se``.
        regions : regions, optional
            Regions tested as wholes (any form of :func:`igcorr.regions.as_region_masks`);
            ``Result.region_sums()`` then lists their sums with p-values and intervals.
        regions_only : bool
            Keep only region statistics (makes P = 10,000 permutations cheap).
        level : float
            Confidence level of the bootstrap intervals.
        estimator : {"quadrature", "montecarlo"}
            "montecarlo": every one of ``n_steps`` evaluation points of a sample has its own baseline drawn
            from the baseline distribution (fresh dataset draws for an int or ``FromData``; uniform picks from
            a shared set otherwise) and its own position α stratified along the path. Unbiased for the map
            with that baseline distribution; ``Result.extra_maps["standard_error"]`` is the Monte-Carlo
            standard error of each map value (conservative, as stratification is ignored).
        path : None, "straight", "ig2", igcorr.IG2Path or a straight-path estimator
            None: IG on straight paths, as ``n_steps``, ``method``, ``tolerance`` and ``estimator`` say. "ig2"
            or ``IG2Path(representation, steps, step_size, clip)``: IG2 on iterative gradient paths, whose
            GradCF endpoints take the baselines' place (then ``baselines`` gives the references: an int R draws
            R samples of another class per sample). An estimator object of :mod:`igcorr.dataset.estimators`
            (``FixedRule("gausslegendre", 16)``, ``Adaptive(1e-3)``, ``MonteCarlo(128)``) says the same as
            those keywords in one typed value. With an object, the quadrature keywords stay at their defaults.
        map_tolerance : float, optional
            Let igcorr choose the number of nodes: the acceptable relative L2 error of the dataset map (e.g.
            0.01 for 1 %, all outputs together), instead of ``n_steps``, ``method`` and ``tolerance``. Paths are
            integrated on shifted grids (antithetic node pairs shifted at random within equal cells, stratified
            over each sample's baselines), whose errors have mean zero and cancel over samples; a pilot on a few
            samples drawn with ``seed`` measures the error of growing grids with two independent draws each,
            extrapolates it to the whole dataset and keeps the cheapest grid under the tolerance (its
            integrals are reused). After the run, the pilot's and a few other samples' variances give
            ``Result.diagnostics["map_error_estimate"]`` (per output) and
            ``metadata["parameters"]["checked_map_error"]``, with a warning when it exceeds the tolerance;
            ``metadata["parameters"]`` also records the choice (``n_steps``, ``pilot_steps``,
            ``estimated_map_error``). Equivalent to ``path=igcorr.dataset.estimators.AutoRule(map_tolerance)``.

        Returns
        -------
        Result
            ``maps`` (K, *x_shape), ``correlation``, ``baseline_term``, ``ig_completeness`` and metadata. Under
            torch.distributed (e.g. ``torchrun``) every rank attributes its shard and returns the merged Result.
        """
        options = RunOptions(batch_size, seed, progress, checkpoint, checkpoint_every)
        spec = baseline_forms.resolve(baselines) if path in (None, "straight") else None
        chosen = estimator_from_options(n_steps=n_steps, method=method, tolerance=tolerance, max_steps=max_steps,
                                        estimator=estimator, path=path, map_tolerance=map_tolerance)
        if isinstance(chosen, AutoRule):  # the pilot weights samples as this method's map does
            probe = self.make_reducer([0])
            weighting = getattr(probe, "against", "targets") if isinstance(probe, CorrelationReducer) else "mean"
            chosen = dataclasses.replace(chosen, weighting=weighting)
        inference = InferencePlan(permutations, bootstrap, regions, regions_only, level)
        spec = baselines_for(chosen, baselines) if spec is None else chosen.run_baselines(spec)
        result = self._run(data, estimator=chosen, baselines=spec, outputs=outputs, options=options,
                           inference=inference)
        if isinstance(chosen, (FixedRule, Adaptive)):
            warn_if_map_misses_its_sum(result)
        return result

    def make_reducer(self, outputs: list[int]) -> Reducer:
        return CorrelationReducer(outputs, against="targets")


@fill_doc
class IGaC(IGC):
    """Integrated Gradient auto-Correlation: IGC with the targets replaced by the model's own predictions.

        IGaC_{k,i} = Cov_n(IG_{·,k,i}, ŷ_{·,k}) / Var_n(ŷ_k),

    so that Σ_i IGaC_{k,i} = 1 + baseline_term_k up to quadrature error (baseline_term_k =
    −Cov_n(f̄_k(B_n), ŷ_k)/Var_n(ŷ_k) is exactly zero for baselines shared by all samples): the map shows where
    the variation of the model's output over the dataset comes from, whatever the targets. Same arguments and
    Result as :meth:`IGC.attribute`; the data must still be (x, y) pairs, but only the targets' shape is
    checked (``Result.correlation`` is 1 by construction).

    Parameters
    ----------
    %(model)s
    %(score)s
    """

    name = "igac"

    def make_reducer(self, outputs: list[int]) -> Reducer:
        return CorrelationReducer(outputs, against="predictions")

    def check_targets(self, source: DataSource, n_model_outputs: int, outputs: list[int]) -> None:
        """The targets' values are not used: nothing to check (a constant prediction is refused later)."""


@fill_doc
class IGMoments(IGC):
    """Mean and standard deviation over the dataset of the integrated gradients, per output and component.

    ``Result.maps`` (K, *x_shape) is mean_n IG_{n,k,i}; ``Result.extra_maps["std"]`` (K, *x_shape) is the
    population standard deviation sqrt(mean_n (IG_{n,k,i} − mean)²) (ddof = 0; a real standard deviation, not
    the variance). Unlike IGC this ignores the targets; Σ_i mean = mean_n ŷ_{n,k} − mean_n f̄_k(B_n) up to
    quadrature error.

    Parameters
    ----------
    %(model)s
    %(score)s
    """

    name = "ig_moments"

    @fill_doc
    def attribute(self, data: Any, baselines: Any = None, **options: Any) -> Result:
        """Compute the IG moment maps over a dataset in one streaming pass.

        Parameters
        ----------
        data : (X, Y) pair, Dataset or DataLoader
            X of shape (N, *x_shape); the targets Y are read (one per sample) but their values are not used.
        baselines : None, float, tensor, int or igcorr.baselines spec
            As for :meth:`IGC.attribute`.
        **options
            Every other option of :meth:`IGC.attribute` (``n_steps``, ``method``, ``outputs``, ``batch_size``,
            ``seed``, ``progress``, ...), with the same meaning and defaults.

        Returns
        -------
        Result
            ``maps`` (K, *x_shape): mean IG; ``extra_maps["std"]`` (K, *x_shape): its standard deviation;
            diagnostics (K,): ``prediction_mean``, ``baseline_prediction_mean``, ``map_sum``,
            ``completeness_mean``, ``completeness_max``.
        """
        return super().attribute(data, baselines=baselines, **options)

    def make_reducer(self, outputs: list[int]) -> Reducer:
        return MomentsReducer(outputs)

    def check_targets(self, source: DataSource, n_model_outputs: int, outputs: list[int]) -> None:
        """The targets are not used: nothing to check."""


class _TargetColumns:
    """Stand-in model for ``model=None``: K zero outputs, so that the targets alone define the outputs."""

    def __init__(self, n_columns: int) -> None:
        self.n_columns = n_columns

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(x), self.n_columns, dtype=x.dtype, device=x.device)


class _InputStatistic(DatasetMethod):
    """Base of the naive methods: statistics of the inputs themselves against the targets (no gradients).

    The model, if given, only tells how many outputs there are (and which the targets' columns or class labels
    refer to). With ``model=None`` the targets define them: K columns of (N, K) targets, one output for float
    (N,) targets, and max label + 1 classes for integer labels (labels need an in-memory (X, Y) pair then).
    Inputs are moved to the model's device and floating dtype as for the other methods.
    """

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor] | None = None, score: ScoreLike = None) -> None:
        if model is None and score is not None:
            raise InputError("a score needs a model: pass the model, or score=None with model=None")
        super().__init__(_TargetColumns(1) if model is None else model, score)
        self.adapter = ModelAdapter(self.adapter.model, score, accept_integer_inputs=True)
        self.model = model

    def _statistic(self, data: Any, *, outputs: int | Sequence[int] | None, batch_size: int | None, progress: bool,
                   parameters: dict[str, Any]) -> Result:
        adapter = self.adapter
        if self.model is None:
            adapter = ModelAdapter(_TargetColumns(target_columns(data)), accept_integer_inputs=True)
        return self._run(data, estimator=NoAttribution(), baselines=None, outputs=outputs,
                         options=RunOptions(batch_size, 0, progress), parameters=parameters, adapter=adapter)


@fill_doc
class NaiveCorrelation(_InputStatistic):
    """Naive correlation: Pearson r over samples between each input component and each target.

        r_{k,i} = Cov_n(x_{·,i}, y_{·,k}) / (σ_{x,i} σ_{y,k})

    Parameters
    ----------
    model : nn.Module, callable or None
        Only used to know the number of outputs (K_model) that class labels are one-hot encoded over and that
        ``outputs`` selects from; never evaluated on the data. None: the targets define K (see Notes).
    score : None, "softmax", "log_softmax" or callable
        Only matters for the number of outputs it produces; must be None with ``model=None``.

    Notes
    -----
    With ``model=None``: (N, K) targets give K outputs, float (N,) targets one, and integer class labels (N,)
    max label + 1 (one-hot; in-memory (X, Y) pairs only, as a stream does not reveal the largest label).
    """

    name = "naive_correlation"

    @fill_doc
    def attribute(self, data: Any, outputs: int | Sequence[int] | None = None, batch_size: int | None = None,
                  progress: bool = True) -> Result:
        """Compute the correlation maps over a dataset in one streaming pass.

        Parameters
        ----------
        data : (X, Y) pair, Dataset or DataLoader
            X of shape (N, *x_shape) (any numeric dtype); Y of shape (N, K) or (N,), encoded as for
            :meth:`IGC.attribute`.
        outputs : None, int or list of int
            Which outputs (target columns) to correlate with; None for all.
        %(batch_size)s
        %(progress)s

        Returns
        -------
        Result
            ``maps`` (K, *x_shape): r; ``extra_maps["p_value"]`` (K, *x_shape): two-sided p-value of r (as
            ``scipy.stats.pearsonr``); diagnostics (K,): ``target_mean``, ``target_std``,
            ``n_constant_inputs``. Constant input components get r = 0 and p = 1, with a warning.
        """
        return self._statistic(data, outputs=outputs, batch_size=batch_size, progress=progress, parameters={})

    def make_reducer(self, outputs: list[int]) -> Reducer:
        return PearsonReducer(outputs)


@fill_doc
class NaiveTTest(_InputStatistic):
    """Naive t-test: each input component compared between low-target and high-target samples, per output.

    For output k the low group holds the samples with y_k ≤ a_k and the high group those with y_k ≥ b_k. The map
    is the two-sample t statistic of x_i, high group minus low group (``scipy.stats.ttest_ind(x_high, x_low)``):
    by default Student's test with pooled variance (scipy's default, ``equal_var=True``, which the reference
    implementation used), or Welch's test with ``equal_var=False``.

    Thresholds: explicit ``thresholds=(a, b)``; or by default, per output, 0.5 / 0.5 for binary (0/1, e.g.
    one-hot) targets and a_k = μ_k + σ_k Φ⁻¹(q_low), b_k = μ_k + σ_k Φ⁻¹(q_high) for continuous ones (the 10 %
    and 90 % normal quantiles of the standardised target, μ and σ its population mean and standard deviation).
    The default needs μ and σ before the pass: they come from a cheap pre-pass over the targets of an
    in-memory (X, Y) pair; for a Dataset or DataLoader the default only covers integer class labels, and
    continuous targets need explicit thresholds.

    Parameters
    ----------
    model : nn.Module, callable or None
        Only used to know the number of outputs (see :class:`NaiveCorrelation`); None: the targets define them.
    score : None, "softmax", "log_softmax" or callable
        Only matters for the number of outputs; must be None with ``model=None``.
    """

    name = "naive_ttest"

    @fill_doc
    def attribute(self, data: Any, thresholds: tuple[Any, Any] | None = None,
                  quantiles: tuple[float, float] = (0.1, 0.9), equal_var: bool = True,
                  outputs: int | Sequence[int] | None = None, batch_size: int | None = None,
                  progress: bool = True) -> Result:
        """Compute the t maps over a dataset in one streaming pass.

        Parameters
        ----------
        data : (X, Y) pair, Dataset or DataLoader
            X of shape (N, *x_shape) (any numeric dtype); Y of shape (N, K) or (N,), encoded as for
            :meth:`IGC.attribute`.
        thresholds : None or (a, b)
            a and b are numbers or sequences of one number per attributed output, a ≤ b. None: the default
            rule above.
        quantiles : (float, float)
            Normal quantile levels (q_low, q_high), 0 < q_low ≤ q_high < 1, of the default rule for continuous
            targets.
        equal_var : bool
            True: Student's t-test (pooled variance). False: Welch's t-test.
        outputs : None, int or list of int
            Which outputs (target columns) to test; None for all.
        %(batch_size)s
        %(progress)s

        Returns
        -------
        Result
            ``maps`` (K, *x_shape): t; ``extra_maps``: ``p_value`` (two-sided) and ``df``, (K, *x_shape);
            diagnostics (K,): ``n_low``, ``n_high`` (group sizes), ``threshold_low``, ``threshold_high``,
            ``n_constant_inputs``. Metadata ``parameters["thresholds"]`` records the thresholds used.
        """
        if thresholds is not None:
            if isinstance(thresholds, (str, bytes)) or not isinstance(thresholds, (tuple, list)) or len(thresholds) != 2:
                raise InputError(f"thresholds must be None or a pair (a, b), got {thresholds!r}")
        if (not isinstance(quantiles, (tuple, list)) or len(quantiles) != 2
                or not all(isinstance(q, (int, float, np.floating)) and not isinstance(q, bool) for q in quantiles)
                or not 0.0 < float(quantiles[0]) <= float(quantiles[1]) < 1.0):
            raise InputError(f"quantiles must be a pair (q_low, q_high) with 0 < q_low ≤ q_high < 1, got {quantiles!r}")
        check_bool(equal_var, "equal_var", hint="True: Student, False: Welch")
        self._request = (thresholds, (float(quantiles[0]), float(quantiles[1])), bool(equal_var))
        parameters = {"equal_var": bool(equal_var), "test": "student" if equal_var else "welch"}
        return self._statistic(data, outputs=outputs, batch_size=batch_size, progress=progress, parameters=parameters)

    def prepare_run(self, source: DataSource, n_model_outputs: int, outputs: list[int],
                    parameters: dict[str, Any]) -> None:
        """Fix the thresholds: explicit, or the default rule (pre-pass over in-memory targets)."""
        thresholds, (q_low, q_high), _ = self._request
        if thresholds is not None:
            low, high, rule = thresholds[0], thresholds[1], "explicit"
        else:
            pair = source.in_memory_pair
            if pair is not None:
                targets = encode_targets(pair[1], n_model_outputs, outputs)
                binary = ((targets == 0) | (targets == 1)).all(dim=0)
                mean, std = targets.mean(dim=0), targets.std(dim=0, unbiased=False)
            else:
                first = next(source.batches(0, 1), None)
                if first is None or first.y.ndim != 1 or first.y.is_floating_point():
                    raise InputError(
                        "the default t-test thresholds of continuous (or one-hot float) targets need the target "
                        "mean and standard deviation, which are only computed for an in-memory (X, Y) pair; pass "
                        "thresholds=(a, b) (e.g. a = mean + std·Φ⁻¹(0.1), b = mean + std·Φ⁻¹(0.9); (0.5, 0.5) for "
                        "one-hot targets) or the data as an (X, Y) pair"
                    )
                binary = torch.ones(len(outputs), dtype=torch.bool)
                mean = std = torch.zeros(len(outputs), dtype=torch.float64)
            normal = NormalDist()
            low = torch.where(binary, 0.5, mean + normal.inv_cdf(q_low) * std).cpu()
            high = torch.where(binary, 0.5, mean + normal.inv_cdf(q_high) * std).cpu()
            rule = "default"
        # validates the thresholds (shape, finiteness, a ≤ b) before any data is streamed
        probe = TTestReducer(outputs, low, high)
        self._thresholds = (probe.low, probe.high)
        parameters["thresholds"] = {"rule": rule, "low": probe.low.tolist(), "high": probe.high.tolist()}

    def make_reducer(self, outputs: list[int]) -> Reducer:
        low, high = self._thresholds
        return TTestReducer(outputs, low, high, equal_var=self._request[2])


@fill_doc
class BSC(DatasetMethod):
    """Baseline Shapley Correlation: the IGC formula with Baseline Shapley values in place of IG.

        BSC_{k,i} = Cov_n(BS_{·,k,i}, y_{·,k}) / (σ_y σ_ŷ)

    Baseline Shapley completeness is exact (Σ_i BS_{n,k,i} = ŷ_{n,k} − f̄_k(B_n) for any number of sampled
    orderings), so Σ_i BSC_{k,i} = ρ(ŷ_k, y_k) + baseline_term_k up to float64 rounding, and with baselines
    shared by all samples the map sums exactly to the Pearson correlation. Cost: D + 1 forward evaluations (no
    gradients) per (sample, baseline, ordering).

    Parameters
    ----------
    %(model)s
    %(score)s
    """

    name = "bsc"

    @fill_doc
    def attribute(self, data: Any, baselines: Any = None, n_permutations: int = 10,
                  outputs: int | Sequence[int] | None = None, batch_size: int | None = None, seed: int = 0,
                  progress: bool = True) -> Result:
        """Compute the BSC maps over a dataset in one streaming pass.

        Parameters
        ----------
        data : (X, Y) pair, Dataset or DataLoader
            X of shape (N, *x_shape); Y of shape (N, K) or (N,), encoded as for :meth:`IGC.attribute`.
        baselines : None, float, tensor, int or igcorr.baselines spec
            As for :meth:`IGC.attribute` (an int M draws M dataset baselines afresh for every sample).
        n_permutations : int
            Random orderings of the input components per (sample, baseline), keyed by (seed, sample index,
            ordering index). The Monte-Carlo noise of few orderings largely averages out over the dataset.
        %(outputs)s
        %(batch_size)s
        %(seed)s
        %(progress)s

        Returns
        -------
        Result
            ``maps`` (K, *x_shape), ``correlation``, ``baseline_term`` and the completeness diagnostics (zero up
            to rounding), as for IGC.
        """
        spec = baseline_forms.resolve(baselines)
        options = RunOptions(batch_size, seed, progress)
        return self._run(data, estimator=ShapleySampling(n_permutations), baselines=spec, outputs=outputs,
                         options=options)

    def make_reducer(self, outputs: list[int]) -> Reducer:
        return CorrelationReducer(outputs, against="targets")
