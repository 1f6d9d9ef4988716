"""IG2 per sample (Zhuo & Ge, TPAMI 2024): Integrated Gradients along iterative gradient paths towards
counterfactual references, and the helpers that draw those references.

The path and its integral live in :mod:`igcorr.paths.gradient`; :class:`IG2` attributes a batch of inputs,
:func:`select_references` and :class:`OtherClassReferences` draw references of another class than each
sample's, and :class:`IG2Path` runs the dataset-wise methods (IGC, IGaC, IGMoments) on IG2 attributions.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from igcorr import baselines as baseline_forms
from igcorr._docs import fill_doc
from igcorr._validation import check_bool, check_finite, check_positive_int, check_seed
from igcorr.attribution.base import PerSampleMethod
from igcorr.data import DataSource, as_tensor
from igcorr.errors import InputError, ShapeError
from igcorr.model import Extras, OutputSelector, ScoreLike
from igcorr.paths.gradient import (DEFAULT_STEPS, Representation, check_clip, check_eps, check_step_size, check_steps,
                                   integrate_grad_path)
from igcorr.seeding import keyed_permutation, keyed_uint64

#: tag mixed into the seed of reference draws, so that they never coincide with other keyed draws
_REFERENCE_TAG = 0x1C2_4EF5


# ---------------------------------------------------------------------------------------------------- results
@dataclass
class IG2Attribution:
    """What :meth:`IG2.attribute` returns (n samples, R references, k steps).

    Attributes
    ----------
    attributions : Tensor (n, *x_shape)
        IG2 averaged over the references, in the inputs' dtype and device.
    counterfactuals : Tensor (n, R, *x_shape)
        The GradCF endpoints γ_k of every (sample, reference) path.
    completeness_residual : Tensor (n,), float64
        Σ_i IG2_i − (f(x) − mean_r f(GradCF_r)); shrinks with the step size.
    targets : LongTensor (n,)
        The explained output of each sample (chosen at x).
    predictions : Tensor (n,), float64
        f(x) for the explained output.
    counterfactual_predictions : Tensor (n, R), float64
        f(GradCF_r) for the explained output.
    distances : Tensor (n, R, k + 1), float64
        ‖r(γ_j) − r(x^r)‖₂ along every path: check that it has plateaued (else lengthen the path, k·η).
    path : Tensor (n, R, k + 1, *x_shape), optional
        The points γ_0 = x, ..., γ_k (only with ``return_path=True``).
    """

    attributions: torch.Tensor
    counterfactuals: torch.Tensor
    completeness_residual: torch.Tensor
    targets: torch.Tensor
    predictions: torch.Tensor
    counterfactual_predictions: torch.Tensor
    distances: torch.Tensor
    path: torch.Tensor | None = None


def reference_stack(references: Any, x: torch.Tensor) -> torch.Tensor:
    """Interpret explicit references as a stack (n, R, *x_shape).

    Parameters
    ----------
    references : Tensor
        x_shape (one reference for all), (R, *x_shape) (R references shared by all samples) or
        (n, R, *x_shape) (R references per sample).
    x : Tensor (n, *x_shape)
    """
    if references is None:
        raise InputError("IG2 needs references (counterfactual samples, e.g. of other classes): pass a tensor "
                         "(R, *x_shape) or (n, R, *x_shape); igcorr.select_references draws them")
    tensor = as_tensor(references, "references")
    if not tensor.is_floating_point():
        raise InputError(f"references have dtype {tensor.dtype}; pass float tensors like the inputs")
    check_finite(tensor.reshape(1, -1), "references")
    tensor = tensor.to(device=x.device, dtype=x.dtype)
    x_shape, shape = tuple(x.shape[1:]), tuple(tensor.shape)
    if shape == x_shape:
        return tensor.expand(len(x), 1, *x_shape)
    if len(shape) == len(x_shape) + 1 and shape[1:] == x_shape and shape[0] >= 1:
        return tensor.unsqueeze(0).expand(len(x), *shape)
    if len(shape) == len(x_shape) + 2 and shape[0] == len(x) and shape[2:] == x_shape and shape[1] >= 1:
        return tensor
    raise ShapeError(f"references of shape {shape} do not fit inputs of shape {tuple(x.shape)}: give {x_shape}, "
                     f"(R, *x_shape) shared by all samples, or (n, R, *x_shape) = ({len(x)}, R, ...) per sample")


# ---------------------------------------------------------------------------------------------------- per sample
@fill_doc
class IG2(PerSampleMethod):
    """Integrated Gradients on the iterative gradient path (IG2) of one output per sample.

    Parameters
    ----------
    %(model)s
    representation : None, "auto", str, nn.Module or callable
        The representation r(·) the path pulls towards the reference's: a module name or a module (its output,
        captured by a forward hook during the model's own forward pass), a callable x → r(x), or None/"auto"
        for the input of the model's last ``nn.Linear`` (the paper's choice).
    %(score)s
    %(output)s

    Examples
    --------
    >>> explainer = IG2(model, representation="classifier.1", score="softmax")      # doctest: +SKIP
    >>> refs = select_references(x_train, y_train, model(x).argmax(1), k=4, seed=0)  # doctest: +SKIP
    >>> result = explainer.attribute(x, refs, steps=100, clip=(0.0, 1.0))            # doctest: +SKIP
    >>> result.attributions.shape, result.completeness_residual.abs().max()          # doctest: +SKIP
    """

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor], representation: Any = None,
                 score: ScoreLike = None, *, output: OutputSelector = None) -> None:
        super().__init__(model, score, output=output)
        self.representation = Representation(representation, model)

    @fill_doc
    def attribute(self, inputs: torch.Tensor, references: Any, target: Any = None, steps: int = DEFAULT_STEPS,
                  step_size: float | str = "auto", clip: tuple[Any, Any] | None = None, return_path: bool = False,
                  eps: float = 1e-12, chunk_points: int | None = None,
                  extra_inputs: dict[str, torch.Tensor] | None = None) -> IG2Attribution:
        """Attribute ``target`` of each input along its GradPaths towards the references.

        Parameters
        ----------
        inputs : Tensor (n, *x_shape)
        references : Tensor
            x_shape (one reference), (R, *x_shape) (R references shared by all samples) or (n, R, *x_shape)
            (R references per sample, e.g. from :func:`select_references`).
        target : None, int, sequence of int or LongTensor (n,)
            Output to explain, for all samples or per sample. None: the only output of a single-output model,
            else each sample's predicted class (argmax of the score at x). Either way it is fixed at x for the
            whole path.
        steps : int
            Gradient steps k of each path (≥ 1).
        step_size : float or "auto"
            η, the length of each step in input units. "auto": for each pair η = 2‖x − x^r‖₂ / k, so that the
            path could cover twice the straight distance (check ``distances`` for a plateau).
        clip : None or (lo, hi)
            Valid input range (numbers or tensors broadcastable to one sample); every step is clipped to it.
        return_path : bool
            Keep every path point in the result (memory n·R·(k + 1)·D).
        eps : float
            ε of the gradient normalisation u = g / (‖g‖₂ + ε).
        chunk_points : int, optional
            Pairs advanced together per forward pass (default: from the memory budget).
        %(extra_inputs)s

        Returns
        -------
        IG2Attribution
            ``attributions`` (n, *x_shape), ``counterfactuals`` (n, R, *x_shape), ``completeness_residual``
            (n,), the explained ``targets``, predictions and path distances.

        Raises
        ------
        InputError, ShapeError
            Invalid steps, step size, clip range, target, or references that do not fit the inputs.
        """
        steps = check_steps(steps)
        step_size = check_step_size(step_size)
        clip = check_clip(clip)
        return_path = check_bool(return_path, "return_path")
        eps = check_eps(eps)

        def predicted_class(x: torch.Tensor, n_outputs: int, extras: Extras) -> torch.Tensor:
            return self.adapter.evaluate(x, torch.arange(n_outputs, device=x.device), extras=extras).argmax(dim=1)

        with self._prepared(inputs, target, chunk_points=chunk_points, default_target=predicted_class,
                            extra_inputs=extra_inputs) as call:
            x = call.x
            stack = reference_stack(references, x)
            representation = self.representation.resolved(self.adapter, x)
            integrals, walk = integrate_grad_path(call.integrator, representation, x, stack, steps=steps,
                                                  step_size=step_size, clip=clip, per_sample_output=call.per_sample,
                                                  return_path=return_path, eps=eps, extras=call.extras)
        inputs, outputs, per_sample = call.inputs, call.outputs, call.per_sample
        chosen = outputs[per_sample] if per_sample is not None else outputs.expand(len(x))
        back = {"device": inputs.device, "dtype": inputs.dtype}
        return IG2Attribution(
            attributions=integrals.attributions[:, 0].to(**back),
            counterfactuals=walk.counterfactuals.to(**back),
            completeness_residual=integrals.completeness_residual[:, 0].to(inputs.device),
            targets=chosen.to(inputs.device),
            predictions=integrals.predictions[:, 0].to(inputs.device),
            counterfactual_predictions=walk.counterfactual_predictions[:, :, 0].to(inputs.device),
            distances=walk.distances.to(inputs.device),
            path=None if walk.path is None else walk.path.to(**back),
        )


# ---------------------------------------------------------------------------------------------------- references
def _class_ids(labels: torch.Tensor, name: str) -> np.ndarray:
    """Class id per row: integer labels (N,) as they are, scores or one-hot rows (N, K) by argmax."""
    labels = as_tensor(labels, name)
    if labels.ndim == 2:
        return labels.argmax(dim=1).cpu().numpy().astype(np.int64)
    if labels.ndim == 1 and not labels.is_floating_point():
        return labels.cpu().numpy().astype(np.int64)
    raise ShapeError(f"{name} must be integer class labels (N,) or one score/one-hot row per sample (N, K); got "
                     f"dtype {labels.dtype} and shape {tuple(labels.shape)}")


def draw_reference_indices(classes: np.ndarray | None, predicted: np.ndarray | None, sample_indices: np.ndarray,
                           k: int, seed: int, n_data: int, exclude_self: bool = False) -> np.ndarray:
    """Indices of k distinct references per sample, keyed by (seed, sample index).

    Parameters
    ----------
    classes : int64 array (N,), optional
        Class of every candidate; with ``predicted``, only candidates of another class than the sample's
        predicted class are drawn. None: any candidate.
    predicted : int64 array (n,), optional
        Predicted class of each sample.
    sample_indices : int64 array (n,)
        Global index of each sample (the key of its draw: independent of batching).
    k : int
        References per sample.
    seed : int
        Seed of the draws.
    n_data : int
        Number of candidates N.
    exclude_self : bool
        Never draw the sample itself (when the samples are part of the candidates and ``classes`` is None).

    Returns
    -------
    int64 array (n, k)
    """
    seed = int(keyed_uint64(seed, _REFERENCE_TAG))
    sample_indices = np.asarray(sample_indices, dtype=np.int64)
    drawn = np.empty((len(sample_indices), k), dtype=np.int64)
    positions = np.arange(k)[None]
    if classes is None or predicted is None:
        pool = n_data - 1 if exclude_self else n_data
        if k > pool:
            raise InputError(f"{k} references per sample were requested but only {pool} candidates exist; ask for "
                             f"at most {pool}")
        picks = keyed_permutation(seed, sample_indices[:, None], positions, pool)
        if exclude_self:
            picks = picks + (picks >= sample_indices[:, None])
        return picks
    for label in np.unique(predicted):
        rows = np.flatnonzero(predicted == label)
        candidates = np.flatnonzero(classes != label)
        if k > len(candidates):
            raise InputError(f"{k} references of another class than {int(label)} were requested but the data hold "
                             f"only {len(candidates)}; ask for fewer references or pass them explicitly")
        drawn[rows] = candidates[keyed_permutation(seed, sample_indices[rows, None], positions, len(candidates))]
    return drawn


def select_references(data_x: Any, data_y: Any, predictions_or_labels: Any, k: int, seed: int = 0,
                      indices: Any = None, return_indices: bool = False
                      ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Draw k counterfactual references per sample: data samples whose label differs from its predicted class.

    The draw for a sample is a pure function of (seed, its index), so it does not depend on which batch the
    sample is explained in; the k references of a sample are distinct.

    Parameters
    ----------
    data_x : Tensor (N, *x_shape)
        Candidate references (e.g. the training inputs).
    data_y : Tensor (N,) of class labels, (N, K) one-hot/scores, or None
        Their labels; None draws from all candidates regardless of class.
    predictions_or_labels : Tensor (n,) of classes or (n, K) of scores
        The predicted class (argmax for scores) of each sample to explain.
    k : int
        References per sample.
    seed : int
        Seed of the draws.
    indices : array (n,), optional
        Global indices of the samples (the keys of their draws); default 0..n − 1.
    return_indices : bool
        Also return the (n, k) indices into ``data_x``.

    Returns
    -------
    Tensor (n, k, *x_shape)
        References (same dtype and device as ``data_x``), ready for :meth:`IG2.attribute`; and the indices.
    """
    data_x = as_tensor(data_x, "data_x")
    if data_x.ndim < 1 or len(data_x) == 0:
        raise ShapeError("data_x must be a non-empty stack of candidate references (N, *x_shape)")
    k = check_positive_int(k, "k", hint="references per sample")
    seed = check_seed(seed)
    predicted = _class_ids(predictions_or_labels, "predictions_or_labels")
    classes = None
    if data_y is not None:
        classes = _class_ids(data_y, "data_y")
        if len(classes) != len(data_x):
            raise ShapeError(f"data_x has {len(data_x)} samples but data_y has {len(classes)} labels")
    sample_indices = np.arange(len(predicted)) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
    if len(sample_indices) != len(predicted):
        raise ShapeError(f"indices has {len(sample_indices)} entries for {len(predicted)} samples")
    chosen = draw_reference_indices(classes, predicted, sample_indices, int(k), int(seed), len(data_x))
    references = data_x[torch.as_tensor(chosen.reshape(-1))].reshape(len(predicted), int(k), *data_x.shape[1:])
    if return_indices:
        return references, torch.as_tensor(chosen)
    return references


