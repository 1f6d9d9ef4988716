"""Shared fixtures: tiny float64 models with analytic or smooth behaviour, and a dataset that crashes."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset


def make_mlp(n_in: int = 6, n_hidden: int = 8, n_out: int = 3, seed: int = 0) -> nn.Module:
    """A smooth (tanh) float64 MLP in eval mode."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n_in, n_hidden), nn.Tanh(), nn.Linear(n_hidden, n_out)).double().eval()


class SmallCNN(nn.Module):
    """Two conv layers and two linear layers on (1, 8, 8) inputs."""

    def __init__(self, n_out: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Softplus(), nn.Conv2d(4, 4, 3, stride=2),
                                      nn.Tanh(), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(4 * 3 * 3, 12), nn.Softplus(), nn.Linear(12, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@pytest.fixture
def mlp() -> nn.Module:
    return make_mlp()


@pytest.fixture
def cnn() -> nn.Module:
    torch.manual_seed(1)
    return SmallCNN().double().eval()


@pytest.fixture
def regression_data(mlp):
    """(X, Y) with targets correlated with the MLP's outputs."""
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(60, 6, dtype=torch.float64, generator=generator)
    with torch.no_grad():
        y = mlp(x) + 0.5 * torch.randn(60, 3, dtype=torch.float64, generator=generator)
    return x, y


class Crashing(Dataset):
    """Raises the first time sample ``fail_at`` is read with gradients enabled, i.e. for the attribution (a crash
    in the middle of a run; reads without gradients, such as an automatic rule's pilot, do not count)."""

    def __init__(self, x, y, fail_at=None):
        self.x, self.y, self.fail_at, self.crashed = x, y, fail_at, False

    def __len__(self):
        return len(self.x)

    def __getitem__(self, index):
        if index == self.fail_at and not self.crashed and torch.is_grad_enabled():
            self.crashed = True
            raise RuntimeError("simulated crash")
        return self.x[index], self.y[index]
