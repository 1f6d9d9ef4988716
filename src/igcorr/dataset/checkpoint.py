"""Resumable runs: the reducer state and the position in the data, saved atomically while a run goes on.

A checkpoint records a fingerprint of everything that determines the result (method, model weights, data size,
input shape, baselines, quadrature, outputs, score, seed). Restarting the same call resumes after the last saved
sample and yields the same maps as an uninterrupted run (up to float64 rounding, since the reducers merge
exactly); restarting with different arguments is refused with a message naming the difference.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import time
import zipfile
from pathlib import Path
from typing import Any

import torch

from igcorr._validation import check_number
from igcorr.errors import InputError, ResultFileError
from igcorr.reducers import Reducer

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
#: default seconds between two checkpoint writes
DEFAULT_EVERY_SECONDS = 300.0


def model_fingerprint(model: Any) -> str:
    """SHA-256 of the model's class name and state (parameters and buffers); changes when any weight changes."""
    digest = hashlib.sha256(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    state = model.state_dict() if isinstance(model, torch.nn.Module) else {}
    for name, tensor in sorted(state.items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode() + str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class Checkpoint:
    """Periodic atomic saves of a run's reducer state.

    Parameters
    ----------
    path : str or Path
        Checkpoint file (written as ``path.partial`` first, then renamed over ``path``).
    fingerprint : dict
        JSON-like description of everything that determines the result.
    every_seconds : float
        Minimum time between two writes (0 writes after every batch).
    """

    def __init__(self, path: str | os.PathLike, fingerprint: dict[str, Any],
                 every_seconds: float = DEFAULT_EVERY_SECONDS) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise InputError(f"checkpoint must be a file path, got {type(path).__name__}")
        every_seconds = check_number(every_seconds, "checkpoint_every", non_negative=True, hint="seconds")
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.every_seconds = float(every_seconds)
        self._last_write = time.monotonic()

    def load(self) -> dict[str, Any] | None:
        """The saved progress (``state``, ``next``, ``seen``, ``complete``), or None if there is no checkpoint.

        Raises
        ------
        ResultFileError
            The file is truncated, corrupted or of another format.
        InputError
            The checkpoint belongs to a run with different arguments.
        """
        if not self.path.exists():
            return None
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
        except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as error:
            raise ResultFileError(
                f"checkpoint {self.path} is truncated or corrupted ({error}); delete it to start the run afresh"
            ) from error
        if not isinstance(saved, dict) or saved.get("format_version") != FORMAT_VERSION:
            raise ResultFileError(f"{self.path} is not an igcorr checkpoint of format {FORMAT_VERSION}")
        differences = [
            f"{key}: checkpoint has {saved['fingerprint'].get(key)!r}, this run has {value!r}"
            for key, value in self.fingerprint.items() if saved["fingerprint"].get(key) != value
        ]
        if differences:
            raise InputError(
                f"checkpoint {self.path} was written by a run with different arguments ("
                + "; ".join(differences) + "). Run with the same arguments to resume, or delete the checkpoint"
            )
        logger.info("resuming from %s at sample %d", self.path, saved["next"])
        return saved

    def due(self) -> bool:
        """Whether enough time has passed for the next write."""
        return time.monotonic() - self._last_write >= self.every_seconds

    def save(self, reducer: Reducer, next_sample: int, seen: int, complete: bool = False) -> None:
        """Write the reducer state and the position atomically (write to ``.partial``, then rename)."""
        state = {name: tensor.detach().cpu() for name, tensor in reducer.state_dict().items()}
        payload = {"format_version": FORMAT_VERSION, "fingerprint": self.fingerprint, "state": state,
                   "next": int(next_sample), "seen": int(seen), "complete": bool(complete)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        with open(partial, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, self.path)
        self._last_write = time.monotonic()
