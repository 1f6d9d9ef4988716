"""Counter-based randomness: keyed hashes, integers, uniforms, generators and pointwise permutations."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats

from igcorr.errors import InputError
from igcorr.seeding import generator_for, keyed_integers, keyed_permutation, keyed_uint64, keyed_uniform


# ----------------------------------------------------------------------------------------------------------
# the existing keyed functions
# ----------------------------------------------------------------------------------------------------------
def test_keyed_uint64_is_a_pure_function_of_its_arguments_and_broadcasts():
    indices = np.arange(1000)
    first = keyed_uint64(5, 3, indices)
    assert first.dtype == np.uint64 and first.shape == (1000,)
    assert np.array_equal(first, keyed_uint64(5, 3, indices))
    # batching does not matter: evaluating a slice gives the same numbers
    assert np.array_equal(first[400:410], keyed_uint64(5, 3, indices[400:410]))
    assert np.array_equal(first[17], keyed_uint64(5, 3, 17))
    # broadcasting of keys
    grid = keyed_uint64(5, np.arange(4)[:, None], indices[None, :])
    assert grid.shape == (4, 1000) and np.array_equal(grid[3], first)
    assert len(np.unique(first)) == 1000
    assert not np.array_equal(first, keyed_uint64(6, 3, indices))
    assert not np.array_equal(first, keyed_uint64(5, 4, indices))
    assert not np.array_equal(keyed_uint64(5, 1, 2), keyed_uint64(5, 2, 1))  # key order matters


def test_keyed_uint64_bits_are_balanced():
    values = keyed_uint64(0, np.arange(20_000))
    bits = (values[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)
    frequency = bits.mean(axis=0)
    assert np.all(np.abs(frequency - 0.5) < 5 * 0.5 / np.sqrt(20_000))


def test_keyed_integers_range_and_uniformity():
    draws = keyed_integers(1, 10, np.arange(50_000))
    assert draws.dtype == np.int64 and draws.min() == 0 and draws.max() == 9
    counts = np.bincount(draws, minlength=10)
    assert scipy_stats.chisquare(counts).pvalue > 1e-3
    assert np.array_equal(draws[:100], keyed_integers(1, 10, np.arange(100)))
    with pytest.raises(ValueError, match="high must be positive"):
        keyed_integers(1, 0, 3)


def test_keyed_uniform_range_and_distribution():
    values = keyed_uniform(2, 7, np.arange(50_000))
    assert values.dtype == np.float64 and values.min() >= 0.0 and values.max() < 1.0
    assert scipy_stats.kstest(values, "uniform").pvalue > 1e-3
    assert np.array_equal(values[10:20], keyed_uniform(2, 7, np.arange(10, 20)))


def test_generator_for_is_keyed():
    first = torch.rand(5, generator=generator_for(3, 1, 2))
    assert torch.equal(first, torch.rand(5, generator=generator_for(3, 1, 2)))
    assert not torch.equal(first, torch.rand(5, generator=generator_for(3, 2, 1)))
    assert not torch.equal(first, torch.rand(5, generator=generator_for(4, 1, 2)))


# ----------------------------------------------------------------------------------------------------------
# keyed_permutation
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 8, 9, 64, 100, 1000, 1023, 1025, 4097])
def test_keyed_permutation_is_a_bijection(n):
    for stream in range(4):
        images = keyed_permutation(11, stream, np.arange(n), n)
        assert images.dtype == np.int64 and images.shape == (n,)
        assert np.array_equal(np.sort(images), np.arange(n))


def test_keyed_permutation_is_pointwise_and_deterministic():
    n = 1000
    full = keyed_permutation(3, 42, np.arange(n), n)
    # evaluated on any subset, in any order, in any chunks: the same images
    subset = np.array([999, 0, 500, 17, 17])
    assert np.array_equal(keyed_permutation(3, 42, subset, n), full[subset])
    assert int(keyed_permutation(3, 42, 123, n)) == full[123]
    chunks = np.concatenate([keyed_permutation(3, 42, np.arange(a, min(a + 7, n)), n) for a in range(0, n, 7)])
    assert np.array_equal(chunks, full)
    assert np.array_equal(keyed_permutation(3, 42, np.arange(n), n), full)
    # streams broadcast against indices
    grid = keyed_permutation(3, np.arange(40, 45)[:, None], np.arange(n)[None, :], n)
    assert grid.shape == (5, n) and np.array_equal(grid[2], full)


def test_keyed_permutation_differs_across_streams_and_seeds():
    n = 200
    images = keyed_permutation(0, np.arange(50)[:, None], np.arange(n)[None, :], n)
    assert len({row.tobytes() for row in images}) == 50
    assert not np.array_equal(images[0], keyed_permutation(1, 0, np.arange(n), n))
    assert not np.array_equal(images[0], np.arange(n))
    # a permutation of 200 elements has about one fixed point on average
    assert (images == np.arange(n)).sum(axis=1).mean() < 3


def test_keyed_permutation_position_of_an_element_is_uniform():
    for n in (7, 10, 33):
        positions = keyed_permutation(5, np.arange(40 * n), 3, n)
        counts = np.bincount(positions, minlength=n)
        assert scipy_stats.chisquare(counts).pvalue > 1e-3, n


def test_keyed_permutation_of_three_elements_hits_all_six_orderings_evenly():
    images = keyed_permutation(9, np.arange(6000)[:, None], np.arange(3)[None, :], 3)
    orderings = list(itertools.permutations(range(3)))
    counts = [int(np.all(images == np.array(order), axis=1).sum()) for order in orderings]
    assert sum(counts) == 6000
    assert scipy_stats.chisquare(counts).pvalue > 1e-3


def test_keyed_permutation_pairs_are_independent_enough():
    # joint positions of two elements: uniform over the n (n - 1) ordered pairs of distinct positions
    n = 6
    images = keyed_permutation(4, np.arange(9000)[:, None], np.array([[0, 5]]), n)
    assert np.all(images[:, 0] != images[:, 1])
    cells = images[:, 0] * n + images[:, 1]
    counts = np.bincount(cells, minlength=n * n)[[a * n + b for a in range(n) for b in range(n) if a != b]]
    assert scipy_stats.chisquare(counts).pvalue > 1e-3


def test_keyed_permutation_validation():
    with pytest.raises(InputError, match="positive integer"):
        keyed_permutation(0, 0, 0, 0)
    with pytest.raises(InputError, match="positive integer"):
        keyed_permutation(0, 0, 0, 2.5)
    with pytest.raises(InputError, match=r"\[0, 5\)"):
        keyed_permutation(0, 0, np.array([0, 5]), 5)
    with pytest.raises(InputError, match=r"\[0, 5\)"):
        keyed_permutation(0, 0, -1, 5)
    with pytest.raises(InputError, match="integers"):
        keyed_permutation(0, 0, np.array([0.5]), 5)
    with pytest.raises(InputError, match="integers"):
        keyed_permutation(0, np.array([1.0]), 0, 5)
    assert keyed_permutation(0, np.arange(3)[:, None], np.zeros((1, 4), dtype=np.int64), 1).shape == (3, 4)
