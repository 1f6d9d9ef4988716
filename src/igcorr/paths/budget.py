"""The memory budget every per-point allocation goes through, and the chunk tuner.

A run states one budget (``max_memory``, default :func:`default_memory_budget`). The path integrator sizes its
chunks of path points with three quarters of it, the batched-cotangent strategy asks it before allocating its
J × P × J cotangents, and the dataset run loop sizes its batches of samples (per-sample attribution buffers and
the baselines of a batch, Monte-Carlo draws included) with the last quarter; the state a run accumulates (maps,
permutation and bootstrap accumulators) is compared with it before any path integral. A request that cannot
fit even for one point or one sample is refused before the compute starts, with the number of bytes it needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from igcorr._validation import check_optional_positive_int
from igcorr.errors import InputError

#: path points per forward pass before the integrator is configured for a model
DEFAULT_CHUNK_POINTS = 512
#: chunk sizes timed on the first chunks of a run (those within the memory budget); the fastest per point is
#: kept. The best size depends on the model and the machine's caches
CHUNK_CANDIDATES = (128, 256, 512, 1024, 2048)


def available_memory() -> int:
    """Bytes of memory available to this process (MemAvailable on Linux; 8 GiB if it cannot be read)."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 2**30


def default_memory_budget() -> int:
    """Default ``max_memory``: a quarter of the available memory, at most 4 GiB."""
    return int(min(4 * 2**30, available_memory() // 4))


@dataclass(frozen=True)
class MemoryBudget:
    """Bytes that the per-point and per-sample working memory of a run may take.

    Parameters
    ----------
    max_memory : int, optional
        The budget in bytes; None: :func:`default_memory_budget` (read when the budget is created).
    """

    bytes: int

    @classmethod
    def of(cls, max_memory: int | None) -> "MemoryBudget":
        """The budget for a ``max_memory`` argument (validated; None: the default)."""
        value = check_optional_positive_int(max_memory, "max_memory", hint="bytes")
        return cls(value if value is not None else default_memory_budget())

    def fraction(self, share: float) -> "MemoryBudget":
        """A share of this budget (e.g. the part given to one kind of buffer)."""
        return MemoryBudget(max(1, int(self.bytes * share)))

    def count(self, bytes_each: int, what: str) -> int:
        """How many items of ``bytes_each`` bytes fit (at least one), or an error naming ``what`` if not one.

        Raises
        ------
        InputError
            If one item alone exceeds the budget.
        """
        if bytes_each > self.bytes:
            raise InputError(
                f"max_memory={self.bytes} bytes is too small: {what} needs about {bytes_each} bytes; raise "
                f"max_memory to at least {bytes_each * 4}"
            )
        return max(1, int(self.bytes // max(bytes_each, 1)))

    def fits(self, nbytes: int) -> bool:
        """Whether an allocation of ``nbytes`` fits."""
        return nbytes <= self.bytes


class ChunkTuning:
    """Chooses the chunk size and the output strategy with the lowest time per path point by timing real chunks.

    The first chunk is a warm-up (allocator growth, kernel selection); then the candidate sizes are timed on
    one chunk each, smallest first, with every output strategy still in the running. The trial stops at the
    first size slower per point than the one before (the time per point falls while chunks amortise the
    per-pass overheads, then rises once the activations leave the caches), and the batched strategy leaves the
    running once it is more than ``DROP_RATIO`` times slower than the loop: its cost relative to the loop
    grows with the chunk (its cotangents are J × P × J), so it does not come back at larger sizes. Timed
    chunks are real work: a run that ends before the trial is over has lost nothing but the batched passes.
    """

    DROP_RATIO = 1.25
    SIZE_MARGIN = 1.10

    def __init__(self, sizes: Sequence[int], strategies: Sequence[str]) -> None:
        self.sizes = list(sizes)
        self.strategies = list(strategies)
        decided = len(self.sizes) == 1 and len(self.strategies) == 1
        self.queue: list[int] = [] if decided else [self.sizes[0], *self.sizes]
        self.warmed_up = False
        self.seconds_per_point: dict[tuple[int, str], float] = {}
        #: points of the (short) paths timed whole, when they are shorter than a size of the trial
        self.whole_path: int | None = None

    @property
    def trying(self) -> int | None:
        """The chunk size being timed, or None once the trial is over."""
        return self.queue[0] if self.queue else None

    def cap(self, points: int) -> None:
        """The paths of this run hold only ``points`` points (a short per-batch path: few samples per batch times
        few points per sample), fewer than the size being timed: no chunk of the larger sizes can occur, so a
        whole path takes their place in the trial and is timed next (after the warm-up if that has not run).
        Without this, a run whose paths are all shorter than the smallest candidate would never time a chunk
        and keep its first output strategy untested. If whole paths turn out fastest, :meth:`choice` keeps the
        largest size (whose chunks are whole paths)."""
        if not self.queue or self.queue[0] <= points:
            return
        self.whole_path = int(points)
        self.queue = [int(points)] if self.warmed_up else [int(points), int(points)]

    def drop(self, strategy: str) -> None:
        """Take a strategy out of the running (it does not fit in memory or disagrees with the others)."""
        if strategy in self.strategies and len(self.strategies) > 1:
            self.strategies.remove(strategy)
            self.seconds_per_point = {key: v for key, v in self.seconds_per_point.items() if key[1] != strategy}

    def record(self, size: int, seconds: dict[str, float]) -> None:
        """Seconds each strategy took for a chunk of ``size`` points (forward pass and accumulation included)."""
        self.queue.pop(0)
        if not self.warmed_up:
            self.warmed_up = True
            return
        for strategy, value in seconds.items():
            self.seconds_per_point[(size, strategy)] = value / size
        fastest = min(value / size for value in seconds.values())
        if "batched" in seconds and "loop" in seconds and seconds["batched"] > self.DROP_RATIO * seconds["loop"]:
            self.drop("batched")
        smaller = [key for key in self.seconds_per_point if key[0] < size]
        if smaller and fastest > min(self.seconds_per_point[key] for key in smaller):
            self.queue.clear()

    def choice(self) -> tuple[int, str]:
        """The smallest chunk size within ``SIZE_MARGIN`` of the fastest per point measured so far, with its
        faster strategy; the largest size before any measurement.

        A single timed chunk flatters large chunks: in a long run, their big temporaries are allocated and
        freed again every chunk (page faults, system time), which the first chunks do not show.
        """
        if not self.seconds_per_point:
            return self.sizes[-1], self.strategies[0]
        fastest = min(self.seconds_per_point.values())
        size = min(size for (size, _), value in self.seconds_per_point.items() if value <= self.SIZE_MARGIN * fastest)
        chosen, strategy = min(((s, strategy) for s, strategy in self.seconds_per_point if s == size),
                               key=self.seconds_per_point.__getitem__)
        if chosen == self.whole_path and chosen not in self.sizes:
            chosen = self.sizes[-1]  # whole paths were fastest: chunks as large as allowed hold whole paths
        return chosen, strategy

    def describe(self) -> dict[str, float]:
        """Measured microseconds per point, keyed "size strategy"."""
        return {f"{size} {strategy}": round(value * 1e6, 2)
                for (size, strategy), value in sorted(self.seconds_per_point.items())}