class OtherClassReferences(baseline_forms.BaselineSpec):
    """Dataset-wise IG2 references: ``count`` samples drawn per sample from the dataset, of another class.

    For class labels (integer (N,) or one-hot (N, K) targets), the draws exclude the sample's predicted class
    (argmax of the model's scores at x); for continuous targets they are any other samples. Draws are keyed by
    (seed, sample index) and distinct within a sample. The dataset's labels are read once before the run (a
    pass over a map-style Dataset's items).

    Parameters
    ----------
    count : int
        References per sample (R).
    """

    shared = False

    def __init__(self, count: int) -> None:
        self.count = check_positive_int(count, "the number of references")
        self._source: DataSource | None = None
        self._classes: np.ndarray | None = None
        self._seed = 0

    def prepare(self, x_shape: tuple[int, ...], source: DataSource | None, seed: int) -> None:
        if source is None or not source.has_random_access:
            raise InputError("references drawn from the data need random access to the samples; pass an (X, Y) "
                             "pair or a map-style Dataset, or pass explicit references (a tensor)")
        self._source, self._seed = source, int(seed)
        labels = _all_labels(source)
        self._classes = None
        if labels.ndim == 1 and not labels.is_floating_point():
            self._classes = labels.cpu().numpy().astype(np.int64)
        elif labels.ndim == 2 and labels.shape[1] > 1 and bool(((labels == 0) | (labels == 1)).all()) \
                and bool((labels.sum(dim=1) == 1).all()):
            self._classes = labels.argmax(dim=1).cpu().numpy().astype(np.int64)
        pool = len(source) - (1 if self._classes is None else 0)
        if self.count > pool:
            raise InputError(f"{self.count} references per sample were requested but the dataset offers {pool}")

    def for_samples(self, indices: np.ndarray, x: torch.Tensor, predicted: torch.Tensor | None = None) -> torch.Tensor:
        """References (n, R, *x_shape) for samples ``x`` with global ``indices`` and predicted classes (n,)."""
        if self._source is None:
            raise InputError("OtherClassReferences must be prepared with the dataset before use")
        if self._classes is not None and predicted is None:
            raise InputError("references of another class need each sample's predicted class")
        chosen = draw_reference_indices(
            self._classes, None if predicted is None else predicted.cpu().numpy().astype(np.int64),
            np.asarray(indices), self.count, self._seed, len(self._source), exclude_self=self._classes is None)
        drawn = self._source.inputs_at(chosen.reshape(-1))
        check_finite(drawn, "a reference input")
        return drawn.to(device=x.device, dtype=x.dtype).reshape(len(x), self.count, *x.shape[1:])

    def describe(self) -> dict[str, Any]:
        return {"kind": "ig2_references", "count": self.count, "shared": False,
                "rule": "another class than the predicted one" if self._classes is not None else "other samples"}


def _all_labels(source: DataSource) -> torch.Tensor:
    """Every target of a random-access source (an in-memory pair directly; a Dataset item by item)."""
    pair = source.in_memory_pair
    if pair is not None:
        return pair[1]
    return torch.cat([batch.y for batch in source.batches()])
