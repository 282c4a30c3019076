"""Tests of the seeded ID-based split (cas.split, cas.cli.split; spec in docs/splits.md).

The expected values come from two places that do not share code with cas.split: literal
golden vectors (copied into docs/splits.md), and ``_reference_*`` below, a plain per-id loop
over the ``blake3`` package. Either one alone could drift with the code it checks; together
they pin the algorithm.
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from collections import Counter
from fractions import Fraction
from pathlib import Path
from typing import Any

import blake3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

import cas.split as split_module
from cas.cli.split import register
from cas.errors import CasError, PathError, UsageError
from cas.split import assign, hash_ids, parse_fractions, split_parquet, thresholds

F = {"train": 0.8, "val": 0.1, "test": 0.1}


# --------------------------------------------------------------------------------------------
# Independent reference


def _reference_key(seed: int, id_: str | bytes | int) -> bytes:
    prefix = seed.to_bytes(8, "little", signed=True)
    if isinstance(id_, str):
        return prefix + b"\x01" + id_.encode("utf-8")
    if isinstance(id_, bytes):
        return prefix + b"\x03" + id_
    return prefix + b"\x02" + int(id_).to_bytes(8, "little", signed=True)


def _reference_u(seed: int, id_: str | bytes | int) -> int:
    return int.from_bytes(blake3.blake3(_reference_key(seed, id_)).digest(8), "little")


def _reference_labels(ids: list[Any], seed: int, fractions: dict[str, float]) -> list[str]:
    items = list(fractions.items())
    bounds = []
    cumulative = Fraction(0)
    for _, fraction in items[:-1]:
        cumulative += Fraction(fraction)
        bounds.append(min(2**64, math.floor(cumulative * 2**64)))
    labels = []
    for id_ in ids:
        u = _reference_u(seed, id_)
        label = items[-1][0]
        for (name, _), bound in zip(items, bounds, strict=False):
            if u < bound:
                label = name
                break
        labels.append(label)
    return labels


def _as_list(labels: Any) -> list[str]:
    if isinstance(labels, pa.ChunkedArray | pa.Array):
        return [str(x) for x in labels.to_pylist()]
    return [str(x) for x in labels.tolist()]


# --------------------------------------------------------------------------------------------
# Golden vectors (the same values are in docs/splits.md)

# fmt: off
GOLDEN_USERS_SEED_42 = [
    "train", "train", "test", "train", "train", "train", "val", "train", "train", "train",
    "train", "train", "test", "val", "train", "train", "test", "train", "train", "train",
    "val", "test", "val", "test", "train", "train", "train", "train", "val", "train",
]
# fmt: on

# fmt: off
GOLDEN_INTS_SEED_7 = [
    "train", "test", "train", "train", "train", "val", "train", "train", "val", "train",
    "train", "train", "train", "val", "train", "val", "test", "test", "test", "train",
    "train", "test", "train", "train", "train", "train", "train", "train", "train", "train",
]
# fmt: on

GOLDEN_HASHES: list[tuple[int, str | bytes | int, int, str]] = [
    (42, "", 0xA5E65C45C93A1CA0, "train"),
    (42, "a", 0xCBB76A5610E39F6B, "train"),
    (42, "user-0", 0xBB8AFFCC7F7041CE, "train"),
    (42, "héllo", 0x5A54B638E44DC9B9, "train"),
    (42, "漢字", 0x084D6D18D14A0B55, "train"),
    (42, "x" * 55, 0x31F7862AAF0F13BF, "train"),
    (42, "x" * 56, 0xE76FD1C0F6F2AFE5, "test"),
    (42, "z" * 200, 0x3E34553137A6A17D, "train"),
    (0, "user-0", 0xE93E1825711854C1, "test"),
    (-1, "user-0", 0x2D9E00E158CADAA3, "train"),
    (2**63 - 1, "user-0", 0x6A81FDB333E5881E, "train"),
    (-(2**63), "user-0", 0x41B5617FA3A3724E, "train"),
    (42, 0, 0x7E20A5A2C0DA28A8, "train"),
    (42, 1, 0xCED4470E10B784C2, "val"),
    (42, -1, 0x1639DC841900B7B5, "train"),
    (42, 2**63 - 1, 0x115D2C23C4B01686, "train"),
    (42, -(2**63), 0x235B36C0068BB135, "train"),
    (42, "7", 0x51200CFB04C4532E, "train"),
    (42, 7, 0xB0553C97E3B345F0, "train"),
    (42, b"7", 0xECA0E3E331E1EE6F, "test"),
    (42, b"\x00\xff", 0xD373D3D8CB8E41A1, "val"),
]


def test_golden_labels_for_string_ids() -> None:
    ids = [f"user-{i}" for i in range(30)]
    assert _reference_labels(ids, 42, F) == GOLDEN_USERS_SEED_42
    assert _as_list(assign(ids, seed=42, fractions=F)) == GOLDEN_USERS_SEED_42


def test_golden_labels_for_integer_ids() -> None:
    ids = list(range(30))
    assert _reference_labels(ids, 7, F) == GOLDEN_INTS_SEED_7
    assert _as_list(assign(ids, seed=7, fractions=F)) == GOLDEN_INTS_SEED_7


@pytest.mark.parametrize(("seed", "id_", "u", "label"), GOLDEN_HASHES)
def test_golden_hashes(seed: int, id_: str | bytes | int, u: int, label: str) -> None:
    assert _reference_u(seed, id_) == u
    assert int(hash_ids([id_], seed)[0]) == u
    assert _as_list(assign([id_], seed, F)) == [label]


def test_golden_thresholds_are_exact_not_float_sums() -> None:
    bounds = thresholds(F)
    assert bounds == [0xCCCCCCCCCCCCD000, 0xE666666666666A00, 2**64]
    # The float sum 0.8 + 0.1 would give a different second bound; the spec forbids it.
    assert bounds[1] != math.floor((0.8 + 0.1) * 2**64)


def test_every_key_length_matches_blake3(monkeypatch: pytest.MonkeyPatch) -> None:
    """The vectorised one-block path and the long-key fallback both equal real BLAKE3.

    A tiny chunk size forces many chunks through the thread pool, so slicing, offsets and
    the reassembly order are exercised too.
    """
    monkeypatch.setattr(split_module, "_CHUNK", 97)
    rng = random.Random(3)
    alphabet = "abcXYZ09-_ \x00éü漢😀"
    ids = ["".join(rng.choice(alphabet) for _ in range(length % 81)) for length in range(2000)]
    ints = [rng.randint(-(2**63), 2**63 - 1) for _ in range(500)] + [0, -1, 2**63 - 1, -(2**63)]
    raw = [bytes(rng.randrange(256) for _ in range(length % 70)) for length in range(300)]
    for seed in (0, 42, -(2**63), 2**63 - 1):
        for values in (ids, ints, raw):
            expected = [_reference_u(seed, v) for v in values]
            assert hash_ids(values, seed).tolist() == expected
        expected = [_reference_u(seed, v) for v in ids]
        assert hash_ids(pa.array(ids, pa.large_string()), seed).tolist() == expected


@pytest.mark.parametrize(
    "ids",
    [[""], ["", ""], ["a"], ["ab", ""], ["abc"], ["", "abcd"], [b""], [0]],
    ids=repr,
)
def test_tiny_inputs_match_blake3(ids: list[Any]) -> None:
    """A few bytes of id data in total: the padding and shifted copies must still line up."""
    for seed in (0, 42):
        assert hash_ids(ids, seed).tolist() == [_reference_u(seed, v) for v in ids]


# --------------------------------------------------------------------------------------------
# Stability, proportions, groups


def test_existing_rows_never_move_when_rows_are_added_removed_or_reordered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Small chunks, so that the edits below also move rows across chunk boundaries.
    monkeypatch.setattr(split_module, "_CHUNK", 257)
    base = [f"item-{i}" for i in range(5000)]
    before = dict(zip(base, _as_list(assign(base, 11, F)), strict=True))
    rng = random.Random(5)
    shuffled = base[:]
    rng.shuffle(shuffled)
    variants = {
        "appended": base + [f"new-{i}" for i in range(3000)],
        "prepended": [f"new-{i}" for i in range(3000)] + base,
        "reordered": shuffled,
        "removed": [x for i, x in enumerate(base) if i % 3],
    }
    for name, ids in variants.items():
        after = dict(zip(ids, _as_list(assign(ids, 11, F)), strict=True))
        moved = [x for x in base if x in after and after[x] != before[x]]
        assert moved == [], name
    # Sanity: the labels are not constant, so "nothing moved" above means something.
    assert set(before.values()) == {"train", "val", "test"}


def test_seed_changes_the_assignment() -> None:
    ids = [f"item-{i}" for i in range(2000)]
    a, b = _as_list(assign(ids, 1, F)), _as_list(assign(ids, 2, F))
    changed = sum(x != y for x, y in zip(a, b, strict=True))
    # Independent splits disagree on 1 - (0.64 + 0.01 + 0.01) = 34 % of the rows.
    assert 0.25 * len(ids) < changed < 0.45 * len(ids)


@pytest.mark.parametrize("seed", [0, 42, -7])
def test_proportions_match_the_fractions_on_100k_ids(seed: int) -> None:
    n = 100_000
    fractions = {"train": 0.7, "val": 0.2, "test": 0.05, "holdout": 0.05}
    counts = Counter(_as_list(assign([f"row-{i}" for i in range(n)], seed, fractions)))
    assert set(counts) == set(fractions)
    for name, p in fractions.items():
        sigma = math.sqrt(n * p * (1 - p))
        assert abs(counts[name] - n * p) < 5 * sigma, (name, counts)


def test_integer_proportions_and_zero_fraction() -> None:
    n = 100_000
    labels = _as_list(assign(np.arange(n), 3, {"a": 0.5, "empty": 0.0, "b": 0.5}))
    counts = Counter(labels)
    assert counts["empty"] == 0
    assert abs(counts["a"] - n / 2) < 5 * math.sqrt(n / 4)


def test_single_split_takes_every_row() -> None:
    assert _as_list(assign(["a", "b", "c"], 1, {"all": 1.0})) == ["all"] * 3


def test_groups_keep_all_their_rows_in_one_split() -> None:
    n = 6000
    ids = [f"scan-{i}" for i in range(n)]
    group = [f"patient-{i // 7}" for i in range(n)]
    labels = _as_list(assign(ids, 9, F, group=group))
    by_group: dict[str, set[str]] = {}
    for g, label in zip(group, labels, strict=True):
        by_group.setdefault(g, set()).add(label)
    assert all(len(s) == 1 for s in by_group.values())
    # The label is the group id's own label, and groups do spread over all splits.
    assert labels == _reference_labels(group, 9, F)
    assert set(labels) == {"train", "val", "test"}


def test_groups_may_be_arrow_while_ids_are_a_list() -> None:
    ids = list(range(100))
    group = pa.chunked_array([pa.array([i // 10 for i in range(50)]), pa.array([5] * 50)])
    labels = _as_list(assign(ids, 4, F, group=group))
    assert labels == _reference_labels(group.to_pylist(), 4, F)


def test_group_length_and_nulls_are_checked() -> None:
    with pytest.raises(UsageError, match="one group id per row"):
        assign(["a", "b"], 1, F, group=["g"])
    with pytest.raises(UsageError, match="group ids contain a null at position 1"):
        assign(["a", "b"], 1, F, group=["g", None])
    with pytest.raises(UsageError, match="ids contain a null at position 0"):
        assign([None, "b"], 1, F, group=["g", "h"])


# --------------------------------------------------------------------------------------------
# Input and output types

STRINGS = [f"user-{i}" for i in range(300)] + ["", "héllo", "x" * 70]
INTS = [*range(-5, 295), 2**63 - 1, -(2**63)]


def _chunked(values: list[Any], kind: pa.DataType) -> pa.ChunkedArray:
    return pa.chunked_array([pa.array(values[:100], kind), pa.array(values[100:], kind)])


STRING_INPUTS = {
    "list": lambda: list(STRINGS),
    "tuple": lambda: tuple(STRINGS),
    "numpy-unicode": lambda: np.array(STRINGS),
    "numpy-object": lambda: np.array(STRINGS, dtype=object),
    "arrow-string": lambda: pa.array(STRINGS, pa.string()),
    "arrow-large-string": lambda: pa.array(STRINGS, pa.large_string()),
    "arrow-sliced": lambda: pa.array(["skip", *STRINGS], pa.string()).slice(1),
    "arrow-dictionary": lambda: pa.array(STRINGS).dictionary_encode(),
    "arrow-chunked": lambda: _chunked(STRINGS, pa.string()),
}
INT_INPUTS = {
    "list": lambda: list(INTS),
    "numpy-int64": lambda: np.array(INTS, dtype=np.int64),
    "arrow-int64": lambda: pa.array(INTS, pa.int64()),
    "arrow-chunked": lambda: _chunked(INTS, pa.int64()),
}


@pytest.mark.parametrize("make", STRING_INPUTS.values(), ids=STRING_INPUTS.keys())
def test_string_inputs(make: Any) -> None:
    ids = make()
    labels = assign(ids, 42, F)
    assert _as_list(labels) == _reference_labels(STRINGS, 42, F)
    _check_output_type(ids, labels)


@pytest.mark.parametrize("make", INT_INPUTS.values(), ids=INT_INPUTS.keys())
def test_integer_inputs(make: Any) -> None:
    ids = make()
    labels = assign(ids, 42, F)
    assert _as_list(labels) == _reference_labels(INTS, 42, F)
    _check_output_type(ids, labels)


def _check_output_type(ids: Any, labels: Any) -> None:
    assert len(labels) == len(ids)
    if isinstance(ids, pa.ChunkedArray):
        assert isinstance(labels, pa.ChunkedArray)
        assert [len(c) for c in labels.chunks] == [len(c) for c in ids.chunks]
        assert pa.types.is_dictionary(labels.type)
    elif isinstance(ids, pa.Array):
        assert isinstance(labels, pa.DictionaryArray)
        assert labels.dictionary.to_pylist() == list(F)
    else:
        assert isinstance(labels, np.ndarray)
        assert labels.dtype.kind == "U"


def test_integer_width_does_not_matter_but_type_does() -> None:
    small = list(range(120))
    expected = _as_list(assign(small, 5, F))
    for ids in (
        np.array(small, dtype=np.int32),
        np.array(small, dtype=np.uint16),
        pa.array(small, pa.int8()),
        pa.array(small, pa.uint64()),
    ):
        assert _as_list(assign(ids, 5, F)) == expected
    as_strings = _as_list(assign([str(i) for i in small], 5, F))
    assert as_strings != expected


def test_bytes_inputs() -> None:
    raw = [f"k{i}".encode() for i in range(200)]
    expected = _reference_labels(raw, 8, F)
    assert _as_list(assign(raw, 8, F)) == expected
    assert _as_list(assign(np.array(raw), 8, F)) == expected
    assert _as_list(assign(pa.array(raw, pa.binary()), 8, F)) == expected


def test_empty_input() -> None:
    assert len(assign([], 1, F)) == 0
    assert len(assign(pa.array([], pa.string()), 1, F)) == 0
    assert len(assign(pa.chunked_array([], pa.int64()), 1, F)) == 0


# --------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    ("ids", "position"),
    [
        (["a", None, "c"], 1),
        (np.array([1, 2, None], dtype=object), 2),
        (pa.array(["a", "b", None]), 2),
        (pa.chunked_array([pa.array(["a", "b"]), pa.array(["c", None])]), 3),
        ([None, None], 0),
    ],
)
def test_null_ids_are_refused(ids: Any, position: int) -> None:
    with pytest.raises(UsageError, match=f"null at position {position};"):
        assign(ids, 1, F)


def test_null_position_counts_across_list_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(split_module, "_CHUNK", 10)
    ids: list[str | None] = [f"x{i}" for i in range(50)]
    ids[37] = None
    with pytest.raises(UsageError, match="null at position 37;"):
        assign(ids, 1, F)


@pytest.mark.parametrize(
    "ids",
    [
        [1.5, 2.5],
        [True, False],
        ["a", 1],
        [2**64],
        np.array([1.0, 2.0]),
        np.array([[1, 2], [3, 4]]),
        np.array([2**63], dtype=np.uint64),
        pa.array([2**63], pa.uint64()),
        pa.array([1.0]),
        "abc",
        42,
    ],
    ids=lambda v: type(v).__name__,
)
def test_unsupported_ids_are_refused(ids: Any) -> None:
    with pytest.raises(UsageError):
        assign(ids, 1, F)


def test_mixed_types_across_list_chunks_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(split_module, "_CHUNK", 4)
    with pytest.raises(UsageError, match="mix types"):
        assign(["a", "b", "c", "d", "e", 6], 1, F)


@pytest.mark.parametrize("seed", ["42", 1.5, True, 2**63, -(2**63) - 1, None])
def test_bad_seeds_are_refused(seed: Any) -> None:
    with pytest.raises(UsageError, match="seed"):
        assign(["a"], seed, F)


def test_numpy_integer_seed_is_accepted() -> None:
    assert _as_list(assign(["user-0"], np.int64(42), F)) == ["train"]


@pytest.mark.parametrize(
    ("fractions", "hint"),
    [
        ({}, "give at least one"),
        ({"train": -0.1, "val": 1.1}, "between 0 and 1"),
        ({"train": 0.8, "val": 0.1}, "sum to 1"),
        ({"train": 0.8, "val": 0.3}, "sum to 1"),
        ({"": 1.0}, "name every split"),
        ({" train": 1.0}, "name every split"),
        ({"train": float("nan")}, "between 0 and 1"),
        ({"train": float("inf")}, "between 0 and 1"),
        ({"train": True}, "not a number"),
        ({"train": "1"}, "not a number"),
    ],
)
def test_bad_fractions_are_refused(fractions: dict[str, Any], hint: str) -> None:
    with pytest.raises(UsageError, match=hint) as caught:
        assign(["a"], 1, fractions)
    assert "\n" not in str(caught.value)


def test_fractions_within_tolerance_are_accepted() -> None:
    assert _as_list(assign(["a"], 1, {"a": 0.1, "b": 0.2, "c": 0.7})) in (["a"], ["b"], ["c"])
    assign(["a"], 1, {"a": 0.5, "b": 0.5 + 5e-10})
    with pytest.raises(UsageError, match="sum to 1"):
        assign(["a"], 1, {"a": 0.5, "b": 0.5 + 5e-9})


def test_parse_fractions_keeps_order_and_ignores_spaces() -> None:
    parsed = parse_fractions(" test = 0.1, val=0.1 ,train=0.8 ")
    assert list(parsed.items()) == [("test", 0.1), ("val", 0.1), ("train", 0.8)]


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("train=0.5,train=0.5", "given twice"),
        ("", "NAME=FRACTION"),
        ("train", "has no '='"),
        ("train=abc", "not a number"),
        ("=1", "name every split"),
        ("train=0.8,,test=0.2", "NAME=FRACTION"),
        ("train=0.8,val=0.1", "sum to 1"),
        ("train=-0.2,val=1.2", "between 0 and 1"),
    ],
)
def test_parse_fractions_errors(text: str, hint: str) -> None:
    with pytest.raises(UsageError, match=hint) as caught:
        parse_fractions(text)
    assert "\n" not in str(caught.value)


# --------------------------------------------------------------------------------------------
# Parquet and the CLI


@pytest.fixture
def parquet_file(tmp_path: Path) -> Path:
    n = 1000
    table = pa.table(
        {
            "id": [f"u{i}" for i in range(n)],
            "g": [i // 9 for i in range(n)],
            "value": np.arange(n, dtype=np.float64),
        }
    )
    path = tmp_path / "data.parquet"
    pq.write_table(table, path, row_group_size=300)
    return path


def _expected_counts(ids: list[Any], seed: int) -> dict[str, int]:
    counts = Counter(_reference_labels(ids, seed, F))
    return {name: counts[name] for name in F}


def test_split_parquet_counts_stream_over_batches(parquet_file: Path) -> None:
    ids = [f"u{i}" for i in range(1000)]
    counts = split_parquet(parquet_file, "id", 42, F, batch_size=128)
    assert counts == _expected_counts(ids, 42)


def test_split_parquet_writes_one_file_per_split(parquet_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "splits"
    counts = split_parquet(parquet_file, "id", 42, F, out_dir=out, batch_size=128)
    assert sorted(p.name for p in out.iterdir()) == ["test.parquet", "train.parquet", "val.parquet"]
    source = pq.read_table(parquet_file)
    seen: list[str] = []
    for name, count in counts.items():
        part = pq.read_table(out / f"{name}.parquet")
        assert part.num_rows == count
        assert part.schema.equals(source.schema)
        assert _reference_labels(part.column("id").to_pylist(), 42, F) == [name] * count
        seen += part.column("id").to_pylist()
    assert sorted(seen) == sorted(source.column("id").to_pylist())


def test_split_parquet_group_column(parquet_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "splits"
    split_parquet(parquet_file, "id", 3, F, out_dir=out, group_column="g", batch_size=100)
    homes: dict[int, set[str]] = {}
    for name in F:
        for g in pq.read_table(out / f"{name}.parquet").column("g").to_pylist():
            homes.setdefault(g, set()).add(name)
    assert len(homes) == 112
    assert all(len(s) == 1 for s in homes.values())


def test_split_parquet_errors(parquet_file: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="pick the id column from: id, g, value"):
        split_parquet(parquet_file, "nope", 1, F)
    with pytest.raises(UsageError, match="group column"):
        split_parquet(parquet_file, "id", 1, F, group_column="nope")
    with pytest.raises(PathError, match="no such file"):
        split_parquet(tmp_path / "missing.parquet", "id", 1, F)
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not parquet at all")
    with pytest.raises(PathError, match="not a readable Parquet file"):
        split_parquet(garbage, "id", 1, F)
    with pytest.raises(UsageError, match="cannot be a file name"):
        split_parquet(parquet_file, "id", 1, {"../evil": 1.0}, out_dir=tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_split_parquet_null_id_leaves_no_output(tmp_path: Path) -> None:
    path = tmp_path / "nulls.parquet"
    ids = [f"u{i}" for i in range(500)]
    pq.write_table(pa.table({"id": [*ids[:321], None, *ids[322:]]}), path)
    out = tmp_path / "splits"
    with pytest.raises(UsageError, match="null at position 321"):
        split_parquet(path, "id", 1, F, out_dir=out, batch_size=100)
    assert list(out.iterdir()) == []


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """A stand-in for the real cas app, so that ``split`` is a subcommand."""

    register(app)
    return app


def test_cli_prints_counts_as_json(parquet_file: Path) -> None:
    result = CliRunner().invoke(
        _app(),
        ["split", str(parquet_file), "--id-column", "id", "--seed", "42", "--json"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["counts"] == _expected_counts([f"u{i}" for i in range(1000)], 42)
    assert report["rows"] == 1000
    assert report["outputs"] is None


def test_cli_prints_a_table(parquet_file: Path) -> None:
    args = ["split", str(parquet_file), "--id-column", "id", "--seed", "-5"]
    result = CliRunner().invoke(_app(), [*args, "--fractions", "a=0.5,b=0.5"])
    assert result.exit_code == 0, result.output
    counts = Counter(_reference_labels([f"u{i}" for i in range(1000)], -5, {"a": 0.5, "b": 0.5}))
    for name in ("a", "b"):
        line = next(x for x in result.stdout.splitlines() if f" {name} " in x)
        assert str(counts[name]) in line
    assert "1000" in result.stdout


def test_cli_out_writes_files(parquet_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["split", str(parquet_file), "--id-column", "id", "--seed", "7", "--group-column"]
    result = CliRunner().invoke(_app(), [*args, "g", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    groups = [i // 9 for i in range(1000)]
    assert report["counts"] == _expected_counts(groups, 7)
    for name, count in report["counts"].items():
        assert report["outputs"][name] == str(out / f"{name}.parquet")
        assert pq.ParquetFile(out / f"{name}.parquet").metadata.num_rows == count


def test_cli_errors_are_cas_errors(parquet_file: Path) -> None:
    args = ["split", str(parquet_file), "--id-column", "id", "--seed", "1"]
    result = CliRunner().invoke(_app(), [*args, "--fractions", "train=0.9"])
    assert isinstance(result.exception, CasError)
    assert "sum to 1" in str(result.exception)


def test_cli_module_imports_no_numeric_stack() -> None:
    """Registering ``split`` must not make every other cas command import numpy/pyarrow."""
    code = "import sys, cas.cli.split; print('cas.split' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
