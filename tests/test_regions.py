"""Tests of igcorr.regions: region forms, broadcasting, region sums and the RegionTable."""

from __future__ import annotations

import csv
import math
import warnings

import numpy as np
import pytest
import torch

from igcorr.errors import InputError, NonFiniteError, ShapeError
from igcorr.regions import CORE_COLUMNS, RegionTable, as_region_masks, region_sums

X_SHAPE = (1, 6, 6)


def label_map() -> np.ndarray:
    """A (6, 6) label map with labels {0, 2, 5}: 2 on the top two rows, 5 on a 2x3 block at the bottom."""
    labels = np.zeros((6, 6), dtype=np.int64)
    labels[:2, :] = 2
    labels[4:, 3:] = 5
    return labels


def random_maps(k: int = 3, x_shape: tuple[int, ...] = X_SHAPE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(k, *x_shape))


def numeric_columns(table: RegionTable) -> dict[str, np.ndarray]:
    return {name: table.column(name) for name in ("output", "sum", "share", "mean", "size")}


def assert_same_numbers(a: RegionTable, b: RegionTable) -> None:
    assert len(a) == len(b)
    for name, column in numeric_columns(a).items():
        np.testing.assert_allclose(b.column(name), column, rtol=1e-12, atol=0, err_msg=name)


# ----------------------------------------------------------------------------------------------------------
# Region forms
# ----------------------------------------------------------------------------------------------------------
def test_label_map_with_labels_0_2_5() -> None:
    names, masks = as_region_masks(label_map(), X_SHAPE)
    assert names == ["label_2", "label_5"]
    assert masks.shape == (2, *X_SHAPE) and masks.dtype == bool
    assert masks[0].sum() == 12 and masks[1].sum() == 6
    assert not (masks[0] & masks[1]).any()
    masks[0, 0, 0, 0] = False  # the result is a fresh writable array


def test_every_region_form_gives_the_same_table() -> None:
    maps = random_maps()
    labels = label_map()
    bool_masks = np.stack([labels == 2, labels == 5])  # (2, 6, 6)
    stack = bool_masks[:, None]  # (2, 1, 6, 6)
    as_dict = {"label_2": bool_masks[0], "label_5": bool_masks[1]}
    reference = region_sums(maps, labels)
    forms = [
        labels[None],  # label map with the channel dimension
        labels.astype(np.uint8),
        torch.from_numpy(labels),
        stack,
        torch.from_numpy(stack),
        as_dict,
        {name: torch.from_numpy(mask[None]) for name, mask in as_dict.items()},
        stack.tolist(),
    ]
    for form in forms:
        assert_same_numbers(reference, region_sums(maps, form))
    assert_same_numbers(reference, region_sums(torch.from_numpy(maps), labels))
    # names follow the form
    assert list(region_sums(maps, as_dict).column("region")[:2]) == ["label_2", "label_5"]
    assert list(region_sums(maps, stack).column("region")[:2]) == ["region_0", "region_1"]
    # a single mask equals the matching row of the stack
    single = region_sums(maps, bool_masks[1])
    assert list(single.column("region")) == ["region"] * 3
    np.testing.assert_allclose(single.column("sum"), reference.column("sum")[1::2], rtol=1e-12)
    # as_region_masks output fed back as a dict
    names, masks = as_region_masks(labels, X_SHAPE)
    assert_same_numbers(reference, region_sums(maps, dict(zip(names, masks))))


