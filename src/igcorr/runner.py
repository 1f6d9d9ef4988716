"""The streaming loop shared by every dataset-wise method: batches in, reducer updates, progress out.

Keeping the loop separate from the methods is what lets resumable and multi-process runs reuse it unchanged:
they only change which samples are read and how reducer states are saved and merged.
"""

from __future__ import annotations

from collections.abc import Callable

from tqdm.auto import tqdm

from igcorr.data import Batch, DataSource
from igcorr.reducers import Reducer, SampleBatch


def stream(source: DataSource, reducer: Reducer, step: Callable[[Batch], SampleBatch], *, progress: bool,
           description: str, start: int = 0) -> int:
    """Feed every batch of ``source`` (from sample ``start`` on) through ``step`` into ``reducer``.

    Returns
    -------
    int
        Number of samples seen.
    """
    total = len(source) - start if source.has_length else None
    seen = 0
    with tqdm(total=total, desc=description, unit="sample", disable=not progress, leave=False) as bar:
        for batch in source.batches(start):
            reducer.update(step(batch))
            seen += len(batch.x)
            bar.update(len(batch.x))
    return seen
