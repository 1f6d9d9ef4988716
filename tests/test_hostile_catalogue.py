"""Hostile inputs met by users: each gets a specific igcorr error (or warning) with a message that says what to do,
before any compute is lost. The checkpoint and memory cases are in test_resume_safety.py and
test_memory_budget.py; the command line's bad option values in test_cli_run.py."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import igcorr
from igcorr.cli import main
from igcorr.errors import ConstantTargetError, InputError, ModelError

OPTIONS = dict(n_steps=8, progress=False)


@pytest.fixture
def setting():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 1)).double().eval()
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(200, 6, dtype=torch.float64, generator=generator)
    with torch.no_grad():
        y = model(x)[:, 0] + 0.3 * torch.randn(200, dtype=torch.float64, generator=generator)
    return model, x, y


def test_python_lists_are_read_as_samples(setting):
    model, x, y = setting
    reference = igcorr.IGC(model).attribute((x, y), **OPTIONS)
    from_lists = igcorr.IGC(model).attribute((x.tolist(), y.tolist()), **OPTIONS)
    from_rows = igcorr.IGC(model).attribute((list(x), y), **OPTIONS)
    np.testing.assert_allclose(from_lists.maps, reference.maps, rtol=0, atol=1e-12)
    np.testing.assert_allclose(from_rows.maps, reference.maps, rtol=0, atol=1e-12)


def test_boolean_targets_are_a_binary_target(setting):
    model, x, y = setting
    as_bool = igcorr.IGC(model).attribute((x, y > 0), **OPTIONS)
    as_float = igcorr.IGC(model).attribute((x, (y > 0).double()), **OPTIONS)
    np.testing.assert_array_equal(as_bool.maps, as_float.maps)


@pytest.mark.parametrize("scale, word", [(1e200, "overflows"), (1e-200, "underflows")])
def test_targets_whose_variance_is_not_representable_are_refused(setting, scale, word):
    model, x, y = setting
    with pytest.raises(InputError, match=f"targets reach a magnitude of .*, whose square {word} float64: rescale"):
        igcorr.IGC(model).attribute((x, y * scale), **OPTIONS)


def test_tiny_but_representable_targets_are_not_called_constant(setting):
    model, x, y = setting
    small = igcorr.IGC(model).attribute((x, y * 1e-100), **OPTIONS)
    reference = igcorr.IGC(model).attribute((x, y), **OPTIONS)
    np.testing.assert_allclose(small.maps, reference.maps, rtol=1e-9, atol=0)
    with pytest.raises(ConstantTargetError):
        igcorr.IGC(model).attribute((x, torch.zeros_like(y)), **OPTIONS)


def test_an_extreme_input_row_warns(setting):
    model, x, y = setting
    x = x.clone()
    x[17] = 1e30
    with pytest.warns(UserWarning, match=r"input values reach 1e\+30 \(first at sample 17\)"):
        igcorr.IGC(model).attribute((x, y), **OPTIONS)


def test_inputs_with_gradients_are_detached(setting):
    model, x, y = setting
    reference = igcorr.IGC(model).attribute((x, y), **OPTIONS)
    tracked = igcorr.IGC(model).attribute((x.clone().requires_grad_(True), y), **OPTIONS)
    np.testing.assert_array_equal(tracked.maps, reference.maps)
    attributions = igcorr.IntegratedGradients(model).attribute(x[:4].clone().requires_grad_(True), target=0)
    assert not attributions.requires_grad


def test_a_model_expecting_another_width_is_named(setting):
    model, x, y = setting
    with pytest.raises(ModelError, match=r"the model failed on the first sample \(inputs of shape \(1, 7\).*"
                                         r"mat1 and mat2 shapes cannot be multiplied"):
        igcorr.IGC(model).attribute((torch.randn(20, 7, dtype=torch.float64), y[:20]), **OPTIONS)


def test_a_model_on_the_meta_device_is_refused():
    with torch.device("meta"):
        model = nn.Linear(6, 1)
    with pytest.raises(ModelError, match="meta device"):
        igcorr.IGC(model)


def test_bfloat16_models_checkpoint(setting, tmp_path):
    model, x, y = setting
    low = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 1)).to(torch.bfloat16)
    result = igcorr.IGC(low).attribute((x.float(), y), checkpoint=tmp_path / "run.ckpt", **OPTIONS)
    again = igcorr.IGC(low).attribute((x.float(), y), checkpoint=tmp_path / "run.ckpt", **OPTIONS)
    np.testing.assert_array_equal(result.maps, again.maps)


@pytest.mark.parametrize("convert", ["script", "trace"])
def test_torchscript_models_give_the_eager_maps(setting, convert):
    model, x, y = setting
    scripted = torch.jit.script(model) if convert == "script" else torch.jit.trace(model, x[:2])
    eager = igcorr.IGC(model).attribute((x, y), baselines=3, **OPTIONS)
    converted = igcorr.IGC(scripted).attribute((x, y), baselines=3, **OPTIONS)
    np.testing.assert_allclose(converted.maps, eager.maps, rtol=0, atol=1e-10)
    with pytest.raises(InputError, match="TorchScript modules do not run"):
        igcorr.IGC(scripted, readout="2").attribute((x, y), **OPTIONS)
    with pytest.raises(ModelError, match="splitting the model at a layer .* needs forward hooks"):
        igcorr.InternalNeurons(scripted, "1")


def test_a_coarse_quadrature_warns_that_the_map_misses_its_sum():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 3)).double().eval()
    x = torch.randn(200, 6, dtype=torch.float64) * 30
    with torch.no_grad():
        labels = (model(x) * 50).argmax(dim=1)
    sharp = lambda points: model(points) * 50  # noqa: E731  a saturated softmax
    with pytest.warns(UserWarning, match="sums to .* but correlation \\+ baseline term is .* Use tolerance="):
        igcorr.IGC(sharp, score="softmax").attribute((x, labels), n_steps=4, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        igcorr.IGC(sharp, score="softmax").attribute((x, labels), tolerance=1e-4, max_steps=4097, progress=False)


def test_report_into_an_unwritable_folder_is_a_one_line_error(tmp_path, capsys, setting):
    model, x, y = setting
    saved = igcorr.IGC(model).attribute((x, y), **OPTIONS).save(tmp_path / "result.npz")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = main(["report", str(saved), "--out", str(blocker / "out")])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(error) == 1 and "cannot write the report" in error[0]


def test_an_output_path_under_a_file_is_refused_before_the_run(tmp_path, capsys, setting):
    from igcorr._files import check_writable

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot write the results in .*: .*not a folder"):
        check_writable(blocker / "out", "results")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
