"""Counter-based randomness: random numbers that are pure functions of (seed, index).

A sample's random draws (its dataset baselines, a synthetic image, a permutation) must not depend on which
batch, shard or resumed run processes it. Instead of advancing one generator through the data, every draw is
keyed by the seed and the global index of what it belongs to.
"""

from __future__ import annotations

import numpy as np
import torch

from igcorr._validation import check_positive_int
from igcorr.errors import InputError

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


def keyed_uniform(seed: int, *keys: np.ndarray | int) -> np.ndarray:
    """Uniform floats in ``[0, 1)`` keyed by (seed, keys); float64 array of the broadcast key shape.

    The top 53 bits of :func:`keyed_uint64` become the mantissa, so every value is a multiple of 2**-53 and
    1.0 is never returned.
    """
    return (keyed_uint64(seed, *keys) >> np.uint64(11)).astype(np.float64) * 2.0**-53


#: tag mixed into the round keys of :func:`keyed_permutation`, so that its streams never coincide with other
#: draws keyed by the same seed and small integers
_PERMUTATION_TAG = 0x7E12_F00D_5EED_0001
#: Feistel rounds; even, so that the two halves end with the widths they started with
_FEISTEL_ROUNDS = 8


def _feistel(values: np.ndarray, round_keys: list[np.ndarray], left_bits: int, right_bits: int) -> np.ndarray:
    """One pass of the keyed Feistel network over uint64 ``values`` in ``[0, 2**(left_bits + right_bits))``.

    ``round_keys`` are uint64 arrays broadcastable to ``values``. Each round maps the halves (L, R) to
    (R, L xor F_r(R)), which is invertible whatever the round function F_r, so the network is a bijection of
    the power-of-two domain. The halves swap widths every round (an unbalanced network when the number of bits
    is odd) and get their original widths back after the even number of rounds.
    """
    left = values >> np.uint64(right_bits)
    right = values & np.uint64((1 << right_bits) - 1)
    left_width = left_bits
    for key in round_keys:
        mixed = _splitmix64(key ^ right)
        left, right = right, left ^ (mixed & np.uint64((1 << left_width) - 1))
        left_width = left_bits + right_bits - left_width
    return (left << np.uint64(right_bits)) | right


def keyed_permutation(seed: int, stream: np.ndarray | int, indices: np.ndarray | int, n: int) -> np.ndarray:
    """Images of ``indices`` under a pseudo-random permutation of ``[0, n)`` keyed by (seed, stream).

    Each (seed, stream) pair defines one bijection π of {0, ..., n − 1}; ``keyed_permutation(seed, s, i, n)``
    is π_s(i), evaluated pointwise, so the image of any sample is available without materialising the
    permutation (memory O(len(indices)), not O(n)). It is a keyed Feistel network (8 rounds, SplitMix64 round
    function) on the smallest power of two 2**m >= n, restricted to [0, n) by cycle-walking: an image that
    falls in [n, 2**m) is mapped again until it lands in range, which keeps the map a bijection of [0, n)
    and needs fewer than 2 network passes on average (2**m < 2n). The result is a pure function of its
    arguments: independent of how the indices are batched, sharded or ordered.

    Parameters
    ----------
    seed : int
        Random seed.
    stream : int or integer array
        Which permutation (e.g. the permutation number p); broadcast against ``indices``, so a column of
        streams of shape (P, 1) and indices of shape (n_batch,) give the (P, n_batch) images of a batch under
        P permutations.
    indices : int or integer array
        Points to map, each in ``[0, n)``.
    n : int
        Size of the permuted set (n >= 1).

    Returns
    -------
    numpy.ndarray of int64, shape broadcast(stream.shape, indices.shape)
        ``π_stream(index)``, in ``[0, n)``; distinct indices under one stream have distinct images.

    Raises
    ------
    InputError
        If n is not a positive integer, or stream / indices are not integers or an index is outside [0, n).
    """
    n = check_positive_int(n, "n", hint="the number of elements to permute")
    index_array = np.asarray(indices)
    stream_array = np.asarray(stream)
    for name, array in (("indices", index_array), ("stream", stream_array)):
        if array.dtype.kind not in "iu":
            raise InputError(f"{name} must be integers, got dtype {array.dtype}")
    if index_array.size and (int(index_array.min()) < 0 or int(index_array.max()) >= n):
        bad = index_array[(index_array < 0) | (index_array >= n)]
        raise InputError(
            f"indices must lie in [0, n) = [0, {n}); got e.g. {bad.reshape(-1)[:3].tolist()}. They are positions "
            "in the permuted set (global sample indices of a dataset of n samples)"
        )
    shape = np.broadcast_shapes(stream_array.shape, index_array.shape)
    if n == 1:
        return np.zeros(shape, dtype=np.int64)
    bits = (n - 1).bit_length()
    left_bits, right_bits = (bits + 1) // 2, bits // 2
    round_keys = [keyed_uint64(seed, _PERMUTATION_TAG, stream_array, r) for r in range(_FEISTEL_ROUNDS)]
    values = np.array(np.broadcast_to(index_array.astype(np.int64).astype(np.uint64), shape))
    values = _feistel(values, round_keys, left_bits, right_bits)
    outside = values >= np.uint64(n)
    while outside.any():  # cycle-walking; terminates because the cycle through an index in [0, n) re-enters it
        keys = [np.broadcast_to(key, shape)[outside] for key in round_keys]
        values[outside] = _feistel(values[outside], keys, left_bits, right_bits)
        outside = values >= np.uint64(n)
    return values.astype(np.int64)
