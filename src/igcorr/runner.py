"""The streaming loop shared by every dataset-wise method: batches in, reducer updates, progress out.

Keeping the loop separate from the methods is what lets resumable and multi-process runs reuse it unchanged:
they only change which samples are read (a shard, or what is left after a checkpoint) and how reducer states
are saved and merged.
"""

from __future__ import annotations

from collections.abc import Callable
import torch
from tqdm.auto import tqdm

from igcorr import distributed
from igcorr.checkpoint import Checkpoint
from igcorr.data import Batch, DataSource
from igcorr.reducers import Reducer, SampleBatch


def stream(source: DataSource, reducer: Reducer, step: Callable[[Batch], SampleBatch], *, progress: bool,
           description: str, start: int = 0, stop: int | None = None, seen: int = 0,
           checkpoint: Checkpoint | None = None) -> int:
    """Feed the batches of samples ``start`` to ``stop`` − 1 through ``step`` into ``reducer``.

    Parameters
    ----------
    seen : int
        Samples already folded into ``reducer`` (when resuming).
    checkpoint : Checkpoint, optional
        Saved whenever due, and once more at the end.

    Returns
    -------
    int
        Samples folded into ``reducer`` in total.
    """
    end = stop if stop is not None else (len(source) if source.has_length else None)
    total = end - start if end is not None else None
    position = start
    with tqdm(total=total, desc=description, unit="sample", disable=not progress, leave=False) as bar:
        for batch in source.batches(start, stop):
            reducer.update(step(batch))
            seen += len(batch.x)
            position = batch.start + len(batch.x)
            bar.update(len(batch.x))
            if checkpoint is not None and checkpoint.due():
                checkpoint.save(reducer, position, seen)
    if checkpoint is not None:
        checkpoint.save(reducer, position, seen, complete=True)
    return seen


def run_reduction(source: DataSource, make_reducer: Callable[[], Reducer], step: Callable[[Batch], SampleBatch], *,
                  progress: bool, description: str, device: torch.device,
                  checkpoint: Checkpoint | None = None) -> tuple[Reducer, int]:
    """Stream this process's share of ``source`` into a reducer, resuming from and writing ``checkpoint``, and
    merge the reducers of all processes of a torch.distributed run.

    Returns
    -------
    (Reducer, int)
        The reducer covering all samples of all processes, and the number of samples it holds.
    """
    rank, world_size = distributed.world()
    start, stop = 0, None
    if world_size > 1:
        distributed.require_length(source.has_length)
        start, stop = distributed.shard_bounds(len(source), rank, world_size)
    reducer, seen, complete = make_reducer(), 0, False
    if checkpoint is not None:
        saved = checkpoint.load()
        if saved is not None:
            reducer.load_state_dict(_to_device(saved["state"], device))
            start, seen, complete = saved["next"], saved["seen"], saved["complete"]
    if not complete:
        seen = stream(source, reducer, step, progress=progress, description=description, start=start, stop=stop,
                      seen=seen, checkpoint=checkpoint)
    if world_size == 1:
        return reducer, seen
    states = distributed.all_gather(({k: v.detach().cpu() for k, v in reducer.state_dict().items()}, seen))
    merged = make_reducer()
    for state, _ in states:
        part = make_reducer()
        part.load_state_dict(_to_device(state, device))
        merged.merge(part)
    return merged, sum(count for _, count in states)


def _to_device(state: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {name: tensor.to(device) for name, tensor in state.items()}
