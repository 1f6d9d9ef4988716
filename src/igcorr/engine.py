"""The gradient engine: integrated gradients for a batch of samples and baselines.

For n samples with M baselines each and a quadrature rule of S nodes, the engine evaluates the n·M·S path
points in chunks of whole (sample, baseline) paths: one forward pass per chunk, then one vector-Jacobian
product per attributed output, with the quadrature weights as the cotangent so that the returned gradient is
already weighted. Gradients are summed over the nodes in float64, multiplied by (x − b) and averaged over the
baselines. Nothing leaves the model's device.

The model is used as a pure function during attribution: its parameters are frozen (no parameter gradient is
ever computed) and restored afterwards, and the model runs in evaluation mode, then gets its modes back. A
model left in training mode that holds dropout or normalisation layers (whose outputs would then be random or
depend on the batch) triggers a warning; other models are switched silently, as the mode changes nothing.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from igcorr.errors import InputError, ModelError, NonFiniteError, ShapeError
from igcorr.quadrature import Rule

ScoreLike = str | Callable[[torch.Tensor], torch.Tensor] | None
SCORES = ("softmax", "log_softmax")

#: modules whose forward differs between training and evaluation mode
_MODE_DEPENDENT = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._NormBase)

#: default number of path points evaluated per forward pass (rounded to whole paths)
DEFAULT_CHUNK_POINTS = 512


@dataclass
class PathIntegrals:
    """Integrated gradients of a batch and the model scores they explain (all float64, on the model's device).

    Attributes
    ----------
    attributions : Tensor (n, K, *x_shape)
        IG averaged over each sample's M baselines.
    predictions : Tensor (n, K)
        Attributed score at each input.
    baseline_predictions : Tensor (n, K)
        Attributed score averaged over each sample's baselines.
    """

    attributions: torch.Tensor
    predictions: torch.Tensor
    baseline_predictions: torch.Tensor

    @property
    def completeness_residual(self) -> torch.Tensor:
        """Σ_i IG − (f(x) − mean f(b)), shape (n, K): zero for exact quadrature."""
        total = self.attributions.flatten(start_dim=2).sum(dim=2)
        return total - (self.predictions - self.baseline_predictions)


def model_device_dtype(model: nn.Module) -> tuple[torch.device | None, torch.dtype | None]:
    """Device and floating dtype of the model's first floating parameter or buffer (None, None if none)."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return None, None


class Engine:
    """Evaluates scores and integrated gradients of ``model`` for selected outputs.

    Parameters
    ----------
    model : nn.Module or callable
        Maps a batch (P, *x_shape) to outputs (P, K_model) (or (P,) for one output).
    score : None, "softmax", "log_softmax" or callable
        What is attributed for each output: the raw output, its softmax probability, its log-probability, or
        ``score(output)`` returning (P, K') for any callable.
    chunk_points : int, optional
        Path points per forward pass (rounded down to whole paths, at least one path).
    """

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor], score: ScoreLike = None,
                 chunk_points: int | None = None) -> None:
        if not callable(model):
            raise InputError(f"model must be a torch.nn.Module or a callable, got {type(model).__name__}")
        if score is not None and not callable(score) and score not in SCORES:
            raise InputError(f"score must be None, 'softmax', 'log_softmax' or a callable, got {score!r}")
        if chunk_points is not None and (isinstance(chunk_points, bool) or not isinstance(chunk_points, int)
                                         or chunk_points < 1):
            raise InputError(f"chunk_points must be a positive integer, got {chunk_points!r}")
        self.model = model
        self.score = score
        self.chunk_points = chunk_points or DEFAULT_CHUNK_POINTS
        module = model if isinstance(model, nn.Module) else None
        self.device, self.dtype = model_device_dtype(module) if module is not None else (None, None)

    # ------------------------------------------------------------------ model state
    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Freeze parameters and use evaluation mode for the duration of the block, then restore both."""
        module = self.model if isinstance(self.model, nn.Module) else None
        if module is None:
            yield
            return
        modes = {sub: sub.training for sub in module.modules()}
        flags = [(p, p.requires_grad) for p in module.parameters()]
        mode_dependent = [type(sub).__name__ for sub in module.modules()
                          if sub.training and isinstance(sub, _MODE_DEPENDENT)]
        if mode_dependent:
            warnings.warn(
                f"the model is in training mode and contains {sorted(set(mode_dependent))}; igcorr switches it to "
                "eval() for attribution (dropout and batch statistics would make attributions random and "
                "batch-dependent) and restores the mode afterwards. Call model.eval() to silence this warning",
                UserWarning,
                stacklevel=4,
            )
        try:
            module.eval()
            for parameter, _ in flags:
                parameter.requires_grad_(False)
            yield
        finally:
            for parameter, flag in flags:
                parameter.requires_grad_(flag)
            for sub, mode in modes.items():
                sub.training = mode

    # ------------------------------------------------------------------ inputs and outputs
    def prepare_inputs(self, x: torch.Tensor, name: str = "inputs") -> torch.Tensor:
        """Move inputs to the model's device and floating dtype; integer and boolean inputs are refused."""
        if not x.is_floating_point():
            raise InputError(
                f"{name} have dtype {x.dtype}; gradients need continuous inputs. Convert them to float (e.g. "
                "x.float() / 255 for images), or attribute in embedding space for token or category ids"
            )
        return x.to(device=self.device or x.device, dtype=self.dtype or x.dtype)

    def n_model_outputs(self, x: torch.Tensor) -> int:
        """Number of scores the model produces, from a forward pass on (a few of) the inputs."""
        with torch.no_grad():
            return self._scores(x[:1]).shape[1]

    def check_batch_independence(self, x: torch.Tensor) -> None:
        """Refuse models whose output for one sample depends on the other samples of its batch.

        Path points of many samples share a forward pass, so such a model (batch statistics, attention across
        the batch, ...) would give silently wrong attributions. Compares a joint forward of up to four samples
        with separate ones.
        """
        if len(x) < 2:
            return
        with torch.no_grad():
            joint = self._scores(x)
            separate = torch.cat([self._scores(x[i : i + 1]) for i in range(len(x))])
        tolerance = 1e-3 if x.dtype in (torch.float16, torch.bfloat16) else 1e-5 if x.dtype == torch.float32 else 1e-9
        scale = float(joint.abs().max()) + 1e-30
        if not torch.allclose(joint, separate, rtol=tolerance, atol=tolerance * scale):
            raise ModelError(
                "the model's output for a sample changes with the other samples in its batch (batch statistics, "
                "e.g. a custom normalisation over the batch, or layers mixing samples). Attribution evaluates many "
                "samples and path points per forward pass, so the model must treat samples independently: use "
                "running statistics (eval mode) or remove the batch coupling"
            )

    def _scores(self, points: torch.Tensor) -> torch.Tensor:
        output = self.model(points)
        if not isinstance(output, torch.Tensor):
            raise ModelError(f"the model must return a tensor, got {type(output).__name__}")
        if output.ndim == 1:
            output = output.unsqueeze(1)
        if output.ndim != 2 or output.shape[0] != points.shape[0]:
            raise ModelError(
                f"the model returned shape {tuple(output.shape)} for a batch of {points.shape[0]}; it must return "
                "(batch, outputs) or (batch,). Wrap it to flatten or select its outputs"
            )
        if self.score is None:
            return output
        if self.score == "softmax":
            return torch.softmax(output, dim=1)
        if self.score == "log_softmax":
            return torch.log_softmax(output, dim=1)
        scored = self.score(output)
        if not isinstance(scored, torch.Tensor) or scored.ndim not in (1, 2) or scored.shape[0] != points.shape[0]:
            shape = tuple(scored.shape) if isinstance(scored, torch.Tensor) else type(scored).__name__
            raise ModelError(
                f"the score callable returned {shape} for a batch of {points.shape[0]}; it must return a tensor "
                "of shape (batch, outputs) or (batch,)"
            )
        return scored.unsqueeze(1) if scored.ndim == 1 else scored

    def scores(self, x: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
        """Attributed scores of the selected ``outputs`` at ``x``, shape (n, K), without gradients."""
        with torch.no_grad():
            return torch.cat([self._scores(part)[:, outputs] for part in x.split(self.chunk_points)])

    # ------------------------------------------------------------------ integrated gradients
    def integrate(self, x: torch.Tensor, baselines: torch.Tensor, rule: Rule, outputs: torch.Tensor,
                  per_sample_output: torch.Tensor | None = None, first_index: int = 0) -> PathIntegrals:
        """Integrated gradients of ``x`` from its baselines.

        Parameters
        ----------
        x : Tensor (n, *x_shape)
        baselines : Tensor (n, M, *x_shape)
        rule : Rule
            Quadrature nodes and weights on [0, 1].
        outputs : LongTensor (K,)
            Indices of the scores to attribute.
        per_sample_output : LongTensor (n,), optional
            Instead of all K outputs, attribute for sample j only ``outputs[per_sample_output[j]]`` (K = 1 in
            the result); one vector-Jacobian product per point instead of K.
        first_index : int
            Global index of the first sample, used in error messages.
        """
        n, n_baselines = baselines.shape[:2]
        if tuple(baselines.shape[2:]) != tuple(x.shape[1:]) or len(baselines) != len(x):
            raise ShapeError(f"baselines of shape {tuple(baselines.shape)} do not match inputs {tuple(x.shape)}")
        n_steps = len(rule.nodes)
        n_outputs = 1 if per_sample_output is not None else len(outputs)
        features = int(np.prod(x.shape[1:], dtype=np.int64))
        dev = x.device
        alphas = torch.as_tensor(rule.nodes, dtype=x.dtype, device=dev)
        weights = torch.as_tensor(rule.weights, dtype=x.dtype, device=dev)
        integrals = torch.zeros(n, n_outputs, features, dtype=torch.float64, device=dev)
        endpoint_scores = rule.includes_endpoints
        predictions = torch.zeros(n, n_outputs, dtype=torch.float64, device=dev)
        baseline_predictions = torch.zeros(n, n_outputs, dtype=torch.float64, device=dev)

        pair_sample = torch.arange(n, device=dev).repeat_interleave(n_baselines)
        flat_baselines = baselines.reshape(n * n_baselines, *x.shape[1:])
        paths_per_chunk = max(1, self.chunk_points // n_steps)
        with torch.enable_grad():
            for begin in range(0, n * n_baselines, paths_per_chunk):
                samples = pair_sample[begin : begin + paths_per_chunk]
                starts = flat_baselines[begin : begin + paths_per_chunk]
                deltas = x[samples] - starts
                view = (1, n_steps) + (1,) * (x.ndim - 1)
                points = (starts.unsqueeze(1) + alphas.view(view) * deltas.unsqueeze(1)).reshape(-1, *x.shape[1:])
                points.requires_grad_(True)
                scores = self._scores(points)[:, outputs]
                if per_sample_output is not None:
                    choice = per_sample_output.to(dev)[samples].repeat_interleave(n_steps)
                    scores = scores.gather(1, choice.unsqueeze(1))
                cotangent = weights.repeat(len(samples))
                for k in range(n_outputs):
                    (gradient,) = torch.autograd.grad(
                        scores[:, k], points, grad_outputs=cotangent, retain_graph=k < n_outputs - 1
                    )
                    summed = gradient.reshape(len(samples), n_steps, features).sum(dim=1, dtype=torch.float64)
                    integrals[:, k].index_add_(0, samples, summed * deltas.reshape(len(samples), -1).double())
                if endpoint_scores:
                    detached = scores.detach().reshape(len(samples), n_steps, n_outputs).double()
                    baseline_predictions.index_add_(0, samples, detached[:, 0])
                    first_path = (torch.arange(begin, begin + len(samples), device=dev) % n_baselines) == 0
                    predictions.index_add_(0, samples[first_path], detached[first_path, -1])
        if not endpoint_scores:
            selection = outputs
            flat_scores = self.scores(flat_baselines, selection).double()
            input_scores = self.scores(x, selection).double()
            if per_sample_output is not None:
                choice = per_sample_output.to(dev)
                flat_scores = flat_scores.gather(1, choice[pair_sample].unsqueeze(1))
                input_scores = input_scores.gather(1, choice.unsqueeze(1))
            baseline_predictions.index_add_(0, pair_sample, flat_scores)
            predictions = input_scores
        integrals /= n_baselines
        baseline_predictions /= n_baselines
        finite = torch.isfinite(integrals).flatten(1).all(dim=1)
        if not bool(finite.all()):
            bad = int(torch.nonzero(~finite)[0]) + first_index
            raise NonFiniteError(
                f"the gradients of sample {bad} are not finite (NaN or Inf) somewhere on its integration path; "
                "check the model for divisions by zero, log of zero or overflow in its dtype"
            )
        return PathIntegrals(integrals.reshape(n, n_outputs, *x.shape[1:]), predictions, baseline_predictions)


def resolve_outputs(outputs: int | Sequence[int] | None, n_model_outputs: int) -> list[int]:
    """Validate the ``outputs`` argument against the model's number of scores; returns a list of indices."""
    if outputs is None:
        return list(range(n_model_outputs))
    if isinstance(outputs, (int, np.integer)) and not isinstance(outputs, bool):
        selected = [int(outputs)]
    else:
        try:
            selected = [int(o) for o in outputs]  # type: ignore[union-attr]
        except (TypeError, ValueError) as error:
            raise InputError(f"outputs must be None, an int or a list of ints, got {outputs!r}") from error
    if not selected:
        raise InputError("outputs is empty: give at least one output index, or None for all")
    for index in selected:
        if not -n_model_outputs <= index < n_model_outputs:
            raise InputError(
                f"output index {index} is out of range: the model (with its score) has {n_model_outputs} outputs"
            )
    normalised = [index % n_model_outputs for index in selected]
    if len(set(normalised)) != len(normalised):
        raise InputError(f"outputs {selected} contain duplicates")
    return normalised


def describe_score(score: ScoreLike) -> str:
    """Name of the score for metadata."""
    if score is None:
        return "output"
    if isinstance(score, str):
        return score
    return getattr(score, "__name__", type(score).__name__)
