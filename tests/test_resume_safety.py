"""A checkpoint resumes only the computation that wrote it: every input of a resumed run is changed in turn and
the run is refused (or, where the change cannot matter, gives the fresh result)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler

import igcorr
from igcorr.errors import InputError, ResultFileError

from conftest import Crashing

OPTIONS = dict(n_steps=8, baselines=3, batch_size=10, outputs=[0], progress=False)


class Scaled(nn.Module):
    """A model whose behaviour depends on an attribute that is neither a parameter nor a buffer."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.temperature = inner, 1.0

    def forward(self, x):
        return self.inner(x) / self.temperature


@pytest.fixture
def setting(mlp, regression_data):
    x, y = regression_data
    return mlp, x, y[:, 0]


def interrupted(model, data, path, **options):
    """Start a run that crashes at sample 35 after writing checkpoints; returns the checkpoint path."""
    x, y = data
    with pytest.raises(RuntimeError, match="simulated crash"):
        igcorr.IGC(model, **options).attribute(Crashing(x, y, fail_at=35), checkpoint=path, checkpoint_every=0,
                                               **OPTIONS)
    assert torch.load(path, weights_only=True)["next"] == 30
    return path


@pytest.mark.parametrize("complete", [False, True], ids=["partial", "complete"])
@pytest.mark.parametrize("change", ["data", "targets", "order of the data", "weights", "attribute", "function",
                                    "score"])
def test_a_changed_input_is_refused(setting, tmp_path, change, complete):
    mlp, x, y = setting
    model = Scaled(mlp)
    score = None

    def function_model(points):
        return torch.tanh(points[:, :1] * 0.5 + points[:, 1:2])

    def other_function(points):
        return torch.tanh(points[:, :1] * 0.5 - points[:, 1:2])

    if change == "function":
        model = function_model
    if change == "score":
        score = lambda out: out * 2  # noqa: E731
    path = tmp_path / "run.ckpt"
    if complete:
        igcorr.IGC(model, score=score).attribute((x, y), checkpoint=path, **OPTIONS)
    else:
        interrupted(model, (x, y), path, score=score)
    x2, y2, model2, score2 = x.clone(), y.clone(), model, score
    if change == "data":
        x2[3, 1] += 0.5
    elif change == "targets":
        y2[7] += 1.0
    elif change == "order of the data":
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
        x2, y2 = x[order], y[order]
    elif change == "weights":
        model2 = Scaled(mlp)
        with torch.no_grad():
            mlp[0].bias[0] += 0.1
    elif change == "attribute":
        model.temperature = 2.0
    elif change == "function":
        model2 = other_function
        model2.__name__ = model.__name__
    elif change == "score":
        score2 = lambda out: out * 3  # noqa: E731
    with pytest.raises(InputError, match="other data|another computation") as error:
        igcorr.IGC(model2, score=score2).attribute((x2, y2), checkpoint=path, **OPTIONS)
    expected = "other data" if change in ("data", "targets", "order of the data") else "model"
    assert expected in str(error.value)


def test_a_shuffling_loader_gives_the_sequential_maps_and_resumes(setting, tmp_path):
    mlp, x, y = setting
    dataset = TensorDataset(x, y)
    sequential = igcorr.IGC(mlp).attribute(DataLoader(dataset, batch_size=10), **OPTIONS)
    shuffled = igcorr.IGC(mlp).attribute(DataLoader(dataset, batch_size=7, shuffle=True), **OPTIONS)
    np.testing.assert_allclose(shuffled.maps, sequential.maps, rtol=0, atol=1e-12)
    path = interrupted(mlp, (x, y), tmp_path / "run.ckpt")
    resumed = igcorr.IGC(mlp).attribute(DataLoader(dataset, batch_size=10, shuffle=True), checkpoint=path, **OPTIONS)
    np.testing.assert_allclose(resumed.maps, sequential.maps, rtol=0, atol=1e-12)
    assert resumed.metadata["n_samples"] == len(x)


def test_a_sampler_without_a_fixed_sample_set_cannot_checkpoint(setting, tmp_path):
    mlp, x, y = setting
    sampler = WeightedRandomSampler(torch.ones(len(x)), num_samples=len(x), replacement=True)
    loader = DataLoader(TensorDataset(x, y), batch_size=10, sampler=sampler)
    with pytest.raises(InputError, match="draws another set of samples"):
        igcorr.IGC(mlp).attribute(loader, checkpoint=tmp_path / "run.ckpt", **OPTIONS)
    assert list(tmp_path.iterdir()) == []


def test_tampered_checkpoints_are_refused(setting, tmp_path):
    mlp, x, y = setting
    path = interrupted(mlp, (x, y), tmp_path / "run.ckpt")
    saved = torch.load(path, weights_only=True)
    for key, value, message in (("next", 999, "impossible"), ("seen", 5, "impossible"),
                                ("next", "30", "'next'"), ("data_sha256", None, "'data_sha256'")):
        torch.save({**saved, key: value}, path)
        with pytest.raises(ResultFileError, match=message):
            igcorr.IGC(mlp).attribute((x, y), checkpoint=path, **OPTIONS)


def test_a_second_writer_is_refused_and_no_partial_file_is_left(setting, tmp_path):
    mlp, x, y = setting
    path = tmp_path / "run.ckpt"
    lock = path.with_name(path.name + ".lock")
    import subprocess
    import sys
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text(f"{holder.pid} {__import__('socket').gethostname()}")
        with pytest.raises(InputError, match="being written by another run"):
            igcorr.IGC(mlp).attribute((x, y), checkpoint=path, **OPTIONS)
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone: its stale lock is taken over, and the run leaves only its checkpoint behind
    igcorr.IGC(mlp).attribute((x, y), checkpoint=path, **OPTIONS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.ckpt"]


def test_an_unwritable_checkpoint_folder_is_refused_before_any_model_call(setting, tmp_path):
    mlp, x, y = setting
    calls = []
    mlp.register_forward_hook(lambda *_: calls.append(1))
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(InputError, match="cannot write the checkpoint"):
        igcorr.IGC(mlp).attribute((x, y), checkpoint=blocker / "run.ckpt", **OPTIONS)
    assert calls == []
