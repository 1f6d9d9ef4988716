"""The Pearson reducer behind the naive correlation: ρ over samples between each input component and each target.

    r_{k,i} = Cov_n(x_{·,i}, y_{·,k}) / (σ_{x,i} σ_{y,k})

No model and no gradients are involved. Three :class:`~igcorr.reducers.base.CoMoment` accumulators (inputs with
targets, inputs with themselves, targets with themselves) give the covariance and both standard deviations, so
batches and partial reducers combine exactly.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy import stats

from igcorr.errors import InputError
from igcorr.reducers.base import CoMoment, Computed, Reducer, SampleBatch, outputs_config
from igcorr.reducers.correlation import _CONSTANT_TOLERANCE, check_not_constant


def constant_components(std: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """Boolean mask of the components whose standard deviation vanishes relative to their mean's magnitude."""
    return std <= _CONSTANT_TOLERANCE * torch.clamp(mean.abs(), min=1.0)


class PearsonReducer(Reducer):
    """Streaming Pearson correlation between every input component and every target column.

    Parameters
    ----------
    outputs : list of int
        Output (target column) indices, for messages.

    Notes
    -----
    ``compute()`` returns ``maps`` = r (K, D); ``extra_maps["p_value"]`` (K, D), the two-sided p-value of r
    under the null of no correlation (Student t with N − 2 degrees of freedom, as ``scipy.stats.pearsonr``);
    and per-output diagnostics (K,): ``target_mean``, ``target_std`` and ``n_constant_inputs``. An input
    component that is constant over the dataset has no defined correlation: its r is set to 0 and its p-value
    to 1, with a warning. A constant target raises :class:`~igcorr.errors.ConstantTargetError`.
    """

    kind = "Pearson reducer"

    def __init__(self, outputs: list[int]) -> None:
        super().__init__()
        self.outputs = list(outputs)
        self.add_config("outputs", outputs_config(self.outputs))
        self.add_state("cross", CoMoment())  # a = inputs (n, 1, D), b = targets (n, K, 1): co-moment (K, D)
        self.add_state("inputs", CoMoment())  # a = b = inputs (n, D): sum of squared deviations
        self.add_state("targets", CoMoment())  # a = b = targets (n, K)

    def update(self, batch: SampleBatch) -> None:
        """Fold a batch with ``inputs`` (n, *x_shape) and ``targets`` (n, K)."""
        inputs = batch.inputs.flatten(start_dim=1).to(torch.float64)
        targets = batch.targets.to(torch.float64)
        if targets.ndim != 2 or len(targets) != len(inputs):
            raise InputError(f"the Pearson reducer needs targets of shape (n, K), got {tuple(targets.shape)}")
        self.cross.update(inputs.unsqueeze(1), targets.unsqueeze(2))
        self.inputs.update(inputs, inputs)
        self.targets.update(targets, targets)

    def compute(self) -> Computed:
        """r (K, D), ``extra_maps["p_value"]`` (K, D) and per-output diagnostics (K,)."""
        target_std = self.targets.covariance().clamp(min=0).sqrt()
        target_mean = self.targets.mean_a
        check_not_constant(target_std, target_mean, "target", self.outputs)
        input_std = self.inputs.covariance().clamp(min=0).sqrt()
        constant = constant_components(input_std, self.inputs.mean_a)
        n_constant = int(constant.sum())
        if n_constant:
            warnings.warn(
                f"{n_constant} of {constant.numel()} input components are constant over the dataset; their "
                "correlation with the targets is undefined and reported as 0 (p-value 1)",
                UserWarning,
                stacklevel=2,
            )
        scale = target_std.unsqueeze(1) * torch.where(constant, torch.ones_like(input_std), input_std)
        r = (self.cross.covariance() / scale).clamp(-1.0, 1.0)
        r = torch.where(constant.unsqueeze(0), torch.zeros_like(r), r)
        p_value = _pearson_p_value(r, self.cross.count)
        diagnostics = {
            "target_mean": target_mean,
            "target_std": target_std,
            "n_constant_inputs": torch.full_like(target_std, float(n_constant)),
        }
        return Computed(maps=r, extra_maps={"p_value": p_value}, diagnostics=diagnostics)


def _pearson_p_value(r: torch.Tensor, count: int) -> torch.Tensor:
    """Two-sided p-value of Pearson r for ``count`` samples (NaN when count < 3)."""
    if count < 3:
        return torch.full_like(r, float("nan"))
    df = count - 2
    r_np = r.detach().cpu().numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        t = r_np * np.sqrt(df / ((1.0 - r_np) * (1.0 + r_np)))
    p = 2.0 * stats.t.sf(np.abs(t), df)
    return torch.as_tensor(p, dtype=torch.float64, device=r.device)
