"""Multi-process runs (torch.distributed, gloo on 127.0.0.1) and resumable runs killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import igcorr
from igcorr.dataset.checkpoint import Checkpoint
from igcorr.errors import InputError, ResultFileError

WORKER = Path(__file__).parent / "scripts" / "igc_worker.py"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def worker(out: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen([sys.executable, str(WORKER), str(out), *extra], env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen, timeout: float = 240) -> None:
    stdout, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, stderr


@pytest.mark.parametrize("method", ["igc", "IGMoments", "IGaC"])
def test_two_processes_equal_one(tmp_path, method):
    single = tmp_path / "single.npz"
    finish(worker(single, "--method", method))
    port = str(free_port())
    processes = [
        worker(tmp_path / f"rank{rank}.npz", "--method", method,
               env={"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                    "MASTER_PORT": port})
        for rank in range(2)
    ]
    for process in processes:
        finish(process)
    reference = igcorr.load(single)
    for rank in range(2):
        result = igcorr.load(tmp_path / f"rank{rank}.npz")
        np.testing.assert_allclose(result.maps, reference.maps, rtol=0, atol=1e-10)
        for name, values in reference.diagnostics.items():
            np.testing.assert_allclose(result.diagnostics[name], values, rtol=0, atol=1e-10, err_msg=name)
        assert result.metadata["n_samples"] == 23 and result.metadata["world_size"] == 2


def test_killed_run_resumes_to_the_same_maps(tmp_path):
    reference = tmp_path / "reference.npz"
    reference_calls = tmp_path / "reference_calls.txt"
    finish(worker(reference, "--calls", str(reference_calls)))
    checkpoint = tmp_path / "run.ckpt"
    process = worker(tmp_path / "killed.npz", "--checkpoint", str(checkpoint), "--slow", "0.05")
    deadline = time.monotonic() + 120
    saved = None
    while time.monotonic() < deadline:
        if checkpoint.exists():
            try:
                saved = torch.load(checkpoint, weights_only=True)
            except Exception:  # the file may be replaced while we read it
                saved = None
            if saved is not None and saved["next"] >= 6:
                break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert saved is not None and 6 <= saved["next"] < 23 and not saved["complete"]
    assert not (tmp_path / "killed.npz").exists()

    resumed_calls = tmp_path / "resumed_calls.txt"
    finish(worker(tmp_path / "resumed.npz", "--checkpoint", str(checkpoint), "--calls", str(resumed_calls)))
    resumed, expected = igcorr.load(tmp_path / "resumed.npz"), igcorr.load(reference)
    np.testing.assert_allclose(resumed.maps, expected.maps, rtol=0, atol=1e-12)
    np.testing.assert_allclose(resumed.correlation, expected.correlation, rtol=0, atol=1e-12)
    assert resumed.metadata["n_samples"] == 23
    assert int(resumed_calls.read_text()) < int(reference_calls.read_text())


def test_checkpoint_refuses_other_arguments_and_bad_files(tmp_path, mlp, regression_data):
    path = tmp_path / "igc.ckpt"
    first = igcorr.IGC(mlp).attribute(regression_data, n_steps=8, progress=False, checkpoint=path)
    again = igcorr.IGC(mlp).attribute(regression_data, n_steps=8, progress=False, checkpoint=path)
    np.testing.assert_array_equal(first.maps, again.maps)
    with pytest.raises(InputError, match="n_steps: checkpoint has 8, this run has 16"):
        igcorr.IGC(mlp).attribute(regression_data, n_steps=16, progress=False, checkpoint=path)
    with pytest.raises(InputError, match="seed"):
        igcorr.IGC(mlp).attribute(regression_data, n_steps=8, seed=4, progress=False, checkpoint=path)
    x, y = regression_data
    with pytest.raises(InputError, match="n_samples"):
        igcorr.IGC(mlp).attribute((x[:50], y[:50]), n_steps=8, progress=False, checkpoint=path)
    with torch.no_grad():
        mlp[0].weight[0, 0] += 1.0
    with pytest.raises(InputError, match="model"):
        igcorr.IGC(mlp).attribute(regression_data, n_steps=8, progress=False, checkpoint=path)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ResultFileError, match="truncated or corrupted"):
        Checkpoint(truncated, {}).load()
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ResultFileError):
        igcorr.IGC(mlp).attribute(regression_data, n_steps=8, progress=False, checkpoint=garbage)
