"""Resumable runs: the reducer state and the position in the data, saved atomically while a run goes on.

A checkpoint can only resume the computation that wrote it. It records a fingerprint of

* every option that determines the result (method, estimator, baselines, outputs, seed, inference, score name,
  data size and input shape);
* the model: a hash of its class and weights, and its scores on the first samples of the data, so that plain
  functions, scripted models, score callables and module attributes that are not parameters are covered too
  (compared with a float tolerance);
* the data actually read: a SHA-256 of the inputs and targets of every sample already folded in. On resume those
  samples are read again (no model call) and must hash the same.

Any difference is refused with an :class:`InputError` that names it. Writes go through a unique temporary file
renamed over the checkpoint, under a lock file that keeps a second run from writing the same checkpoint; the
folder is test-written before any compute.
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

import numpy as np
import torch

from igcorr._files import WriterLock, atomic_write, check_writable
from igcorr._validation import check_number
from igcorr.data import Batch
from igcorr.errors import InputError, ResultFileError
from igcorr.reducers import Reducer

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
#: default seconds between two checkpoint writes
DEFAULT_EVERY_SECONDS = 300.0
#: relative tolerance on the model's probe scores between the run that wrote a checkpoint and the one resuming
PROBE_TOLERANCE = 1e-5


def model_fingerprint(model: Any) -> str:
    """SHA-256 of the model's class name and state (parameters and buffers); changes when any weight changes."""
    digest = hashlib.sha256(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    state = model.state_dict() if isinstance(model, torch.nn.Module) else {}
    for name, tensor in sorted(state.items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode() + str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class DataDigest:
    """SHA-256 of the inputs and targets read, in order; independent of how the samples were batched."""

    def __init__(self) -> None:
        self._inputs = hashlib.sha256()
        self._targets = hashlib.sha256()

    def update(self, batch: Batch) -> None:
        for digest, tensor in ((self._inputs, batch.x), (self._targets, batch.y)):
            flat = tensor.detach().cpu().contiguous().reshape(-1)
            digest.update(str(flat.dtype).encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes())

    def hexdigest(self) -> str:
        return self._inputs.hexdigest() + self._targets.hexdigest()


class Checkpoint:
    """Periodic atomic saves of a run's reducer state.

    Parameters
    ----------
    path : str or Path
        Checkpoint file.
    every_seconds : float
        Minimum time between two writes (0 writes after every batch).

    Call :meth:`acquire` before any compute (test write and lock), set :attr:`fingerprint` and
    :attr:`probe_inputs` and :attr:`score_probe` once the run knows them, and :meth:`release` at the end.
    """

    def __init__(self, path: str | os.PathLike, fingerprint: dict[str, Any] | None = None,
                 every_seconds: float = DEFAULT_EVERY_SECONDS) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise InputError(f"checkpoint must be a file path, got {type(path).__name__}")
        every_seconds = check_number(every_seconds, "checkpoint_every", non_negative=True, hint="seconds")
        self.path = Path(path)
        #: JSON-like description of every option that determines the result (compared exactly)
        self.fingerprint: dict[str, Any] = dict(fingerprint or {})
        #: inputs on which the model's behaviour is recorded, and how the run scores them; on resume the model
        #: scores the checkpoint's own probe inputs and must agree within PROBE_TOLERANCE
        self.probe_inputs: torch.Tensor | None = None
        self.probe_extras: dict[str, torch.Tensor] = {}
        self.score_probe: Any = None
        self.every_seconds = float(every_seconds)
        self._last_write = time.monotonic()
        self._lock = WriterLock(self.path, "checkpoint")
        self._probe_scores: torch.Tensor | None = None

    def acquire(self) -> None:
        """Test-write the checkpoint's folder and take its lock (before the run spends any compute)."""
        check_writable(self.path.parent, "checkpoint")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()

    def release(self) -> None:
        """Give the lock back."""
        self._lock.release()

    def load(self, start: int = 0, stop: int | None = None) -> dict[str, Any] | None:
        """The saved progress (``state``, ``next``, ``seen``, ``complete``, ``data_sha256``), or None if there
        is no checkpoint. ``start`` and ``stop`` bound the samples this run covers (its shard).

        Raises
        ------
        ResultFileError
            The file is truncated, corrupted, of another format, or its progress is impossible.
        InputError
            The checkpoint belongs to another computation (the message names what differs).
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
            raise ResultFileError(f"{self.path} is not an igcorr checkpoint of format {FORMAT_VERSION}; delete it "
                                  "to start the run afresh")
        self._check_layout(saved, start, stop)
        differences = [
            f"{key}: checkpoint has {saved['fingerprint'].get(key)!r}, this run has {value!r}"
            for key, value in self.fingerprint.items() if saved["fingerprint"].get(key) != value
        ]
        differences += [f"{key}: only in the checkpoint" for key in saved["fingerprint"] if key not in self.fingerprint]
        if not differences:
            probe_difference = self._probe_difference(saved.get("probe_inputs"), saved.get("probe_extras") or {},
                                                      saved.get("probe_scores"))
            if probe_difference is not None:
                differences.append(probe_difference)
        if differences:
            raise InputError(
                f"checkpoint {self.path} was written by another computation (" + "; ".join(differences)
                + "). Run with the same model, data and arguments to resume, or delete the checkpoint"
            )
        logger.info("resuming from %s at sample %d", self.path, saved["next"])
        return saved

    def _check_layout(self, saved: dict[str, Any], start: int, stop: int | None) -> None:
        expected = {"fingerprint": dict, "state": dict, "next": int, "seen": int, "complete": bool,
                    "data_sha256": str}
        for key, kind in expected.items():
            if not isinstance(saved.get(key), kind) or (kind is int and isinstance(saved.get(key), bool)):
                raise ResultFileError(f"checkpoint {self.path} has no valid {key!r} entry (tampered or written by "
                                      "another program); delete it to start the run afresh")
        end = stop
        if not (start <= saved["next"] and (end is None or saved["next"] <= end)) \
                or saved["seen"] != saved["next"] - start:
            raise ResultFileError(
                f"checkpoint {self.path} says {saved['seen']} samples were seen up to sample {saved['next']}, which "
                f"is impossible for this run's samples {start}..{'end' if end is None else end - 1}; delete it"
            )

    def _probe_difference(self, inputs: Any, extras: Any, scores: Any) -> str | None:
        if self.score_probe is None:
            return None
        if not isinstance(inputs, torch.Tensor) or not isinstance(scores, torch.Tensor):
            return "model scores: not recorded in the checkpoint"
        theirs = scores.to(torch.float64)
        if not isinstance(extras, dict) or set(extras) != set(self.probe_extras):
            return f"model inputs: {sorted(extras) if isinstance(extras, dict) else extras} in the checkpoint, " \
                   f"{sorted(self.probe_extras)} now"
        ours = torch.as_tensor(self.score_probe(inputs, extras), dtype=torch.float64).cpu()
        if ours.shape != theirs.shape:
            return f"model scores: shape {tuple(theirs.shape)} in the checkpoint, {tuple(ours.shape)} now"
        scale = float(theirs.abs().max()) + 1e-30 if theirs.numel() else 1.0
        gap = float((ours - theirs).abs().max()) if theirs.numel() else 0.0
        if not np.isfinite(gap) or gap > PROBE_TOLERANCE * scale:
            return (f"model: its scores on the checkpoint's probe samples differ by up to {gap:.3g} (the model, "
                    "its score function or an attribute it uses changed)")
        return None

    def verify_data(self, saved: dict[str, Any], digest: DataDigest) -> None:
        """Refuse to resume when the samples already folded in read differently now."""
        if digest.hexdigest() != saved["data_sha256"]:
            raise InputError(
                f"checkpoint {self.path} was written from other data: the inputs or targets of the samples it "
                f"already holds (up to sample {saved['next'] - 1}) differ now (other values, another order, or a "
                "loader that draws another sample set each pass). Resume with the same data, or delete the "
                "checkpoint"
            )

    def due(self) -> bool:
        """Whether enough time has passed for the next write."""
        return time.monotonic() - self._last_write >= self.every_seconds

    def save(self, reducer: Reducer, next_sample: int, seen: int, digest: DataDigest,
             complete: bool = False) -> None:
        """Write the reducer state, the position and the data digest atomically."""
        state = {name: tensor.detach().cpu() for name, tensor in reducer.state_dict().items()}
        if self.score_probe is not None and self._probe_scores is None:
            self._probe_scores = torch.as_tensor(self.score_probe(self.probe_inputs, self.probe_extras),
                                                 dtype=torch.float64).cpu()
        payload = {"format_version": FORMAT_VERSION, "fingerprint": self.fingerprint, "state": state,
                   "probe_inputs": self.probe_inputs, "probe_extras": self.probe_extras,
                   "probe_scores": self._probe_scores,
                   "next": int(next_sample), "seen": int(seen), "complete": bool(complete),
                   "data_sha256": digest.hexdigest()}
        atomic_write(self.path, lambda handle: torch.save(payload, handle), "checkpoint")
        self._last_write = time.monotonic()
