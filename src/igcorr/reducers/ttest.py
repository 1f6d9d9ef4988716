"""The t-test reducer behind the naive t-test: each input component, low-target group vs high-target group.

For output k the samples split into a low group (y_k ≤ a_k) and a high group (y_k ≥ b_k); samples in between
are in neither group. For every input component i the reducer keeps the count, mean and sum of squared
deviations of x_i in each group (one :class:`~igcorr.reducers.base.CoMoment` per group and output), so batches
and partial reducers combine exactly. ``compute`` gives the two-sample t statistic

    t_{k,i} = (mean_high − mean_low) / se,

i.e. ``scipy.stats.ttest_ind(x_high, x_low, equal_var=...)``, and its two-sided p-value. With
``equal_var=True`` (scipy's default, and the reference implementation's choice) this is Student's test with
the pooled variance and n_low + n_high − 2 degrees of freedom; with ``equal_var=False`` it is Welch's test with
Welch–Satterthwaite degrees of freedom.

The statistic and the p-value come from ``scipy.stats.ttest_ind_from_stats`` fed with the streamed group
means, sample standard deviations (ddof = 1) and counts. scipy does not return the degrees of freedom, so
``df`` is computed here: n_low + n_high − 2 (Student), or the Welch–Satterthwaite formula
(v_l/n_l + v_h/n_h)² / ((v_l/n_l)²/(n_l − 1) + (v_h/n_h)²/(n_h − 1)) (Welch; n_low + n_high − 2 where both
groups have no variance, which makes the formula 0/0). So is the standard error, which only serves to find the
degenerate components described below.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats

from igcorr._validation import check_bool
from igcorr.errors import InputError
from igcorr.reducers.base import CoMoment, Computed, Reducer, SampleBatch, outputs_config
from igcorr.reducers.correlation import _CONSTANT_TOLERANCE


class TTestReducer(Reducer):
    """Streaming two-sample t-test of every input component between low- and high-target samples, per output.

    Parameters
    ----------
    outputs : list of int
        Output (target column) indices, for messages.
    low, high : array-like of shape (K,)
        Thresholds a_k and b_k: the low group is y_k ≤ a_k, the high group y_k ≥ b_k (a_k ≤ b_k).
    equal_var : bool
        True: Student's test with pooled variance (scipy's default). False: Welch's test.

    Notes
    -----
    ``compute()`` returns ``maps`` = t (K, D); ``extra_maps``: ``p_value`` (two-sided) and ``df`` (degrees of
    freedom), both (K, D); per-output diagnostics (K,): ``n_low``, ``n_high``, ``threshold_low``,
    ``threshold_high`` and ``n_constant_inputs``. A component with no variance in either group has t = 0 and
    p = 1 if its two group means agree, and t = ±inf, p = 0 otherwise (where scipy would return NaN or inf).
    """

    kind = "t-test reducer"

    def __init__(self, outputs: list[int], low: object, high: object, equal_var: bool = True) -> None:
        super().__init__()
        self.outputs = list(outputs)
        n_outputs = len(self.outputs)
        self.low = _thresholds(low, n_outputs, "low")
        self.high = _thresholds(high, n_outputs, "high")
        if bool((self.low > self.high).any()):
            raise InputError(
                f"the low threshold must not exceed the high one (a ≤ b), got a = {self.low.tolist()} and "
                f"b = {self.high.tolist()}"
            )
        self.equal_var = check_bool(equal_var, "equal_var", hint="True: Student's test, False: Welch's")
        self.add_config("outputs", outputs_config(self.outputs))
        self.add_config("threshold_low", self.low, label="low thresholds")
        self.add_config("threshold_high", self.high, label="high thresholds")
        self.add_config("equal_var", int(self.equal_var))
        # a = b = the inputs of the group's samples: count, mean and sum of squared deviations
        self.low_groups = [CoMoment() for _ in range(n_outputs)]
        self.high_groups = [CoMoment() for _ in range(n_outputs)]
        for k, (low_group, high_group) in enumerate(zip(self.low_groups, self.high_groups)):
            self.add_state(f"low.{k}", low_group)
            self.add_state(f"high.{k}", high_group)

    def update(self, batch: SampleBatch) -> None:
        """Fold a batch with ``inputs`` (n, *x_shape) and ``targets`` (n, K)."""
        inputs = batch.inputs.flatten(start_dim=1).to(torch.float64)
        targets = batch.targets.to(torch.float64)
        if targets.ndim != 2 or targets.shape != (len(inputs), len(self.outputs)):
            raise InputError(
                f"the t-test reducer needs targets of shape (n, {len(self.outputs)}), got {tuple(targets.shape)}"
            )
        in_low = targets <= self.low.to(targets.device)
        in_high = targets >= self.high.to(targets.device)
        for k in range(len(self.outputs)):
            for groups, member in ((self.low_groups, in_low[:, k]), (self.high_groups, in_high[:, k])):
                selected = inputs[member]
                groups[k].update(selected, selected)

    def compute(self) -> Computed:
        """t (K, D), ``extra_maps["p_value"]`` and ``extra_maps["df"]`` (K, D), per-output diagnostics (K,)."""
        n_low = torch.tensor([g.count for g in self.low_groups], dtype=torch.float64)
        n_high = torch.tensor([g.count for g in self.high_groups], dtype=torch.float64)
        minimum = 2 if not self.equal_var else 1
        too_small = (n_low < minimum) | (n_high < minimum) | (n_low + n_high < 3)
        if bool(too_small.any()):
            details = ", ".join(f"output {self.outputs[k]}: {int(n_low[k])} low / {int(n_high[k])} high"
                                for k in torch.nonzero(too_small).reshape(-1).tolist())
            raise InputError(
                f"the t-test needs at least {minimum} sample(s) in each group and 3 in total ({details}); move the "
                "thresholds (thresholds=(a, b)) so that both groups are populated, or drop those outputs"
            )
        mean_low = torch.stack([g.mean_a for g in self.low_groups])
        mean_high = torch.stack([g.mean_a for g in self.high_groups])
        squares_low = torch.stack([g.comoment for g in self.low_groups]).clamp(min=0)
        squares_high = torch.stack([g.comoment for g in self.high_groups]).clamp(min=0)
        device = mean_low.device
        n_low, n_high = n_low.to(device).unsqueeze(1), n_high.to(device).unsqueeze(1)
        difference = mean_high - mean_low
        # sample variances (ddof = 1); a lone sample (allowed in Student's test) has no spread of its own
        var_low = squares_low / (n_low - 1).clamp(min=1)
        var_high = squares_high / (n_high - 1).clamp(min=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            tested = stats.ttest_ind_from_stats(_numpy(mean_high), _numpy(var_high.sqrt()), _numpy(n_high),
                                                _numpy(mean_low), _numpy(var_low.sqrt()), _numpy(n_low),
                                                equal_var=self.equal_var)
        # scipy reports neither the degrees of freedom nor the standard error (needed to find the degenerate
        # components): both by the same formulas here
        if self.equal_var:
            df = (n_low + n_high - 2).expand_as(difference)
            se = ((squares_low + squares_high) / df * (1.0 / n_low + 1.0 / n_high)).sqrt()
        else:
            part_low, part_high = var_low / n_low, var_high / n_high
            se = (part_low + part_high).sqrt()
            welch = (part_low + part_high) ** 2 / (part_low**2 / (n_low - 1) + part_high**2 / (n_high - 1))
            df = torch.where(torch.isfinite(welch), welch, (n_low + n_high - 2).expand_as(welch))
        scale = torch.maximum(mean_low.abs(), mean_high.abs()).clamp(min=1.0)
        degenerate = se <= _CONSTANT_TOLERANCE * scale
        same = difference.abs() <= _CONSTANT_TOLERANCE * scale
        statistic = torch.as_tensor(np.asarray(tested.statistic, dtype=np.float64), device=device)
        p_value = torch.as_tensor(np.asarray(tested.pvalue, dtype=np.float64), device=device)
        t = torch.where(degenerate, torch.where(same, torch.zeros_like(difference), difference.sign() * np.inf),
                        statistic)
        p_value = torch.where(degenerate, torch.where(same, 1.0, 0.0).to(p_value), p_value)
        n_constant = (degenerate & same).sum(dim=1).to(torch.float64)
        diagnostics = {
            "n_low": n_low.squeeze(1),
            "n_high": n_high.squeeze(1),
            "threshold_low": self.low.to(device),
            "threshold_high": self.high.to(device),
            "n_constant_inputs": n_constant,
        }
        return Computed(maps=t, extra_maps={"p_value": p_value, "df": df.contiguous()}, diagnostics=diagnostics)


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()


def _thresholds(value: object, n_outputs: int, name: str) -> torch.Tensor:
    """A threshold given as a scalar or one value per output, as a float64 tensor (K,)."""
    try:
        tensor = torch.as_tensor(np.asarray(value, dtype=np.float64))
    except (TypeError, ValueError) as error:
        raise InputError(f"the {name} threshold must be a number or one number per output, got {value!r}") from error
    if tensor.ndim == 0:
        tensor = tensor.expand(n_outputs)
    if tensor.shape != (n_outputs,):
        raise InputError(
            f"the {name} threshold has shape {tuple(tensor.shape)}; give one number, or one per attributed output "
            f"({n_outputs})"
        )
    if not bool(torch.isfinite(tensor).all()):
        raise InputError(f"the {name} threshold must be finite, got {tensor.tolist()}")
    return tensor.clone()
