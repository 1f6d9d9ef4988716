"""Straight paths from baselines to inputs: Integrated Gradients at quadrature or Monte-Carlo nodes.

For n samples with M baselines each and S nodes, the n·M·S points b + α(x − b) are cut into flat chunks in
(sample, baseline, node) order; each point's weighted gradient times its path's displacement (x − b) is
accumulated per sample and averaged over the baselines. Rules whose nodes include both ends (the trapezoid)
give f(x) and f(b) for free; other rules take two more forward passes without gradients.

Behind an affine first layer (:class:`~igcorr.model.FirstLayer`) the points are placed in the layer's output
space, where the path is straight too, and the rest of the model is evaluated there; each path's weighted
gradients are summed and mapped back through the layer's transpose once, then multiplied by its displacement.
A path cut by a chunk boundary carries its partial sum to the next chunk.

:func:`integrate_adaptive` refines the trapezoid rule per sample until a completeness tolerance is met.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch

from igcorr.errors import ShapeError
from igcorr.model import Extras, FirstLayer, take_rows
from igcorr.paths.integrator import Evaluation, Path, PathChunk, PathIntegrals, PathIntegrator, TargetFunction
from igcorr.paths.quadrature import Rule
from igcorr.paths.quadrature import rule as quadrature_rule


#: rows of samples or baselines whose first-layer outputs are computed together (first-layer shortcut)
_LAYER_BLOCK = 16
#: bytes of the shared baselines' first-layer outputs kept for a whole batch (beyond it, recomputed per chunk)
_SHARED_LAYER_CACHE = 64 * 2**20
#: most nodes per path whose gradients are summed in the model's own dtype behind a first layer
_FLOAT32_SUM_NODES = 64


@dataclass
class StraightChunk(PathChunk):
    """Straight-path points: also each point's (sample, baseline) path, node and displacement x − b (P, D)
    (None when the points lie in a first layer's output space, where displacements are taken per path)."""

    path: torch.Tensor
    node: torch.Tensor
    deltas: torch.Tensor | None
    choice: torch.Tensor | None
    extras: Extras


class StraightPath(Path):
    """Straight paths from each sample's M baselines to the sample.

    Parameters
    ----------
    x : Tensor (n, *x_shape)
    baselines : Tensor (n, M, *x_shape)
    rule : Rule
        Quadrature nodes and weights on [0, 1].
    n_outputs : int
        Number of attributed outputs K.
    per_sample_output : LongTensor (n,), optional
        Instead of all K outputs, attribute for sample j only output column ``per_sample_output[j]`` (K = 1 in
        the result); one vector-Jacobian product per point instead of K.
    path_alphas : Tensor (n, M), optional
        Monte-Carlo estimation: each path is a single point at its own α (the rule must have one node of
        weight 1); the result then carries the variance of each sample's mean over its M draws.
    path_nodes : Tensor (n, M, S), optional
        Each path's own S node positions (randomised grids, :func:`igcorr.paths.quadrature.shifted_nodes`), in
        place of the rule's nodes; the rule's S weights are kept.
    with_scores : bool
        False skips the extra forward passes that rules without end nodes need for f(x) and f(b) (their
        predictions are then zero); used when refining integrals whose scores are already known.
    extras : dict of Tensor (n, ...), optional
        The samples' other model inputs (attention masks, ...), handed to the model with every point of their
        paths.
    first_layer : FirstLayer, optional
        Integrate through this affine first layer (used when paths have two nodes or more).
    """

    def __init__(self, adapter_scores: Callable[[torch.Tensor, Extras], torch.Tensor], x: torch.Tensor,
                 baselines: torch.Tensor, rule: Rule, n_outputs: int, per_sample_output: torch.Tensor | None = None,
                 path_alphas: torch.Tensor | None = None, with_scores: bool = True,
                 extras: Extras | None = None, path_nodes: torch.Tensor | None = None,
                 first_layer: FirstLayer | None = None) -> None:
        n, n_baselines = baselines.shape[:2]
        if tuple(baselines.shape[2:]) != tuple(x.shape[1:]) or len(baselines) != len(x):
            raise ShapeError(f"baselines of shape {tuple(baselines.shape)} do not match inputs {tuple(x.shape)}")
        if path_alphas is not None and (len(rule.nodes) != 1 or tuple(path_alphas.shape) != (n, n_baselines)):
            raise ShapeError("Monte-Carlo paths need a one-node rule and one α per (sample, baseline)")
        if path_nodes is not None and tuple(path_nodes.shape) != (n, n_baselines, len(rule.nodes)):
            raise ShapeError(f"path nodes of shape {tuple(path_nodes.shape)} do not match {n} samples × "
                             f"{n_baselines} baselines × {len(rule.nodes)} nodes")
        self.evaluate_scores = adapter_scores
        self.extras = extras or {}
        self.x, self.baselines, self.rule = x, baselines, rule
        self.n_samples, self.n_baselines = n, n_baselines
        self.n_columns = 1 if per_sample_output is not None else n_outputs
        self.choice = per_sample_output.to(x.device) if per_sample_output is not None else None
        self.path_alphas = path_alphas
        self.path_nodes = path_nodes
        self.with_scores = with_scores
        # the variance of projected attributions is not the projection of variances: no readout shortcut then
        self.allows_readout = per_sample_output is None and path_alphas is None
        self.accumulate_squares = path_alphas is not None
        self.alphas = torch.as_tensor(rule.nodes, dtype=x.dtype, device=x.device)
        self.weights = torch.as_tensor(rule.weights, dtype=x.dtype, device=x.device)
        self.endpoint_scores = rule.includes_endpoints and path_nodes is None
        self.predictions = torch.zeros(n, self.n_columns, dtype=torch.float64, device=x.device)
        self.baseline_predictions = torch.zeros_like(self.predictions)
        #: shape of one sample's attribution per output
        self.attribution_shape = tuple(x.shape[1:])
        # one-node paths (Monte-Carlo draws) gain nothing from the first layer's output space
        self.first_layer = first_layer if first_layer is not None and len(rule.nodes) > 1 else None
        #: per column, the (path, partial sum) of a path the last chunk ended inside (first-layer shortcut)
        self._carried: dict[int, tuple[int, torch.Tensor]] = {}
        #: the first layer's outputs at blocks of samples and baselines, per kind (see _layer_outputs)
        self._layer_cache: dict[str, dict[int, torch.Tensor]] = {}
        # a path's gradients are summed in the model's dtype up to 64 nodes (rounding like the gradients' own;
        # float64 sums cost a conversion of every gradient, about 15 % of the run on the speed benchmark's CNN), in
        # float64 beyond (the error of a float32 sum grows with its length)
        self._sum_dtype = x.dtype if len(rule.nodes) <= _FLOAT32_SUM_NODES else torch.float64

    def chunks(self, next_size: Callable[[], int]) -> Iterator[StraightChunk]:
        x, n, n_baselines = self.x, self.n_samples, self.n_baselines
        n_steps = len(self.alphas)
        flat_x = x.reshape(n, -1)
        # (a copy when the baselines are shared, i.e. expanded: only made when points are placed in input space)
        flat_baselines = self.baselines.reshape(n * n_baselines, -1) if self.first_layer is None else None
        flat_alphas = (self.path_alphas.reshape(-1).to(dtype=x.dtype, device=x.device)
                       if self.path_alphas is not None else None)
        flat_nodes = (self.path_nodes.reshape(-1).to(dtype=x.dtype, device=x.device)
                      if self.path_nodes is not None else None)
        total_points = n * n_baselines * n_steps
        begin = 0
        while begin < total_points:
            point = torch.arange(begin, min(begin + next_size(), total_points), device=x.device)
            begin += len(point)
            path, node = point // n_steps, point % n_steps
            sample = path // n_baselines
            if flat_alphas is not None:
                alpha = flat_alphas[point]
            elif flat_nodes is not None:
                alpha = flat_nodes[point]
            else:
                alpha = self.alphas[node]
            if self.first_layer is not None:
                points, deltas = self._layer_points(path, alpha), None
            else:
                starts = flat_baselines[path]
                deltas = flat_x[sample] - starts
                points = (starts + alpha.unsqueeze(1) * deltas).reshape(len(point), *x.shape[1:])
            choice = self.choice[sample] if self.choice is not None else None
            yield StraightChunk(sample, self.weights[node], points, path, node, deltas, choice,
                                take_rows(self.extras, sample))

    def _layer_points(self, path: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """Points of the given (sorted, consecutive) paths at ``alpha`` in the first layer's output space: its
        outputs at each path's start plus α times their change to the path's end (the layer's bias cancels)."""
        n_baselines = self.n_baselines
        first_path = int(path[0])
        paths = torch.arange(first_path, int(path[-1]) + 1, device=path.device)
        ends = self._layer_outputs("sample", paths // n_baselines)
        if self.baselines.stride(0) == 0:  # baselines shared by every sample
            starts = self._layer_outputs("shared", paths % n_baselines)
        else:
            starts = self._layer_outputs("start", paths)
        local = path - first_path
        changes = (ends - starts)[local]
        return starts[local] + alpha.reshape(-1, *[1] * (changes.ndim - 1)) * changes

    def _layer_outputs(self, kind: str, rows: torch.Tensor) -> torch.Tensor:
        """The first layer's outputs at the given rows of the samples ("sample"), of the shared baselines
        ("shared") or of the paths' starts ("start").

        They are computed in fixed blocks of rows, whatever the chunks: a matrix product's rounding may depend
        on how many rows it is given, and the integrals must not depend on where chunks are cut. Only the
        blocks the chunk needs are kept, except that the shared baselines' outputs stay while they take at most
        ``_SHARED_LAYER_CACHE`` bytes (chunks move forward through samples and paths, but cycle through the
        baselines)."""
        cache = self._layer_cache.setdefault(kind, {})
        total = {"sample": self.n_samples, "shared": self.n_baselines,
                 "start": self.n_samples * self.n_baselines}[kind]
        blocks = torch.unique(rows // _LAYER_BLOCK).tolist()
        keep = set(blocks)
        if kind == "shared" and cache:
            row_bytes = next(iter(cache.values()))[0].numel() * next(iter(cache.values())).element_size()
            if total * row_bytes <= _SHARED_LAYER_CACHE:
                keep = set(cache) | keep
        for block in [b for b in cache if b not in keep]:
            del cache[block]
        for block in blocks:
            if block not in cache:
                index = torch.arange(block * _LAYER_BLOCK, min((block + 1) * _LAYER_BLOCK, total), device=rows.device)
                if kind == "sample":
                    inputs = self.x[index]
                elif kind == "shared":
                    inputs = self.baselines[0, index]
                else:
                    inputs = self.baselines[index // self.n_baselines, index % self.n_baselines]
                cache[block] = self.first_layer.apply(inputs)
        # row r of block b sits at (rows of the blocks before b) + r − b·block in the concatenation
        shift = torch.zeros(blocks[-1] + 1, dtype=torch.long, device=rows.device)
        position = 0
        for block in blocks:
            shift[block] = position - block * _LAYER_BLOCK
            position += len(cache[block])
        return torch.cat([cache[block] for block in blocks])[rows + shift[rows // _LAYER_BLOCK]]

    def evaluate(self, chunk: StraightChunk, targets: TargetFunction) -> Evaluation:
        points = chunk.points.requires_grad_(True)
        if self.first_layer is not None:
            # the model reads its input only through the first layer, whose outputs are the points: its input
            # is a placeholder (NaN, so that any other use of it would show)
            placeholder = torch.full((1,) * self.x.ndim, float("nan"), dtype=self.x.dtype, device=self.x.device)
            with self.first_layer.substituted(points):
                differentiated, scores = targets(placeholder.expand(len(points), *self.x.shape[1:]), chunk.choice,
                                                 chunk.extras)
        else:
            differentiated, scores = targets(points, chunk.choice, chunk.extras)
        if self.endpoint_scores:
            scores = scores.to(torch.float64)
            at_baseline = chunk.node == 0
            self.baseline_predictions.index_add_(0, chunk.sample[at_baseline], scores[at_baseline])
            at_input = (chunk.node == len(self.alphas) - 1) & (chunk.path % self.n_baselines == 0)
            self.predictions.index_add_(0, chunk.sample[at_input], scores[at_input])
        return Evaluation(differentiated, scores, points, chunk.deltas)

    def contributions(self, chunk: StraightChunk, evaluation: Evaluation,
                      gradients: Iterable[tuple[int, torch.Tensor]]
                      ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        if self.first_layer is None:
            yield from super().contributions(chunk, evaluation, gradients)
            return
        first_path = int(chunk.path[0])
        local = chunk.path - first_path
        n_paths = int(local[-1]) + 1
        complete = n_paths if int(chunk.node[-1]) == len(self.alphas) - 1 else n_paths - 1
        paths = torch.arange(first_path, first_path + complete, device=local.device)
        samples = paths // self.n_baselines
        starts = self.baselines[samples, paths % self.n_baselines].reshape(complete, self.x[0].numel())
        deltas = self.x.reshape(self.n_samples, -1)[samples] - starts
        # each column's gradients are summed per path at once (and released); the sums of several columns go
        # back through the layer together, at most a chunk's worth of rows at a time
        pending: list[tuple[int, torch.Tensor]] = []
        for j, gradient in gradients:
            sums = torch.zeros(n_paths, gradient[0].numel(), dtype=self._sum_dtype, device=gradient.device)
            carried = self._carried.pop(j, None)
            if carried is not None and carried[0] == first_path:
                # the sum goes on in node order, so that it does not depend on where the chunks were cut
                sums[0] = carried[1]
            sums.index_add_(0, local, gradient.reshape(len(local), -1).to(self._sum_dtype))
            if complete < n_paths:
                self._carried[j] = (first_path + complete, sums[complete].clone())
            pending.append((j, sums[:complete]))
            if (len(pending) + 1) * complete > len(local):
                yield from self._pulled_back(pending, samples, deltas)
                pending = []
        yield from self._pulled_back(pending, samples, deltas)

    def _pulled_back(self, pending: list[tuple[int, torch.Tensor]], samples: torch.Tensor,
                     deltas: torch.Tensor) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """Per column, the paths' sums mapped back through the first layer (all columns in one pass) and
        multiplied by the paths' displacements."""
        if not pending:
            return
        if len(samples) == 0:
            for j, _ in pending:
                yield j, samples, torch.zeros(0, deltas.shape[1], dtype=torch.float64, device=deltas.device)
            return
        pulled = self.first_layer.pullback(torch.cat([sums for _, sums in pending]).to(deltas.dtype))
        for (j, _), rows in zip(pending, pulled.split(len(samples))):
            yield j, samples, (rows * deltas).to(torch.float64)

    def finish(self, integrals: torch.Tensor, squares: torch.Tensor | None) -> PathIntegrals:
        x, n, n_baselines = self.x, self.n_samples, self.n_baselines
        predictions, baseline_predictions = self.predictions, self.baseline_predictions
        if not self.endpoint_scores and self.with_scores:
            pair_sample = torch.arange(n, device=x.device).repeat_interleave(n_baselines)
            if self.baselines.stride(0) == 0 and not self.extras:  # shared baselines: each one's scores once
                shared = self.evaluate_scores(self.baselines[0], {}).double()
                flat_scores = shared[torch.arange(n * n_baselines, device=x.device) % n_baselines]
            else:
                flat_scores = self.evaluate_scores(self.baselines.reshape(n * n_baselines, *x.shape[1:]),
                                                   take_rows(self.extras, pair_sample)).double()
            input_scores = self.evaluate_scores(x, self.extras).double()
            if self.choice is not None:
                flat_scores = flat_scores.gather(1, self.choice[pair_sample].unsqueeze(1))
                input_scores = input_scores.gather(1, self.choice.unsqueeze(1))
            baseline_predictions = torch.zeros_like(predictions).index_add_(0, pair_sample, flat_scores)
            predictions = input_scores
        if n_baselines != 1:  # (the integrator's own tensor, possibly K·D per sample: divided in place)
            integrals = integrals.div_(n_baselines)
        baseline_predictions = baseline_predictions / n_baselines
        variance = None
        if squares is not None:
            spread = (squares / n_baselines - integrals.square()).clamp(min=0)
            variance = (spread / max(n_baselines - 1, 1)).reshape(n, self.n_columns, *self.attribution_shape)
        return PathIntegrals(integrals.reshape(n, integrals.shape[1], *self.attribution_shape), predictions,
                             baseline_predictions,
                             attribution_variance=variance)


def scores_of(integrator: PathIntegrator) -> Callable[[torch.Tensor, Extras], torch.Tensor]:
    """Scores of the integrator's outputs at some inputs (with their extra inputs), without gradients."""
    return lambda points, extras: integrator.adapter.evaluate(points, integrator.outputs, integrator.chunk_points,
                                                              extras)


def integrate_straight(integrator: PathIntegrator, x: torch.Tensor, baselines: torch.Tensor, rule: Rule, *,
                       per_sample_output: torch.Tensor | None = None, path_alphas: torch.Tensor | None = None,
                       with_scores: bool = True, first_index: int = 0, extras: Extras | None = None,
                       path_nodes: torch.Tensor | None = None) -> PathIntegrals:
    """IG of ``x`` from its baselines (n, M, *x_shape) for the integrator's configured outputs (at each path's own
    ``path_nodes`` (n, M, S) if given)."""
    path = StraightPath(scores_of(integrator), x, baselines, rule, len(integrator.outputs),
                        per_sample_output=per_sample_output, path_alphas=path_alphas, with_scores=with_scores,
                        extras=extras, path_nodes=path_nodes, first_layer=integrator.first_layer)
    return integrator.integrate(path, first_index=first_index)


def integrate_adaptive(integrator: PathIntegrator, x: torch.Tensor, baselines: torch.Tensor, tolerance: float,
                       start_steps: int = 9, max_steps: int = 1025, first_index: int = 0,
                       extras: Extras | None = None) -> PathIntegrals:
    """Integrated gradients refined per sample until the completeness residual is below ``tolerance``.

    Starts with the trapezoid rule on ``start_steps`` nodes; samples whose largest |Σ IG − (f(x) − mean
    f(b))| over the outputs exceeds ``tolerance`` get their intervals halved, reusing every node already
    evaluated (the refined trapezoid is the mean of the coarse trapezoid and the midpoint rule), until they
    pass or would need more than ``max_steps`` nodes. Samples that never pass are kept at the finest rule
    reached, with a warning. The nodes each sample needed are returned in ``steps``.
    """
    coarse = integrate_straight(integrator, x, baselines, quadrature_rule("trapezoid", start_steps),
                                first_index=first_index, extras=extras)
    attributions = coarse.attributions.clone()
    steps = torch.full((len(x),), start_steps, dtype=torch.int64, device=x.device)
    explained = coarse.predictions - coarse.baseline_predictions
    pending = _residual_exceeds(attributions, explained, tolerance)
    intervals = start_steps - 1
    while bool(pending.any()) and 2 * intervals + 1 <= max_steps:
        chosen = torch.nonzero(pending).reshape(-1)
        midpoints = integrate_straight(integrator, x[chosen], baselines[chosen],
                                       quadrature_rule("riemann_middle", intervals), with_scores=False,
                                       first_index=first_index, extras=take_rows(extras, chosen))
        attributions[chosen] = 0.5 * (attributions[chosen] + midpoints.attributions)
        intervals *= 2
        steps[chosen] = intervals + 1
        pending = torch.zeros_like(pending)
        pending[chosen] = _residual_exceeds(attributions[chosen], explained[chosen], tolerance)
    if bool(pending.any()):
        warnings.warn(
            f"{int(pending.sum())} sample(s) from index {first_index} did not reach the completeness tolerance "
            f"{tolerance:g} within max_steps={max_steps} nodes; raise max_steps or the tolerance",
            UserWarning, stacklevel=3,
        )
    return PathIntegrals(attributions, coarse.predictions, coarse.baseline_predictions, steps=steps)


def _residual_exceeds(attributions: torch.Tensor, explained: torch.Tensor, tolerance: float) -> torch.Tensor:
    """(n,) whether any output's |Σ_i IG − explained| exceeds ``tolerance``."""
    residual = attributions.flatten(start_dim=2).sum(dim=2) - explained
    return (residual.abs() > tolerance).any(dim=1)