def test_sums_shares_means_by_hand() -> None:
    maps = np.array([[1.0, 2.0, 3.0, 4.0], [-1.0, 0.5, 0.5, 2.0]])  # K = 2, x_shape = (4,)
    regions = {"front": np.array([True, True, False, False]), "last": np.array([False, False, False, True])}
    table = region_sums(maps, regions)
    assert table.columns == CORE_COLUMNS
    assert list(table.column("output")) == [0, 0, 1, 1]
    assert list(table.column("region")) == ["front", "last", "front", "last"]
    np.testing.assert_allclose(table.column("sum"), [3.0, 4.0, -0.5, 2.0])
    np.testing.assert_allclose(table.column("share"), [3.0 / 10.0, 4.0 / 10.0, -0.5 / 2.0, 2.0 / 2.0])
    np.testing.assert_allclose(table.column("mean"), [1.5, 4.0, -0.25, 2.0])
    assert list(table.column("size")) == [2, 1, 2, 1]
    # an explicit total, scalar or per output
    np.testing.assert_allclose(region_sums(maps, regions, total=4.0).column("share"), [0.75, 1.0, -0.125, 0.5])
    np.testing.assert_allclose(
        region_sums(maps, regions, total=[10.0, -1.0]).column("share"), [0.3, 0.4, 0.5, -2.0]
    )


def test_shares_of_a_partition_add_up_to_one() -> None:
    maps = random_maps(k=4, x_shape=(50,), seed=3)
    labels = np.random.default_rng(4).integers(1, 6, size=50)
    table = region_sums(maps, labels)
    shares = table.column("share").reshape(4, -1)
    np.testing.assert_allclose(shares.sum(axis=1), 1.0, rtol=1e-10)
    assert table.column("size").reshape(4, -1)[0].sum() == 50


