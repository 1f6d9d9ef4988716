"""The memory budget covers what a run accumulates and draws, not only its chunks of path points: large states
are refused before any path integral, and large ones that fit stay within the budget (fresh processes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import igcorr
from igcorr.errors import InputError

BUDGET = 256 * 2**20


def peak_growth(case: str, budget: int) -> int:
    script = Path(__file__).parent / "scripts" / "state_memory.py"
    completed = subprocess.run([sys.executable, str(script), case, str(budget)], capture_output=True, text=True,
                               timeout=600, check=True)
    return int(completed.stdout.split()[0])


@pytest.mark.parametrize("case", ["montecarlo", "permutations"])
def test_large_draws_and_states_stay_within_the_budget(case):
    # Monte-Carlo: 400,000 points per sample, each with its own baseline; permutations: P = 999 accumulators
    assert peak_growth(case, BUDGET) <= BUDGET


def test_a_state_beyond_the_budget_is_refused_before_any_path_integral():
    calls = []
    model = nn.Sequential(nn.Linear(10_000, 4), nn.Tanh(), nn.Linear(4, 50)).double().eval()
    model.register_forward_hook(lambda _m, inputs, _o: calls.append(len(inputs[0])))
    x, y = torch.randn(8, 10_000, dtype=torch.float64), torch.randn(8, 50, dtype=torch.float64)
    with pytest.raises(InputError, match=r"needs about 7\d\d\d\.\d MiB .* permutations/bootstrap"):
        igcorr.IGC(model, max_memory=BUDGET).attribute((x, y), permutations=999, progress=False)
    assert sum(calls) <= 32  # the probes of the first samples (outputs, readout, first layer), no path point


def test_monte_carlo_draws_of_one_sample_beyond_the_budget_are_refused():
    model = nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 1)).double().eval()
    x, y = torch.randn(8, 6, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    with pytest.raises(InputError, match="max_memory"):
        igcorr.IGC(model, max_memory=BUDGET).attribute((x, y), estimator="montecarlo", n_steps=10_000_000,
                                                        progress=False)
