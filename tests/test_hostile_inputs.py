"""A catalogue of bad inputs: each gives a specific igcorr exception (or a documented warning) whose message
says what is wrong and how to fix it."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

import igcorr
from igcorr.errors import ConstantTargetError, InputError, ModelError, NonFiniteError, ShapeError


def igc(model, data, score=None, **kwargs):
    kwargs.setdefault("progress", False)
    kwargs.setdefault("n_steps", 4)
    return igcorr.IGC(model, score=score).attribute(data, **kwargs)


@pytest.fixture
def data():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(20, 6, dtype=torch.float64, generator=generator)
    return x, x[:, :3] + torch.randn(20, 3, dtype=torch.float64, generator=generator)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("where", ["inputs", "targets"])
def test_non_finite_data_names_the_sample(mlp, data, value, where):
    x, y = (t.clone() for t in data)
    (x if where == "inputs" else y)[13, 1] = value
    with pytest.raises(NonFiniteError, match=r"sample 13 contains NaN or Inf"):
        igc(mlp, (x, y), batch_size=4)


def test_non_finite_baselines(mlp, data):
    baseline = torch.zeros(6, dtype=torch.float64)
    baseline[2] = float("nan")
    with pytest.raises(NonFiniteError, match="baselines"):
        igc(mlp, data, baselines=baseline)
    x, y = (t.clone() for t in data)
    x[3, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="sample 3"):
        igc(mlp, (x, y), baselines=igcorr.baselines.FromData(20, shared=True))


def test_constant_targets_and_too_few_samples(mlp, data):
    x, y = data
    with pytest.raises(ConstantTargetError, match=r"output\(s\) \[0, 1, 2\] is constant"):
        igc(mlp, (x, torch.ones_like(y)))
    with pytest.raises(InputError, match="single sample"):
        igc(mlp, (x[:1], y[:1]))
    with pytest.raises(InputError, match="empty"):
        igc(mlp, (x[:0], y[:0]))


def test_constant_prediction(data):
    x, y = data
    with pytest.raises(ConstantTargetError, match="attributed score"):
        igc(lambda inputs: 0.0 * inputs[:, :3] + 1.0, (x, y))


def test_shape_mismatches(mlp, data):
    x, y = data
    with pytest.raises(ShapeError, match="X has 20 samples but Y has 19"):
        igc(mlp, (x, y[:-1]))
    with pytest.raises(ShapeError, match="one target column per model output"):
        igc(mlp, (x, torch.cat([y, y], dim=1)))
    with pytest.raises(ShapeError, match=r"\(N,\) or \(N, K\)"):
        igc(mlp, (x, y[:, :, None]))
    with pytest.raises(ShapeError, match="do not fit inputs"):
        igc(mlp, data, baselines=torch.zeros(2, 5, dtype=torch.float64))

    class Ragged(Dataset):
        def __len__(self):
            return 6

        def __getitem__(self, index):
            return torch.randn(6 if index < 3 else 5, dtype=torch.float64), torch.randn(3, dtype=torch.float64)

    with pytest.raises((ShapeError, ModelError, InputError)):
        igc(mlp, Ragged(), batch_size=3)


def test_integer_inputs_without_embedding(data):
    x, y = data
    model = nn.Linear(6, 3)
    with pytest.raises(InputError, match="gradients need continuous inputs"):
        igc(model, (x.round().long(), y))


def test_batch_dependent_model_is_refused(data):
    batch_normalised = lambda inputs: (inputs - inputs.mean(dim=0)) @ torch.ones(6, 3, dtype=inputs.dtype)
    with pytest.raises(ModelError, match="changes with the other samples in its batch"):
        igc(batch_normalised, data)


def test_training_mode_batchnorm_is_switched_with_a_warning(data):
    model = nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4), nn.Linear(4, 3)).double()
    model.train()
    with pytest.warns(UserWarning, match="BatchNorm1d"):
        igc(model, data)
    assert model.training


def test_dataset_baselines_larger_than_the_dataset(mlp, data):
    for spec in (30, igcorr.baselines.FromData(30, shared=True)):
        with pytest.raises(InputError, match="at most 20"):
            igc(mlp, data, baselines=spec)


def test_output_selection_errors(mlp, data):
    with pytest.raises(InputError, match="out of range"):
        igc(mlp, data, outputs=3)
    with pytest.raises(InputError, match="duplicates"):
        igc(mlp, data, outputs=[1, 1])
    x, _ = data
    with pytest.raises(InputError, match="class label 3 is out of range for a model with 3 outputs"):
        igc(mlp, (x, torch.arange(20) % 8))


def test_bad_models_and_scores(mlp, data):
    with pytest.raises(ModelError, match="score callable returned"):
        igc(mlp, data, score=lambda out: out.sum())
    with pytest.raises(ModelError, match=r"must return \(batch, outputs\)"):
        igc(lambda inputs: inputs.reshape(len(inputs), 2, 3), data)
    with pytest.raises(ModelError, match="must return a tensor"):
        igc(lambda inputs: [inputs], data)
    with pytest.raises(InputError, match="score must be"):
        igcorr.IGC(mlp, score="probability")


def test_non_finite_gradients_stop_the_run(data):
    x, y = data
    model = lambda inputs: torch.sqrt(inputs.abs())[:, :3]  # infinite slope at the zero baseline
    with pytest.raises(NonFiniteError, match="gradients of sample 0"):
        igc(model, (x, y), method="trapezoid")


def test_items_that_are_not_pairs(mlp):
    class Triples(Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, index):
            return torch.zeros(6), torch.zeros(3), index

    with pytest.raises(InputError, match=r"\(x, y\) pair"):
        igc(mlp, Triples())
    with pytest.raises(InputError, match="data must be"):
        igc(mlp, 42)


@pytest.mark.parametrize("bad", [{"seed": 1.5}, {"batch_size": 0}, {"baselines": "zero"}, {"n_steps": 1},
                                 {"method": "simpson"}])
def test_bad_arguments(mlp, data, bad):
    with pytest.raises(InputError):
        igc(mlp, data, **bad)
