"""`igcorr run` with user factories (flags and TOML config) and `igcorr report`."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

import igcorr
from igcorr.cli import main

USER_CODE = textwrap.dedent('''
    import torch
    from torch import nn

    def build_model():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2))

    def build_data():
        generator = torch.Generator().manual_seed(1)
        x = torch.randn(50, 6, generator=generator)
        return x, x[:, :2] + 0.3 * torch.randn(50, 2, generator=generator)
''')


@pytest.fixture
def user_package(tmp_path, monkeypatch):
    (tmp_path / "my_study.py").write_text(USER_CODE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("my_study", None)


def test_run_writes_result_figures_and_summary(user_package, capsys):
    out = user_package / "out"
    regions = user_package / "regions.npz"
    np.savez(regions, first=np.arange(6) < 3, second=np.arange(6) >= 3)
    code = main(["run", "--model", "my_study:build_model", "--data", "my_study:build_data", "--baselines", "4",
                 "--steps", "16", "--regions", str(regions), "--checkpoint", str(user_package / "run.ckpt"),
                 "--out", str(out), "--no-progress"])
    assert code == 0
    for name in ("result.npz", "maps.png", "diagnostics.png", "regions.csv", "regions.png", "summary.md"):
        assert (out / name).stat().st_size > 0, name
    result = igcorr.load(out / "result.npz")
    assert result.method == "igc" and result.metadata["parameters"]["n_steps"] == 16
    assert result.metadata["baselines"]["count"] == 4
    assert "| output | region |" in (out / "summary.md").read_text()
    assert (user_package / "run.ckpt").exists()

    redrawn = user_package / "redrawn"
    assert main(["report", str(out / "result.npz"), "--out", str(redrawn)]) == 0
    assert (redrawn / "maps.png").exists() and (redrawn / "summary.md").exists()


def test_run_from_a_config_file(user_package):
    config = user_package / "study.toml"
    out = user_package / "from_config"
    config.write_text(f'model = "my_study:build_model"\ndata = "my_study:build_data"\nsteps = 8\n'
                      f'baselines = "shared:5"\noutputs = "1"\nout = "{out}"\n')
    assert main(["run", "--config", str(config), "--seed", "3", "--no-progress"]) == 0
    result = igcorr.load(out / "result.npz")
    assert result.outputs == [1] and result.metadata["seed"] == 3
    assert result.metadata["baselines"]["shared"] is True
    np.testing.assert_allclose(result.map_sums, result.correlation, atol=1e-3)


def test_run_errors_are_reported_without_a_traceback(user_package, capsys):
    assert main(["run", "--model", "my_study", "--data", "my_study:build_data"]) == 2
    assert "PKG.MODULE:FACTORY" in capsys.readouterr().err
    assert main(["run", "--model", "my_study:missing", "--data", "my_study:build_data"]) == 2
    assert "no attribute 'missing'" in capsys.readouterr().err
    assert main(["run", "--model", "my_study:build_model"]) == 2
    assert "needs --data" in capsys.readouterr().err
    bad = user_package / "bad.toml"
    bad.write_text('modle = "x:y"\n')
    assert main(["run", "--config", str(bad)]) == 2
    assert "unknown option(s) ['modle']" in capsys.readouterr().err
