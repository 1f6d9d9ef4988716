"""Dataset-wise attribution methods: a per-sample attribution streamed into a mergeable reducer.

:class:`DatasetMethod` owns the run loop shared by every method (data adapters, target encoding, baselines,
the gradient engine, progress, metadata); each method only says which per-sample quantity it computes and
which reducer it feeds.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from igcorr import baselines as baseline_forms
from igcorr import distributed
from igcorr.checkpoint import DEFAULT_EVERY_SECONDS, Checkpoint, model_fingerprint
from igcorr.data import Batch, DataSource
from igcorr.engine import Engine, PathIntegrals, ScoreLike, describe_score, resolve_outputs
from igcorr.errors import InputError, ShapeError
from igcorr.quadrature import rule as quadrature_rule
from igcorr.reducers import CorrelationReducer, Reducer, SampleBatch
from igcorr.reducers.correlation import check_not_constant
from igcorr.result import Result
from igcorr.runner import run_reduction

logger = logging.getLogger(__name__)

#: memory budget (bytes) for one batch of per-sample float64 attributions when batch_size is not given
_ATTRIBUTION_BUDGET = 128 * 2**20
_MAX_DEFAULT_BATCH = 256


def encode_targets(y: torch.Tensor, n_model_outputs: int, outputs: list[int]) -> torch.Tensor:
    """Targets of a batch as float64 (n, K) aligned with the attributed ``outputs``.

    * integer class labels of shape (n,) are one-hot encoded over the model's outputs;
    * float targets of shape (n,) are one output;
    * (n, K_model) targets are indexed by ``outputs``; (n, len(outputs)) targets are used as they are.
    """
    if y.ndim == 1 and not y.is_floating_point():
        labels = y.to(torch.int64)
        if bool((labels < 0).any()) or bool((labels >= n_model_outputs).any()):
            bad = int(labels[(labels < 0) | (labels >= n_model_outputs)][0])
            raise InputError(
                f"class label {bad} is out of range for a model with {n_model_outputs} outputs; labels must be "
                f"in 0..{n_model_outputs - 1}"
            )
        y = torch.nn.functional.one_hot(labels, n_model_outputs)
    elif y.ndim == 1:
        y = y.unsqueeze(1)
    if y.ndim != 2:
        raise ShapeError(
            f"targets of a batch have shape {tuple(y.shape)}; give (N,) or (N, K) targets (one column per output)"
        )
    y = y.to(torch.float64)
    if y.shape[1] == n_model_outputs:
        return y[:, outputs]
    if y.shape[1] == len(outputs):
        return y
    raise ShapeError(
        f"targets have {y.shape[1]} columns but the model has {n_model_outputs} outputs and {len(outputs)} are "
        "attributed; give one target column per model output or per attributed output"
    )


class DatasetMethod:
    """Base of the dataset-wise methods.

    Parameters
    ----------
    model : nn.Module or callable
        Maps inputs (P, *x_shape) to outputs (P, K_model) or (P,). A parameter-free module or plain
        differentiable function works too; device and dtype are then taken from the data.
    score : None, "softmax", "log_softmax" or callable
        What is attributed for each output (raw output by default).
    max_memory : int, optional
        Bytes the gradient engine's chunks of path points may use (default: a quarter of the available memory,
        at most 4 GiB); a quarter of it also bounds the batch of per-sample attributions when ``batch_size`` is
        not given.
    output_strategy : {"auto", "loop", "batched"}
        One backward pass per output, or all outputs in one batched pass; "auto" times both on the first chunk.
    readout : "auto", False, str or nn.Linear
        Linear-readout shortcut for models with more attributed outputs than readout inputs (exact); "auto"
        detects a final ``nn.Linear``. Reported in ``Result.metadata["engine"]``.
    """

    name = "dataset_method"

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor], score: ScoreLike = None, *,
                 max_memory: int | None = None, output_strategy: str = "auto", readout: Any = "auto") -> None:
        self.engine = Engine(model, score, max_memory=max_memory, output_strategy=output_strategy, readout=readout)
        self.model = model
        self.score = score

    # -- hooks for subclasses
    def make_reducer(self, outputs: list[int]) -> Reducer:
        """A fresh reducer for the attributed ``outputs``."""
        raise NotImplementedError

    def per_sample(self, x: torch.Tensor, indices: np.ndarray, context: dict[str, Any]) -> PathIntegrals | None:
        """Per-sample attributions of a batch, or None for methods that reduce the inputs themselves."""
        raise NotImplementedError

    # -- the run loop
    def _run(self, data: Any, *, outputs: int | Sequence[int] | None, batch_size: int | None, seed: int,
             progress: bool, context: dict[str, Any], parameters: dict[str, Any],
             checkpoint: str | os.PathLike | None = None,
             checkpoint_every: float = DEFAULT_EVERY_SECONDS) -> Result:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise InputError(f"seed must be an integer, got {seed!r}")
        started = time.perf_counter()
        source = DataSource(data, 1 if batch_size is None else batch_size)
        if source.has_length and len(source) < 2:
            raise InputError(
                "the dataset is empty: there is nothing to attribute" if len(source) == 0 else
                "the dataset has a single sample: a correlation over samples needs at least two"
            )
        with self.engine.frozen():
            x_probe = self.engine.prepare_inputs(source.head(4))
            x_shape = tuple(x_probe.shape[1:])
            n_model_outputs = self.engine.n_model_outputs(x_probe)
            self.engine.check_batch_independence(x_probe)
            selected = resolve_outputs(outputs, n_model_outputs)
            self.engine.configure(x_probe, torch.as_tensor(selected, dtype=torch.int64, device=x_probe.device))
            if batch_size is None:
                per_sample_bytes = 8 * len(selected) * max(1, int(np.prod(x_shape)))
                budget = min(_ATTRIBUTION_BUDGET, (self.engine.max_memory or _ATTRIBUTION_BUDGET * 4) // 4)
                source.batch_size = int(np.clip(budget // per_sample_bytes, 1, _MAX_DEFAULT_BATCH))
            self._check_targets_upfront(source, n_model_outputs, selected)
            spec: baseline_forms.BaselineSpec = context["baselines"]
            spec.prepare(x_shape, source, int(seed))
            output_index = torch.as_tensor(selected, dtype=torch.int64, device=x_probe.device)
            context.update(outputs=output_index, n_model_outputs=n_model_outputs)

            def step(batch: Batch) -> SampleBatch:
                x = self.engine.prepare_inputs(batch.x)
                if tuple(x.shape[1:]) != x_shape:
                    raise ShapeError(
                        f"sample {batch.start} has shape {tuple(x.shape[1:])} but earlier samples have {x_shape}"
                    )
                indices = np.arange(batch.start, batch.start + len(x))
                targets = encode_targets(batch.y, n_model_outputs, selected).to(x.device)
                integrals = self.per_sample(x, indices, context)
                return SampleBatch(
                    indices=torch.as_tensor(indices, device=x.device), inputs=x, targets=targets,
                    attributions=None if integrals is None else integrals.attributions,
                    predictions=None if integrals is None else integrals.predictions,
                    baseline_predictions=None if integrals is None else integrals.baseline_predictions,
                )

            saver = None
            if checkpoint is not None:
                rank, world_size = distributed.world()
                path = Path(checkpoint)
                if world_size > 1:
                    path = path.with_name(f"{path.name}.rank{rank}-of-{world_size}")
                fingerprint = {
                    "method": self.name, "model": model_fingerprint(self.model), "score": describe_score(self.score),
                    "n_samples": len(source) if source.has_length else None, "x_shape": list(x_shape),
                    "outputs": selected, "seed": int(seed), "baselines": spec.describe(), **parameters,
                }
                saver = Checkpoint(path, fingerprint, checkpoint_every)
            reducer, seen = run_reduction(source, lambda: self.make_reducer(selected), step, progress=progress,
                                          description=self.name.upper(), device=x_probe.device, checkpoint=saver)
        computed = reducer.compute()
        maps = computed.maps.reshape(len(selected), *x_shape).cpu().numpy()
        metadata = {
            "method": self.name,
            "outputs": selected,
            "n_model_outputs": n_model_outputs,
            "n_samples": seen,
            "x_shape": list(x_shape),
            "score": describe_score(self.score),
            "seed": int(seed),
            "batch_size": source.batch_size,
            "world_size": distributed.world()[1],
            "engine": self.engine.describe(),
            "parameters": parameters,
            "baselines": spec.describe(),
            "seconds": time.perf_counter() - started,
            "versions": {"igcorr": _version(), "torch": torch.__version__, "numpy": np.__version__,
                         "python": platform.python_version()},
        }
        logger.info("%s on %d samples took %.1f s", self.name, seen, metadata["seconds"])
        return Result(
            method=self.name,
            maps=maps,
            diagnostics={k: v.cpu().numpy() for k, v in computed.diagnostics.items()},
            extra_maps={k: v.reshape(len(selected), *x_shape).cpu().numpy() for k, v in computed.extra_maps.items()},
            metadata=metadata,
        )

    @staticmethod
    def _check_targets_upfront(source: DataSource, n_model_outputs: int, outputs: list[int]) -> None:
        """For in-memory data, refuse constant targets before spending any compute."""
        pair = getattr(source, "_pair", None)
        if pair is None:
            return
        targets = encode_targets(pair[1], n_model_outputs, outputs)
        check_not_constant(targets.std(dim=0, unbiased=False), targets.mean(dim=0), "target", outputs)


def _version() -> str:
    from igcorr import __version__

    return __version__


class IGC(DatasetMethod):
    """Integrated Gradient Correlation: which input components carry the model's correlation with the targets.

    For every sample n, output k and input component i the integrated gradients IG_{n,k,i} (averaged over the
    sample's baselines) are weighted by the centred target and normalised:

        IGC_{k,i} = Cov_n(IG_{·,k,i}, y_{·,k}) / (σ_y σ_ŷ),

    so that Σ_i IGC_{k,i} = ρ(ŷ_k, y_k) + baseline_term_k (zero for shared baselines) up to quadrature error,
    and any region's sum is its share of the correlation.

    Parameters
    ----------
    model : nn.Module or callable
        Maps a batch (P, *x_shape) to (P, K_model) outputs.
    score : None, "softmax", "log_softmax" or callable
        The attributed quantity per output; for classifiers the paper attributes the softmax probability.
    """

    name = "igc"

    def attribute(self, data: Any, baselines: Any = None, n_steps: int = 64, method: str = "trapezoid",
                  outputs: int | Sequence[int] | None = None, batch_size: int | None = None, seed: int = 0,
                  progress: bool = True, checkpoint: str | os.PathLike | None = None,
                  checkpoint_every: float = DEFAULT_EVERY_SECONDS) -> Result:
        """Compute the IGC maps over a dataset in one streaming pass.

        Parameters
        ----------
        data : (X, Y) pair, Dataset or DataLoader
            X of shape (N, *x_shape); Y of shape (N, K) or (N,). A float (N,) target is one output; integer
            (N,) class labels are one-hot encoded over the model's outputs (classification).
        baselines : None, float, tensor, int or igcorr.baselines spec
            None: zero; float: constant; tensor: one baseline (x_shape) or M baselines (M, *x_shape) shared by
            all samples; int M: M baselines drawn from the data afresh for every sample (the paper's setting;
            use ``igcorr.baselines.FromData(M, shared=True)`` for one shared draw).
        n_steps : int
            Quadrature nodes per path.
        method : str
            Quadrature rule: "trapezoid" (default), "riemann_left", "riemann_right", "riemann_middle",
            "gausslegendre".
        outputs : None, int or list of int
            Which model outputs (after ``score``) to attribute; None for all.
        batch_size : int, optional
            Samples per batch; by default chosen so a batch of attributions takes ≤ 128 MiB.
        seed : int
            Seed of every random draw (dataset baselines); results do not depend on batch size.
        progress : bool
            Show a progress bar.
        checkpoint : path, optional
            Save progress to this file (atomically, every ``checkpoint_every`` seconds and at the end); calling
            again with the same arguments resumes after the last saved sample. Under torch.distributed each
            rank writes ``<checkpoint>.rank<r>-of-<world>``.
        checkpoint_every : float
            Seconds between checkpoint writes (0: after every batch).

        Returns
        -------
        Result
            ``maps`` (K, *x_shape), ``correlation``, ``baseline_term``, ``ig_completeness`` and metadata. Under
            torch.distributed (e.g. ``torchrun``) every rank attributes its shard and returns the merged Result.
        """
        spec = baseline_forms.resolve(baselines)
        rule = quadrature_rule(method, n_steps)
        parameters = {"n_steps": int(n_steps), "method": method}
        return self._run(data, outputs=outputs, batch_size=batch_size, seed=seed, progress=progress,
                         context={"baselines": spec, "rule": rule}, parameters=parameters,
                         checkpoint=checkpoint, checkpoint_every=checkpoint_every)

    def make_reducer(self, outputs: list[int]) -> Reducer:
        return CorrelationReducer(outputs, against="targets")

    def per_sample(self, x: torch.Tensor, indices: np.ndarray, context: dict[str, Any]) -> PathIntegrals:
        baselines = context["baselines"].for_samples(indices, x)
        return self.engine.integrate(x, baselines, context["rule"], context["outputs"], first_index=int(indices[0]))
