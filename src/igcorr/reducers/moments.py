"""The moments reducer behind IG moments: mean and standard deviation of per-sample attributions.

For per-sample attributions A_{n,k,i} the reducer keeps, per output k and input component i, the mean
(1/N) Σ_n A_{n,k,i} and the population standard deviation sqrt((1/N) Σ_n (A_{n,k,i} − mean)²) — a true
standard deviation, not the variance. Both come from one :class:`~igcorr.reducers.base.CoMoment` of the
attributions with themselves, so batches and partial reducers combine exactly.
"""

from __future__ import annotations

import torch

from igcorr.errors import InputError
from igcorr.reducers.base import CoMoment, Computed, Reducer, SampleBatch, SumAndMax, outputs_config


class MomentsReducer(Reducer):
    """Streaming mean and standard deviation (ddof = 0) over samples of per-sample attributions.

    Parameters
    ----------
    outputs : list of int
        Model output indices (for messages).

    Notes
    -----
    ``compute()`` returns ``maps`` = the mean (K, D), ``extra_maps["std"]`` = the standard deviation (K, D), and
    per-output diagnostics (K,): ``prediction_mean``, ``baseline_prediction_mean``, ``map_sum`` (Σ_i mean,
    which equals prediction_mean − baseline_prediction_mean up to the attribution's completeness error) and
    ``completeness_mean`` / ``completeness_max`` of |Σ_i A_{n,k,i} − (ŷ_{n,k} − f̄_k(B_n))| over samples.
    """

    kind = "moments reducer"

    def __init__(self, outputs: list[int]) -> None:
        super().__init__()
        self.outputs = list(outputs)
        self.add_config("outputs", outputs_config(self.outputs))
        # a = b = the attributions: the co-moment is the sum of squared deviations (the mean is kept twice)
        self.add_state("attributions", CoMoment())
        # a = predictions, b = mean baseline predictions: only their means are used
        self.add_state("scores", CoMoment())
        # |Σ_i A − (ŷ − f̄(B))| per sample and output: the completeness error
        self.add_state("residuals", SumAndMax())

    def update(self, batch: SampleBatch) -> None:
        """Fold a batch with ``attributions`` (n, K, *x_shape), ``predictions`` and ``baseline_predictions`` (n, K)."""
        if batch.attributions is None or batch.predictions is None or batch.baseline_predictions is None:
            raise InputError("the moments reducer needs attributions, predictions and baseline predictions")
        attributions = batch.attributions.flatten(start_dim=2).to(torch.float64)
        self.attributions.update(attributions, attributions)
        self.scores.update(batch.predictions, batch.baseline_predictions)
        self.residuals.update((attributions.sum(dim=2) - (batch.predictions - batch.baseline_predictions)).abs())

    def compute(self) -> Computed:
        """Mean map (K, D), ``extra_maps["std"]`` (K, D) and per-output diagnostics (K,)."""
        variance = self.attributions.covariance()
        mean = self.attributions.mean_a
        count = self.attributions.count
        diagnostics = {
            "prediction_mean": self.scores.mean_a,
            "baseline_prediction_mean": self.scores.mean_b,
            "map_sum": mean.sum(dim=1),
            "completeness_mean": self.residuals.total / count,
            "completeness_max": self.residuals.largest,
        }
        return Computed(maps=mean, extra_maps={"std": variance.clamp(min=0).sqrt()}, diagnostics=diagnostics)
