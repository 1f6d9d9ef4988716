"""The correlation reducer behind IGC, IGaC and BSC.

For per-sample attributions A_{n,k,i} whose sum over i is f_k(x_n) − f̄_k(B_n), the map

    M_{k,i} = Cov_n(A_{·,k,i}, t_{·,k}) / (σ_t σ_ŷ)

sums to ρ(ŷ_k, t_k) − Cov_n(f̄_k(B_n), t_k)/(σ_t σ_ŷ). With t the targets this is IGC (or BSC for Baseline
Shapley attributions); with t the model's own predictions it is IGaC, whose map sums to ≈ 1.
"""

from __future__ import annotations

import torch

from igcorr._validation import check_choice
from igcorr.errors import ConstantTargetError, InputError
from igcorr.reducers.base import CoMoment, Computed, Reducer, SampleBatch, SumAndMax, outputs_config

#: a standard deviation this small relative to the mean magnitude counts as constant
_CONSTANT_TOLERANCE = 1e-12


def check_not_constant(std: torch.Tensor, mean: torch.Tensor, what: str, outputs: list[int]) -> None:
    """Raise ConstantTargetError if any output's standard deviation vanishes.

    Targets are judged relative to their own scale (targets in small units are not constant); the model's
    scores relative to max(|mean|, 1), so that rounding noise around a constant score counts as constant.
    """
    floor = 0.0 if what == "target" else 1.0
    constant = (std == 0) | (std <= _CONSTANT_TOLERANCE * torch.clamp(mean.abs(), min=floor))
    if bool(constant.any()):
        names = [outputs[int(k)] for k in torch.nonzero(constant).reshape(-1)]
        raise ConstantTargetError(
            f"the {what} of output(s) {names} is constant over the dataset, so its correlation is undefined; "
            "drop those outputs (outputs=...) or use data in which they vary"
        )


class CorrelationReducer(Reducer):
    """Streaming Cov(attribution, t)/(σ_t σ_ŷ) with the completeness decomposition.

    Parameters
    ----------
    outputs : list of int
        Model output indices (for messages).
    against : {"targets", "predictions"}
        t = the targets (IGC, BSC) or the attributed predictions themselves (IGaC).
    """

    kind = "correlation reducer"

    def __init__(self, outputs: list[int], against: str = "targets") -> None:
        super().__init__()
        self.outputs = list(outputs)
        self.against = check_choice(against, "against", ("targets", "predictions"))
        self.add_config("outputs", outputs_config(self.outputs))
        self.add_config("against", int(self.against == "predictions"))
        self.add_state("attribution_target", CoMoment())
        # columns: prediction, target, mean baseline prediction; their full (3, 3) co-moment per output
        self.add_state("scalars", CoMoment())
        # |Σ_i A − (ŷ − f̄(B))| per sample and output: the quadrature error
        self.add_state("residuals", SumAndMax())
        # Monte-Carlo error: Σ_n v_n t_n², Σ_n v_n t_n, Σ_n v_n with v the variance of each sample's estimate
        self.add_state("variance_sums", None, combine="sum")
        # adaptive quadrature: the nodes each sample needed
        self.add_state("steps", SumAndMax())

    def update(self, batch: SampleBatch) -> None:
        if batch.attributions is None or batch.predictions is None or batch.baseline_predictions is None:
            raise InputError("the correlation reducer needs attributions, predictions and baseline predictions")
        target = batch.predictions if self.against == "predictions" else batch.targets
        attributions = batch.attributions.flatten(start_dim=2)
        self.attribution_target.update(attributions, target.unsqueeze(2))
        columns = torch.stack([batch.predictions, target, batch.baseline_predictions], dim=2)
        self.scalars.update(columns.unsqueeze(3), columns.unsqueeze(2))
        self.residuals.update((attributions.sum(dim=2) - (batch.predictions - batch.baseline_predictions)).abs())
        if batch.attribution_variance is not None:
            variance = batch.attribution_variance.flatten(start_dim=2).to(torch.float64)
            powers = torch.stack([target.square(), target, torch.ones_like(target)], dim=0).unsqueeze(3)
            self.fold(variance_sums=(powers * variance.unsqueeze(0)).sum(dim=1))
        if batch.steps is not None:
            self.steps.update(batch.steps)

    def compute(self) -> Computed:
        covariance = self.scalars.covariance()
        means = self.scalars.mean_a[..., 0]
        prediction_std = covariance[:, 0, 0].clamp(min=0).sqrt()
        target_std = covariance[:, 1, 1].clamp(min=0).sqrt()
        what = "prediction" if self.against == "predictions" else "target"
        check_not_constant(target_std, means[:, 1], what, self.outputs)
        check_not_constant(prediction_std, means[:, 0], "model's attributed score", self.outputs)
        scale = target_std * prediction_std
        maps = self.attribution_target.covariance() / scale.unsqueeze(1)
        correlation = covariance[:, 0, 1] / scale
        baseline_term = -covariance[:, 2, 1] / scale
        count = self.scalars.count
        diagnostics = {
            "correlation": correlation,
            "baseline_term": baseline_term,
            "map_sum": maps.sum(dim=1),
            "completeness_mean": self.residuals.total / count,
            "completeness_max": self.residuals.largest,
            "target_std": target_std,
            "prediction_std": prediction_std,
        }
        extra_maps = {}
        if self.variance_sums is not None:
            # Var(map_i) = Σ_n (t_n − t̄)² v_{n,i} / (N σ_t σ_ŷ)², expanded in the three accumulated sums
            mean_target = self.attribution_target.mean_b
            squares, linear, plain = self.variance_sums
            spread = (squares - 2 * mean_target * linear + mean_target.square() * plain).clamp(min=0)
            extra_maps["standard_error"] = spread.sqrt() / (count * scale.unsqueeze(1))
        if self.steps.total is not None:
            diagnostics["steps_mean"] = (self.steps.total / count).expand(len(self.outputs)).clone()
            diagnostics["steps_max"] = self.steps.largest.expand(len(self.outputs)).clone()
        return Computed(maps=maps, extra_maps=extra_maps, diagnostics=diagnostics)