def test_zero_total_gives_nan_share_without_warnings() -> None:
    maps = np.array([[1.0, -1.0, 0.0], [1.0, 2.0, 3.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = region_sums(maps, np.array([True, False, False]))
        assert math.isnan(table.column("share")[0])
        assert table.column("share")[1] == pytest.approx(1.0 / 6.0)
        assert table.column("sum")[0] == 1.0
        table_zero = region_sums(maps, np.array([True, False, False]), total=0.0)
        assert np.isnan(table_zero.column("share")).all()
        repr(table_zero), table_zero.to_markdown()


# ----------------------------------------------------------------------------------------------------------
# Broadcasting rule
# ----------------------------------------------------------------------------------------------------------
def test_masks_broadcast_from_the_trailing_dimensions() -> None:
    mask = np.zeros((8, 8), dtype=bool)
    mask[2:4, 1:6] = True  # 10 pixels
    for x_shape, size in [((1, 8, 8), 10), ((3, 8, 8), 30)]:
        for form in (mask, mask[None], torch.from_numpy(mask)):
            names, masks = as_region_masks(form, x_shape)
            assert names == ["region"] and masks.shape == (1, *x_shape)
            assert masks.sum() == size
            assert (masks[0] == mask).all()  # the same pixels in every channel
    # a size-1 dimension inside the mask is repeated too: a column selection
    names, masks = as_region_masks(np.array([[True], [False]]), (2, 3))
    assert masks[0].tolist() == [[True, True, True], [False, False, False]]
    # an integer label map broadcasts over channels in the same way
    names, masks = as_region_masks(label_map(), (3, 6, 6))
    assert masks.shape == (2, 3, 6, 6) and masks[0].sum() == 36
    # a stack of (1, 8, 8) masks over 3 channels
    names, masks = as_region_masks(np.stack([mask, ~mask])[:, None], (3, 8, 8))
    assert names == ["region_0", "region_1"] and masks[1].sum() == 3 * 54
    # the region sum of a broadcast mask covers all channels
    maps = random_maps(k=2, x_shape=(3, 8, 8))
    table = region_sums(maps, mask)
    np.testing.assert_allclose(table.column("sum"), maps[:, :, mask].sum(axis=(1, 2)))
    assert list(table.column("size")) == [30, 30]


def test_shapes_that_cannot_broadcast_raise_shape_error() -> None:
    mask = np.ones((8, 8), dtype=bool)
    with pytest.raises(ShapeError, match="cannot be broadcast"):
        as_region_masks(np.ones((7, 8), dtype=bool), (1, 8, 8))
    # (3, 8, 8) is one mask (ndim <= len(x_shape)), which does not fit one channel; the message suggests a stack
    with pytest.raises(ShapeError, match=r"stack\[:, None\]"):
        as_region_masks(np.ones((3, 8, 8), dtype=bool), (1, 8, 8))
    with pytest.raises(ShapeError, match="too many dimensions"):
        as_region_masks(np.ones((2, 2, 1, 8, 8), dtype=bool), (1, 8, 8))
    with pytest.raises(ShapeError, match="more dimensions"):
        as_region_masks(np.ones((2, 1, 8, 8), dtype=np.int64), (1, 8, 8))
    with pytest.raises(ShapeError, match="more dimensions"):
        as_region_masks({"a": np.ones((2, 1, 8, 8), dtype=bool)}, (1, 8, 8))
    with pytest.raises(ShapeError, match="mask 0 of the stack"):
        as_region_masks(np.ones((2, 1, 8, 4), dtype=bool), (1, 8, 8))
    with pytest.raises(ShapeError, match="scalar"):
        as_region_masks(np.bool_(True), (4,))
    with pytest.raises(ShapeError, match="x_shape"):
        as_region_masks(mask, (8, -8))
    for bad_shape in [(), (8, True), (8, 8.0), (0, 8), "88", None, -3]:
        with pytest.raises(ShapeError, match="x_shape"):
            as_region_masks(mask, bad_shape)
    names, masks = as_region_masks(np.ones(4, dtype=bool), np.int64(4))  # an int n is read as (n,)
    assert names == ["region"] and masks.shape == (1, 4)
    with pytest.raises(ShapeError, match="different shapes"):
        as_region_masks([np.ones(3, bool), np.ones(4, bool)], (4,))
    with pytest.raises(ShapeError, match=r"maps\[None\]"):
        region_sums(np.ones(4), np.ones(4, dtype=bool))
    with pytest.raises(ShapeError, match="total"):
        region_sums(np.ones((2, 4)), np.ones(4, dtype=bool), total=[1.0, 2.0, 3.0])


# ----------------------------------------------------------------------------------------------------------
# Input errors
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("regions", "phrase"),
    [
        (np.zeros((1, 4, 4), dtype=bool), "no component"),
        (np.array([[True] * 16, [False] * 16]).reshape(2, 1, 4, 4), r"\['region_1'\] have no component"),
        ({"empty": np.zeros(16, dtype=bool).reshape(4, 4)}, "'empty'.*no component"),
        (np.zeros((4, 4), dtype=np.int64), "no non-zero label"),
        (np.full((4, 4), 0.5), r"dtype float64.*mask > 0\.5"),
        (torch.ones(4, 4), "dtype float32"),
        (np.array([["a"] * 4] * 4), "boolean masks or an integer label map"),
        (np.array([[0, 1, -2, 3]] * 4), "negative labels"),
        ({"ints": np.ones((4, 4), dtype=np.int64)}, "must be boolean"),
        ({"f": np.ones((4, 4))}, "dtype float64"),
        ({}, "empty dict"),
        ({3: np.ones((4, 4), dtype=bool)}, "names must be strings"),
        (np.zeros((0, 1, 4, 4), dtype=bool), "zero masks"),
        (None, "None"),
    ],
)
def test_invalid_regions_raise_input_error(regions: object, phrase: str) -> None:
    with pytest.raises(InputError, match=phrase) as info:
        as_region_masks(regions, (1, 4, 4))
    assert not isinstance(info.value, ShapeError)


def test_invalid_maps() -> None:
    mask = np.ones(3, dtype=bool)
    with pytest.raises(NonFiniteError, match="nan_to_num"):
        region_sums(np.array([[1.0, np.nan, 2.0]]), mask)
    with pytest.raises(NonFiniteError, match="total"):
        region_sums(np.ones((1, 3)), mask, total=np.inf)
    with pytest.raises(InputError, match="real-valued"):
        region_sums(np.ones((1, 3), dtype=complex), mask)


# ----------------------------------------------------------------------------------------------------------
# RegionTable
# ----------------------------------------------------------------------------------------------------------
def test_table_rows_columns_and_immutability() -> None:
    table = region_sums(random_maps(k=2), label_map())
    assert len(table) == 4
    rows = table.rows()
    assert [row["region"] for row in rows] == ["label_2", "label_5"] * 2
    assert list(table) == rows
    first = rows[0]
    assert list(first) == list(CORE_COLUMNS)
    assert type(first["output"]) is int and type(first["size"]) is int
    assert type(first["sum"]) is float and type(first["region"]) is str
    with pytest.raises(ValueError):
        table.column("sum")[0] = 0.0
    with pytest.raises(InputError, match="no column 'p'.*'share'"):
        table.column("p")
    with pytest.raises(InputError, match="missing"):
        RegionTable({"output": [0], "region": ["a"]})
    with pytest.raises(ShapeError, match="rows"):
        RegionTable({**table.to_dict(), "extra": np.zeros(3)})


def test_with_columns() -> None:
    maps = random_maps(k=3)
    table = region_sums(maps, label_map())  # K = 3, R = 2
    grid = np.arange(6.0).reshape(3, 2)
    bigger = table.with_columns(p_value=grid, ci_low=np.arange(6) - 0.5, method="igc", significant=grid > 2)
    assert bigger.columns == (*CORE_COLUMNS, "p_value", "ci_low", "method", "significant")
    assert table.columns == CORE_COLUMNS  # unchanged
    np.testing.assert_array_equal(bigger.column("p_value"), np.arange(6.0))  # [output, region] row order
    assert bigger.rows()[3]["p_value"] == grid[1, 1]
    assert list(bigger.column("method")) == ["igc"] * 6
    np.testing.assert_array_equal(bigger.column("sum"), table.column("sum"))
    replaced = bigger.with_columns(p_value=np.zeros(6))
    assert replaced.columns == bigger.columns and (replaced.column("p_value") == 0).all()
    with pytest.raises(InputError, match="core column"):
        table.with_columns(share=np.zeros(6))
    with pytest.raises(ShapeError, match=r"shape \(6,\)"):
        table.with_columns(p=np.zeros(5))
    with pytest.raises(ShapeError, match=r"\(3, 2\)"):
        table.with_columns(p=np.zeros((2, 3)))
    with pytest.raises(InputError, match="dtype object"):
        table.with_columns(p=np.array([None] * 6))


def test_to_csv_round_trip(tmp_path) -> None:
    left = np.zeros((6, 6), dtype=bool)
    left[:, :3] = True
    maps = random_maps(k=2)
    maps[1] = np.where(left, 1.0, -1.0)  # total exactly 0 for output 1: NaN shares go through the file too
    regions = {"left, half": left, 'quote "q"': label_map() == 5}
    table = region_sums(maps, regions).with_columns(p=np.array([0.1, 1e-300, 0.5, 1.0]), flag=[1, 0, 1, 0])
    path = tmp_path / "regions.csv"
    table.to_csv(path)
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == table.columns
        read = list(reader)
    assert len(read) == len(table)
    for row, expected in zip(read, table.rows()):
        assert row["region"] == expected["region"]
        assert int(row["output"]) == expected["output"] and int(row["size"]) == expected["size"]
        assert int(row["flag"]) == expected["flag"]
        for name in ("sum", "share", "mean", "p"):
            value = float(row[name])
            assert value == expected[name] or (math.isnan(value) and math.isnan(expected[name]))
    assert np.isnan(table.column("share")[2:]).all()


def test_markdown_and_repr() -> None:
    table = region_sums(random_maps(k=2), {"a|b": label_map() == 2, "c": label_map() == 5})
    text = table.to_markdown()
    lines = text.splitlines()
    assert len(lines) == 2 + len(table)
    assert lines[0].split("|")[1].strip() == "output"
    assert set(lines[1].replace("|", "").replace(" ", "")) <= {"-", ":"}
    assert "a\\|b" in text  # the pipe in a name is escaped
    assert all(line.count("|") - line.count("\\|") == len(table.columns) + 1 for line in lines)
    assert format(table.column("sum")[0], ".6g") in text
    short = repr(table)
    assert short.startswith("RegionTable(4 rows x 6 columns)") and "c" in short
    long_table = region_sums(random_maps(k=30, x_shape=(6, 6)), label_map())
    long_repr = repr(long_table)
    assert "…" in long_repr and len(long_repr.splitlines()) == 1 + 2 + 21
