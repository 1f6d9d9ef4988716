"""Multi-process runs on torch.distributed: deterministic sharding and exact merging of reducer states.

Under ``torchrun`` (or any launcher that sets ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT``) the same
``attribute`` call works unchanged: each rank attributes a contiguous shard of the samples (every sample exactly
once, shard sizes differing by at most one), then all ranks exchange their float64 reducer states and merge
them in rank order, so every rank returns the same Result.
"""

from __future__ import annotations

import atexit
import logging
import os
from typing import Any

import torch
import torch.distributed as dist

from igcorr.errors import InputError

logger = logging.getLogger(__name__)


def world() -> tuple[int, int]:
    """(rank, world size) of this process; initialises the default process group from the environment if a
    launcher set ``WORLD_SIZE`` > 1 and nobody initialised it yet (gloo on CPU, nccl with CUDA)."""
    if not dist.is_available():
        return 0, 1
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return 0, 1
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        logger.info("initialising torch.distributed (%s) from the environment", backend)
        dist.init_process_group(backend=backend)
        atexit.register(_shut_down_process_group)
    return dist.get_rank(), dist.get_world_size()


def _shut_down_process_group() -> None:
    """Tear down the process group igcorr started, once every rank has finished with it.

    Exiting with a live gloo group lets its communication threads be destroyed mid-flight, which aborts the
    interpreter ("terminate called without an active exception") on whichever rank leaves first.
    """
    if not dist.is_initialized():
        return
    try:
        dist.barrier()
    except RuntimeError as error:  # a rank that crashed or left long ago: nothing left to wait for
        logger.warning("torch.distributed: not every rank reached the end of the run (%s)", error)
    finally:
        dist.destroy_process_group()


def shard_bounds(n_samples: int, rank: int, world_size: int) -> tuple[int, int]:
    """Contiguous [start, stop) of the samples that ``rank`` attributes; the shards cover all samples once."""
    return n_samples * rank // world_size, n_samples * (rank + 1) // world_size


def all_gather(value: Any) -> list[Any]:
    """Every rank's ``value`` (picklable; tensors should be on the CPU), in rank order."""
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def require_length(has_length: bool) -> None:
    """Sharding needs the number of samples before reading them."""
    if not has_length:
        raise InputError(
            "a multi-process run must know the number of samples to shard them: pass an (X, Y) pair, a "
            "map-style Dataset or a DataLoader over one, not an iterable dataset"
        )
