"""Counter-based randomness: random numbers that are pure functions of (seed, index).

A sample's random draws (its dataset baselines, a synthetic image, a permutation) must not depend on which
batch, shard or resumed run processes it. Instead of advancing one generator through the data, every draw is
keyed by the seed and the global index of what it belongs to.
"""

from __future__ import annotations

import numpy as np
import torch

_MASK64 = (1 << 64) - 1


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """Bijective 64-bit mixing (the SplitMix64 finaliser), vectorised over a uint64 array."""
    with np.errstate(over="ignore"):
        z = values + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def keyed_uint64(seed: int, *keys: np.ndarray | int) -> np.ndarray:
    """Hash ``seed`` and integer keys (broadcast together) into well-mixed uint64 values.

    The result is a pure function of its arguments: the same (seed, keys) always give the same numbers.
    """
    state = _splitmix64(np.asarray(seed & _MASK64, dtype=np.uint64))
    for key in keys:
        key_array = np.asarray(key, dtype=np.int64).astype(np.uint64)
        state = _splitmix64(state ^ _splitmix64(key_array))
    return np.asarray(state, dtype=np.uint64)


def keyed_integers(seed: int, high: int, *keys: np.ndarray | int) -> np.ndarray:
    """Integers uniform in ``[0, high)`` keyed by (seed, keys); int64 array of the broadcast key shape."""
    if high <= 0:
        raise ValueError(f"high must be positive, got {high}")
    # 64 random bits reduced modulo ``high``: the bias is below high / 2**64, far under any sampling error.
    return (keyed_uint64(seed, *keys) % np.uint64(high)).astype(np.int64)


def generator_for(seed: int, *keys: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` whose stream is a pure function of (seed, keys)."""
    generator = torch.Generator(device=device)
    generator.manual_seed(int(keyed_uint64(seed, *keys)) & ((1 << 63) - 1))
    return generator
