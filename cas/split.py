"""Seeded, ID-based dataset splits: a row's split is a pure function of (seed, id).

``docs/splits.md`` is the normative specification; this module is one implementation of it.
Because nothing but the seed and the id enters the hash, adding, removing or reordering rows
never moves an existing row to another split, and any other implementation of the spec (a SQL
UDF, a Rust loader, ...) agrees with this one row for row.

Speed: a Python loop over ``blake3.blake3(key).digest(8)`` costs ~0.4 us per id here, which is
4 s for 10 M ids on one core. Almost every key (seed + tag + id) fits in one 64-byte BLAKE3
block, and for such inputs BLAKE3 is a single call of its compression function, so that call
is vectorised over many ids at once with numpy uint32 arithmetic (``_compress_single_block``).
numpy releases the GIL inside its loops, so chunks run on a small thread pool. Keys longer than
one block take the ``blake3`` package per id; the tests check both paths against ``blake3``.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import math
import operator
import os
import re
import secrets
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from fractions import Fraction
from numbers import Real
from pathlib import Path
from typing import Any

import blake3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cas.errors import PathError, StorageError, UsageError

__all__ = [
    "TAG_BYTES",
    "TAG_INT",
    "TAG_STR",
    "assign",
    "assign_codes",
    "hash_ids",
    "key_bytes",
    "parse_fractions",
    "split_parquet",
    "thresholds",
]

# Type tags (docs/splits.md): the same characters as a string and as raw bytes, or the number 7
# and the string "7", are different ids and must not be forced into the same split.
TAG_STR = 0x01
TAG_INT = 0x02
TAG_BYTES = 0x03

TWO_64 = 1 << 64
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_SUM_TOLERANCE = 1e-9
_EXAMPLE = "train=0.8,val=0.1,test=0.1"

_BLOCK_LEN = 64
_PREFIX_LEN = 9  # 8 seed bytes + 1 tag byte
_MAX_FAST_ID = _BLOCK_LEN - _PREFIX_LEN  # ids up to 55 bytes hash as a single BLAKE3 block

# Large enough that numpy's per-call overhead (~1 us x ~1200 calls per chunk, with the GIL held
# between calls, so the two workers and the list conversion take turns) is amortised: measured on
# 10 M ids, 2.2-2.5 s at 1 << 18 against 2.5-3.2 s at 1 << 16 and 4.6 s at 1 << 14; a chunk's
# working set (~24 MB) times the window of chunks in flight keeps memory flat at ~100 MB.
_CHUNK = 1 << 18

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


# --------------------------------------------------------------------------------------------
# Fractions and thresholds


def parse_fractions(text: str) -> dict[str, float]:
    """Parse ``"train=0.8,val=0.1,test=0.1"``, keeping the order (it decides the buckets).

    Validation happens here as well as in :func:`assign` because a dict cannot hold the
    duplicate names a user can type, so this is the only place that can report them.
    """
    pairs: list[tuple[str, float]] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            raise UsageError(
                f"empty entry in split fractions {text!r}; write NAME=FRACTION pairs separated "
                f"by commas, e.g. {_EXAMPLE}"
            )
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep:
            raise UsageError(
                f"split entry {item!r} has no '='; write NAME=FRACTION, e.g. {_EXAMPLE}"
            )
        try:
            fraction = float(value)
        except ValueError:
            raise UsageError(
                f"split fraction {value!r} for {name!r} is not a number; "
                f"write NAME=FRACTION with a decimal fraction, e.g. {_EXAMPLE}"
            ) from None
        pairs.append((name, fraction))
    _validate(pairs)
    return dict(pairs)


def _validate(pairs: list[tuple[Any, Any]]) -> tuple[list[str], list[float]]:
    """Reject every fraction set whose buckets would be ambiguous or not what the user meant."""
    if not pairs:
        raise UsageError(f"no split fractions given; give at least one, e.g. {_EXAMPLE}")
    names: list[str] = []
    values: list[float] = []
    for name, value in pairs:
        if not isinstance(name, str) or not name or name != name.strip():
            raise UsageError(
                f"split name {name!r} is empty or not a plain string; name every split, "
                f"e.g. {_EXAMPLE}"
            )
        if name in names:
            raise UsageError(f"split name {name!r} is given twice; give each split once")
        if isinstance(value, bool) or not isinstance(value, Real):
            raise UsageError(
                f"split fraction for {name!r} is {value!r}, not a number; "
                f"use numbers between 0 and 1, e.g. {_EXAMPLE}"
            )
        fraction = float(value)
        if not math.isfinite(fraction) or fraction < 0:
            raise UsageError(
                f"split fraction for {name!r} is {value!r}; use numbers between 0 and 1 "
                f"that sum to 1, e.g. {_EXAMPLE}"
            )
        names.append(name)
        values.append(fraction)
    total = sum((Fraction(v) for v in values), Fraction(0))
    if abs(total - 1) > _SUM_TOLERANCE:
        raise UsageError(
            f"split fractions sum to {float(total):.12g}, not 1; adjust them so they sum to 1, "
            f"e.g. {_EXAMPLE}"
        )
    return names, values


def thresholds(fractions: Mapping[str, float]) -> list[int]:
    """The exact integer bucket bounds T_1..T_k of docs/splits.md (T_k is always 2**64).

    Exact rational arithmetic on the binary64 values makes the bounds identical in every
    implementation; a float cumulative sum would differ by an ulp between summation orders.
    """
    _, values = _validate(list(fractions.items()))
    return _thresholds(values)


def _thresholds(values: list[float]) -> list[int]:
    bounds: list[int] = []
    cumulative = Fraction(0)
    for value in values[:-1]:
        cumulative += Fraction(value)
        bounds.append(min(TWO_64, math.floor(cumulative * TWO_64)))
    bounds.append(TWO_64)
    return bounds


def _bucket(u: np.ndarray, bounds: list[int]) -> np.ndarray:
    """Bucket index = how many bounds are <= u; bounds equal to 2**64 can never count."""
    dtype = np.int8 if len(bounds) <= 127 else np.int32
    codes = np.zeros(len(u), dtype=dtype)
    for bound in bounds:
        if bound >= TWO_64:
            break
        codes += u >= np.uint64(bound)
    return codes


def _check_seed(seed: Any) -> int:
    """The seed is part of the hashed bytes, so it must have exactly one 8-byte encoding."""
    if isinstance(seed, bool):
        raise UsageError(f"split seed must be an integer, not {seed!r}; pass e.g. --seed 42")
    try:
        value = operator.index(seed)
    except TypeError:
        raise UsageError(
            f"split seed must be an integer, not {seed!r}; pass e.g. --seed 42"
        ) from None
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise UsageError(
            f"split seed {value} does not fit in a signed 64-bit integer; pick a smaller seed"
        )
    return value


# --------------------------------------------------------------------------------------------
# The key encoding and the reference hash


def key_bytes(id_: str | bytes | int, seed: int) -> bytes:
    """The exact bytes hashed for one id (docs/splits.md); the per-id reference path."""
    prefix = _check_seed(seed).to_bytes(8, "little", signed=True)
    if isinstance(id_, str):
        return prefix + bytes([TAG_STR]) + id_.encode("utf-8")
    if isinstance(id_, bytes | bytearray | memoryview):
        return prefix + bytes([TAG_BYTES]) + bytes(id_)
    try:
        if isinstance(id_, bool):
            raise TypeError
        value = operator.index(id_)
    except TypeError:
        raise UsageError(
            f"id {id_!r} is not a string, bytes or integer; use str or int ids"
        ) from None
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise UsageError(f"integer id {value} does not fit in a signed 64-bit integer")
    return prefix + bytes([TAG_INT]) + value.to_bytes(8, "little", signed=True)


def _hash_one(key: bytes) -> int:
    return int.from_bytes(blake3.blake3(key).digest(8), "little")


# --------------------------------------------------------------------------------------------
# Vectorised single-block BLAKE3

_IV = (
    0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A,
    0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19,
)  # fmt: skip
_MSG_PERMUTATION = (2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8)
_CHUNK_START, _CHUNK_END, _ROOT = 1, 2, 8


def _schedule() -> list[tuple[int, ...]]:
    rounds = [tuple(range(16))]
    for _ in range(6):
        rounds.append(tuple(rounds[-1][p] for p in _MSG_PERMUTATION))
    return rounds


_SCHEDULE = _schedule()


def _compress_single_block(
    words: list[np.ndarray | np.uint32 | None], block_len: np.ndarray
) -> np.ndarray:
    """First 8 output bytes of BLAKE3 for n one-block inputs, as little-endian uint64.

    ``words[i]`` is message word i of every input (a (n,) uint32 array, one uint32 shared by
    all inputs, or None when it is zero for all); ``block_len`` is each input's length
    (1..64). A one-block input is a single compression with counter 0 and flags
    CHUNK_START|CHUNK_END|ROOT, and output word i is v[i] ^ v[i+8]. Everything is in place
    because allocation would cost more than the arithmetic; zero words are skipped because
    short ids leave most of the block empty.
    """
    n = len(block_len)
    state = np.empty((16, n), dtype=np.uint32)
    state[:8] = np.array(_IV, dtype=np.uint32)[:, None]
    state[8:12] = np.array(_IV[:4], dtype=np.uint32)[:, None]
    state[12] = 0
    state[13] = 0
    state[14] = block_len
    state[15] = _CHUNK_START | _CHUNK_END | _ROOT
    tmp = np.empty(n, dtype=np.uint32)
    add, xor, shr, shl, bor = np.add, np.bitwise_xor, np.right_shift, np.left_shift, np.bitwise_or
    s = [state[i] for i in range(16)]

    def rotr(x: np.ndarray, k: int) -> None:
        shr(x, k, tmp)
        shl(x, 32 - k, x)
        bor(x, tmp, x)

    def g(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray, x: Any, y: Any) -> None:
        add(a, b, a)
        if x is not None:
            add(a, x, a)
        xor(d, a, d)
        rotr(d, 16)
        add(c, d, c)
        xor(b, c, b)
        rotr(b, 12)
        add(a, b, a)
        if y is not None:
            add(a, y, a)
        xor(d, a, d)
        rotr(d, 8)
        add(c, d, c)
        xor(b, c, b)
        rotr(b, 7)

    for order in _SCHEDULE:
        w = [words[i] for i in order]
        g(s[0], s[4], s[8], s[12], w[0], w[1])
        g(s[1], s[5], s[9], s[13], w[2], w[3])
        g(s[2], s[6], s[10], s[14], w[4], w[5])
        g(s[3], s[7], s[11], s[15], w[6], w[7])
        g(s[0], s[5], s[10], s[15], w[8], w[9])
        g(s[1], s[6], s[11], s[12], w[10], w[11])
        g(s[2], s[7], s[8], s[13], w[12], w[13])
        g(s[3], s[4], s[9], s[14], w[14], w[15])
    # Output words 0 and 1 are the digest's first 8 bytes; combine them arithmetically
    # rather than by a memory view so that the result does not depend on the CPU's byte order.
    xor(s[0], s[8], s[0])
    xor(s[1], s[9], s[1])
    u = s[1].astype(np.uint64)
    u <<= np.uint64(32)
    u |= s[0]
    return u


def _word_masks() -> np.ndarray:
    """masks[j, n]: which bytes of key word j belong to an id of n bytes (n capped at 64).

    Key byte 4j+b is id byte 4j+b-9, so it is kept when 0 <= 4j+b-9 < n; a table lookup per
    word is cheaper than computing the clip-and-shift for every row.
    """
    masks = np.zeros((16, _BLOCK_LEN + 1), dtype=np.uint32)
    for j in range(16):
        for n in range(_BLOCK_LEN + 1):
            for b in range(4):
                if 0 <= 4 * j + b - _PREFIX_LEN < n:
                    masks[j, n] |= 0xFF << (8 * b)
    return masks


_WORD_MASKS = _word_masks()


def _hash_keys(data: np.ndarray, offsets: np.ndarray, prefix: bytes) -> np.ndarray:
    """Hash prefix + data[offsets[i]:offsets[i+1]] for every i, as uint64 values u.

    The message words are gathered straight from the concatenated id bytes instead of
    building and transposing a (n, 64) byte matrix: word j of a key is the little-endian
    uint32 at the id's offset + 4j - 9, with the bytes outside the id masked off. Unaligned
    gathers are slow in numpy, so the bytes are laid out four times, shifted by 0..3, and
    every read becomes an aligned one from the copy that matches the id's offset mod 4.
    Keys longer than one block (ids over 55 bytes) are rehashed with the ``blake3`` package.
    """
    n = len(offsets) - 1
    lengths = np.diff(offsets)
    capped = np.minimum(lengths, _BLOCK_LEN)
    longest = min(int(capped.max()), _MAX_FAST_ID) if n else 0
    # Byte p of `padded` is id byte p - 1: one byte in front lets word 2 (tag + 3 id bytes)
    # start at offset - 1, and a block's worth behind keeps every read inside the array.
    size = 1 + len(data) + _BLOCK_LEN
    width = size // 4 + 1
    shifted = np.zeros((4, 4 * width), dtype=np.uint8)
    for s in range(4):
        # Row s holds padded[s:]; the bounds are clamped so that tiny inputs never produce a
        # negative (wrapping) slice end.
        lo, hi = max(0, 1 - s), max(0, 1 + len(data) - s)
        shifted[s, lo:hi] = data[lo + s - 1 : hi + s - 1]
    flat = shifted.view("<u4").astype(np.uint32, copy=False).reshape(-1)
    # Word j of row i is at padded byte p = offset + 4j - 8, i.e. flat[(p % 4) * width + p // 4];
    # 4j - 8 is a multiple of 4, so only the row part varies and j just shifts the start.
    starts = offsets[:-1]
    base = (starts & 3) * width + (starts >> 2)
    seed_words = np.frombuffer(prefix[:8], dtype="<u4").astype(np.uint32)
    words: list[np.ndarray | np.uint32 | None] = [seed_words[0], seed_words[1]]
    words += [None] * 14
    for j in range(2, (_PREFIX_LEN + longest - 1) // 4 + 1):
        word = flat[j - 2 :].take(base)
        word &= _WORD_MASKS[j].take(capped)
        if j == 2:
            word |= np.uint32(prefix[8])
        words[j] = word
    block_len = (capped + _PREFIX_LEN).clip(max=_BLOCK_LEN).astype(np.uint32)
    u = _compress_single_block(words, block_len)
    for row in np.flatnonzero(lengths > _MAX_FAST_ID).tolist():
        key = prefix + data[offsets[row] : offsets[row + 1]].tobytes()
        u[row] = _hash_one(key)
    return u


def _hash_int_chunk(values: pa.Array, prefix: bytes) -> np.ndarray:
    """Integer ids are 8 little-endian bytes each, so they reuse the byte-string path."""
    ints = values.to_numpy(zero_copy_only=False).astype("<i8", copy=False)
    offsets = np.arange(0, 8 * len(ints) + 1, 8, dtype=np.int64)
    return _hash_keys(ints.view(np.uint8), offsets, prefix)


def _hash_binary_chunk(values: pa.Array, prefix: bytes) -> np.ndarray:
    """String/binary ids, read straight from the Arrow offsets and data buffers (no copies
    into Python objects)."""
    n = len(values)
    large = pa.types.is_large_string(values.type) or pa.types.is_large_binary(values.type)
    _, offsets_buf, data_buf = values.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64 if large else np.int32)
    offsets = offsets[values.offset : values.offset + n + 1].astype(np.int64)
    start, end = int(offsets[0]), int(offsets[-1])
    if end > start:
        data = np.frombuffer(data_buf, dtype=np.uint8)[start:end]
    else:
        data = np.zeros(0, dtype=np.uint8)
    return _hash_keys(data, offsets - start, prefix)


# --------------------------------------------------------------------------------------------
# Normalising the many accepted input types to Arrow chunks


def _as_arrow_ids(values: pa.Array, what: str, base: int) -> tuple[pa.Array, int]:
    """Map an Arrow array to (string/binary/int64 array, tag), rejecting nulls and odd types."""
    if values.null_count:
        first = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
        raise UsageError(
            f"{what} contain a null at position {base + first}; every row needs one: "
            f"drop or fill the nulls before splitting"
        )
    kind = values.type
    if pa.types.is_dictionary(kind):
        return _as_arrow_ids(values.dictionary_decode(), what, base)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return values, TAG_STR
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return values, TAG_BYTES
    if hasattr(pa.types, "is_string_view") and pa.types.is_string_view(kind):
        return values.cast(pa.large_string()), TAG_STR
    if hasattr(pa.types, "is_binary_view") and pa.types.is_binary_view(kind):
        return values.cast(pa.large_binary()), TAG_BYTES
    if pa.types.is_fixed_size_binary(kind):
        return values.cast(pa.binary()), TAG_BYTES
    if pa.types.is_integer(kind):
        if pa.types.is_uint64(kind) and len(values):
            biggest = values.to_numpy(zero_copy_only=False).max()
            if biggest > _INT64_MAX:
                raise UsageError(
                    f"integer {what} go up to {biggest}, beyond a signed 64-bit integer; "
                    f"store such ids as strings"
                )
        return values.cast(pa.int64()), TAG_INT
    if pa.types.is_null(kind) and len(values) == 0:
        return pa.array([], pa.string()), TAG_STR
    raise UsageError(
        f"{what} have type {kind}; split ids must be strings, bytes or integers: "
        f"cast them to one of those"
    )


def _from_python(items: list[Any], kind: pa.DataType | None, what: str) -> pa.Array:
    try:
        return pa.array(items, type=kind)
    except OverflowError:
        raise UsageError(
            f"an integer in {what} does not fit in a signed 64-bit integer; "
            f"store such ids as strings"
        ) from None
    except (pa.ArrowException, TypeError, ValueError) as err:
        if kind is None:
            raise UsageError(
                f"{what} mix types or have an unsupported type ({err}); "
                f"use all strings or all integers"
            ) from None
        raise UsageError(
            f"{what} mix types: the first ones are {kind} but a later one is not; "
            f"use all strings or all integers"
        ) from None


def _arrow_chunks(ids: Any, what: str, offset: int = 0) -> Iterator[tuple[pa.Array, int]]:
    """Yield (normalised Arrow slice, tag) of at most _CHUNK rows; ``offset`` shifts positions.

    Python lists are converted one slice at a time, so that conversion (which holds the GIL)
    overlaps with hashing of earlier slices on the worker threads.
    """
    if isinstance(ids, pa.ChunkedArray):
        chunks: Iterable[pa.Array] = ids.chunks
        if ids.num_chunks > 1 and len(ids) < ids.num_chunks * 4096:
            chunks = [ids.combine_chunks()]  # many tiny chunks: one copy beats many calls
        base = offset
        for chunk in chunks:
            for lo in range(0, len(chunk), _CHUNK):
                part, tag = _as_arrow_ids(chunk.slice(lo, _CHUNK), what, base + lo)
                yield part, tag
            base += len(chunk)
        return
    if isinstance(ids, pa.Array):
        for lo in range(0, len(ids), _CHUNK):
            part, tag = _as_arrow_ids(ids.slice(lo, _CHUNK), what, offset + lo)
            yield part, tag
        return
    if isinstance(ids, np.ndarray):
        if ids.ndim != 1:
            raise UsageError(f"{what} must be one-dimensional, not shape {ids.shape}")
        if ids.dtype.kind in "iu":
            if ids.dtype.kind == "u" and len(ids) and ids.max() > _INT64_MAX:
                raise UsageError(
                    f"integer {what} go up to {ids.max()}, beyond a signed 64-bit integer; "
                    f"store such ids as strings"
                )
            as_int = ids.astype(np.int64, copy=False)
            for lo in range(0, len(ids), _CHUNK):
                yield pa.array(as_int[lo : lo + _CHUNK]), TAG_INT
            return
        if ids.dtype.kind in "US":
            for lo in range(0, len(ids), _CHUNK):
                part, tag = _as_arrow_ids(pa.array(ids[lo : lo + _CHUNK]), what, offset + lo)
                yield part, tag
            return
        if ids.dtype.kind != "O":
            raise UsageError(
                f"{what} have numpy dtype {ids.dtype}; split ids must be strings, bytes or "
                f"integers: cast them to one of those"
            )
    if isinstance(ids, str | bytes) or not hasattr(ids, "__len__"):
        raise UsageError(
            f"{what} must be a list, numpy array or pyarrow array, not {type(ids).__name__}"
        )
    items = ids if isinstance(ids, list) else list(ids)
    kind: pa.DataType | None = None
    for lo in range(0, len(items), _CHUNK):
        raw = _from_python(items[lo : lo + _CHUNK], kind, what)
        if pa.types.is_boolean(raw.type) or pa.types.is_floating(raw.type):
            raise UsageError(
                f"{what} are {raw.type} values; split ids must be strings, bytes or integers"
            )
        part, tag = _as_arrow_ids(raw, what, offset + lo)
        if kind is None and not pa.types.is_null(raw.type):
            kind = raw.type
        yield part, tag


def _hash_chunk(part: pa.Array, tag: int, seed_bytes: bytes) -> np.ndarray:
    prefix = seed_bytes + bytes([tag])
    if tag == TAG_INT:
        return _hash_int_chunk(part, prefix)
    return _hash_binary_chunk(part, prefix)


def _workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def hash_ids(ids: Any, seed: int, *, what: str = "ids", offset: int = 0) -> np.ndarray:
    """The uint64 hash value u of every id (docs/splits.md), in input order.

    Exposed so that callers can bucket the same hashes several ways, and so that the tests
    can compare the vectorised path with the per-id reference directly. ``what`` and
    ``offset`` only shape error messages (e.g. a column name and the batch's first row).
    """
    seed_bytes = _check_seed(seed).to_bytes(8, "little", signed=True)
    parts = _arrow_chunks(ids, what, offset)
    first = next(parts, None)
    if first is None:
        return np.zeros(0, dtype=np.uint64)
    second = next(parts, None)
    if second is None:
        return _hash_chunk(first[0], first[1], seed_bytes)
    workers = _workers()
    done: list[np.ndarray] = []
    pending: collections.deque[Future[np.ndarray]] = collections.deque()
    with ThreadPoolExecutor(workers, thread_name_prefix="cas-split") as pool:
        for part, tag in itertools.chain((first, second), parts):
            # A bounded window keeps the converted-but-unhashed chunks of a big Python list
            # from piling up in memory while the workers catch up.
            if len(pending) >= 2 * workers:
                done.append(pending.popleft().result())
            pending.append(pool.submit(_hash_chunk, part, tag, seed_bytes))
        done.extend(future.result() for future in pending)
    return np.concatenate(done)


# --------------------------------------------------------------------------------------------
# Public entry points


def _length(values: Any, what: str) -> int:
    try:
        return len(values)
    except TypeError:
        raise UsageError(
            f"{what} must be a list, numpy array or pyarrow array, not {type(values).__name__}"
        ) from None


def _first_null(values: Any) -> int | None:
    """Position of the first null, for the cases hash_ids does not see (ids beside a group)."""
    if isinstance(values, pa.Array | pa.ChunkedArray):
        if not values.null_count:
            return None
        return int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
    if isinstance(values, np.ndarray) and values.dtype.kind != "O":
        return None
    for position, item in enumerate(values):
        if item is None:
            return position
    return None


def _codes(
    ids: Any,
    seed: int,
    bounds: list[int],
    group: Any,
    what: str,
    group_what: str,
    offset: int = 0,
) -> np.ndarray:
    n = _length(ids, what)
    if group is None:
        return _bucket(hash_ids(ids, seed, what=what, offset=offset), bounds)
    if _length(group, group_what) != n:
        raise UsageError(
            f"{group_what} have {_length(group, group_what)} entries but {what} have {n}; "
            f"pass one group id per row"
        )
    null = _first_null(ids)
    if null is not None:
        raise UsageError(
            f"{what} contain a null at position {offset + null}; every row needs one: "
            f"drop or fill the nulls before splitting"
        )
    return _bucket(hash_ids(group, seed, what=group_what, offset=offset), bounds)


def assign_codes(
    ids: Any,
    seed: int,
    fractions: Mapping[str, float],
    *,
    group: Any = None,
) -> tuple[list[str], np.ndarray]:
    """(split names, int8/int32 code per row): the label-free core of :func:`assign`.

    With ``group`` the hash is of the group id, so all rows of a group share one split; the
    row ids are then only checked (length and nulls), because a null row id is still a data
    error the user wants to hear about.
    """
    names, values = _validate(list(fractions.items()))
    seed = _check_seed(seed)
    return names, _codes(ids, seed, _thresholds(values), group, "ids", "group ids")


def assign(
    ids: Any,
    seed: int,
    fractions: Mapping[str, float],
    *,
    group: Any = None,
) -> np.ndarray | pa.Array | pa.ChunkedArray:
    """The split name of every row, as a pure function of (seed, id) or (seed, group id).

    Returns a numpy unicode array for list/tuple/numpy input, and Arrow output for Arrow input
    (a dictionary array, chunked like the input for a ChunkedArray) so that it can be appended
    to the table it came from without a conversion.
    """
    names, codes = assign_codes(ids, seed, fractions, group=group)
    if not isinstance(ids, pa.Array | pa.ChunkedArray):
        return np.array(names)[codes]
    dictionary = pa.array(names, pa.string())
    index_type = pa.int8() if codes.dtype == np.int8 else pa.int32()
    if isinstance(ids, pa.Array):
        return pa.DictionaryArray.from_arrays(pa.array(codes, index_type), dictionary)
    pieces = []
    lo = 0
    for chunk in ids.chunks:
        indices = pa.array(codes[lo : lo + len(chunk)], index_type)
        pieces.append(pa.DictionaryArray.from_arrays(indices, dictionary))
        lo += len(chunk)
    return pa.chunked_array(pieces, pa.dictionary(index_type, pa.string()))


def split_parquet(
    path: str | os.PathLike[str],
    id_column: str,
    seed: int,
    fractions: Mapping[str, float],
    out_dir: str | os.PathLike[str] | None = None,
    group_column: str | None = None,
    *,
    batch_size: int = 1 << 16,
) -> dict[str, int]:
    """Count the rows per split of a Parquet file and, with ``out_dir``, write one file per split.

    Streams record batches so memory is bounded by ``batch_size`` rather than by the file.
    Each output is written under a temporary name and renamed into place only after every
    batch succeeded, so a failure never leaves a truncated ``train.parquet`` that looks whole.
    Every split gets a file, even an empty one, so downstream code can rely on all existing.
    """
    names, values = _validate(list(fractions.items()))
    bounds = _thresholds(values)
    seed = _check_seed(seed)
    if out_dir is not None:
        for name in names:
            if not _SAFE_NAME.fullmatch(name):
                raise UsageError(
                    f"split name {name!r} cannot be a file name; use letters, digits, '_', "
                    f"'-' and '.' (not first) when writing splits to a directory"
                )
    source = Path(path)
    if not source.is_file():
        raise PathError(f"{source}: no such file; check the path")
    try:
        parquet = pq.ParquetFile(source)
    except (pa.ArrowException, OSError) as err:
        raise PathError(
            f"{source} is not a readable Parquet file ({err}); pass a Parquet file"
        ) from err
    schema = parquet.schema_arrow
    for option, column in (("id column", id_column), ("group column", group_column)):
        if column is not None and column not in schema.names:
            raise UsageError(
                f"column {column!r} is not in {source}; pick the {option} from: "
                f"{', '.join(schema.names)}"
            )
    what = f"column {id_column!r} of {source}"
    group_what = f"column {group_column!r} of {source}"
    counts = dict.fromkeys(names, 0)

    def codes_of(batch: pa.RecordBatch, offset: int) -> np.ndarray:
        group = None if group_column is None else batch.column(group_column)
        return _codes(batch.column(id_column), seed, bounds, group, what, group_what, offset)

    if out_dir is None:
        columns = [id_column] if group_column is None else [id_column, group_column]
        offset = 0
        # Only the key columns are read, so bigger batches cost little memory and let
        # hash_ids spread each batch over its worker threads.
        for batch in _batches(parquet, source, columns, max(batch_size, 1 << 20)):
            codes = codes_of(batch, offset)
            for i, count in enumerate(np.bincount(codes, minlength=len(names)).tolist()):
                counts[names[i]] += count
            offset += batch.num_rows
        return counts

    target = Path(out_dir)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PathError(f"cannot create output directory {target} ({err}); pick another") from err
    temporaries: list[Path] = []
    writers: list[pq.ParquetWriter] = []
    try:
        for name in names:
            # A unique hidden name rather than mkstemp, whose 0600 mode would stick to the
            # renamed file; the writer creates it with the usual umask-derived mode.
            tmp = target / f".{name}.parquet.{os.getpid()}.{secrets.token_hex(6)}.tmp"
            temporaries.append(tmp)
            writers.append(pq.ParquetWriter(tmp, schema))
        offset = 0
        for batch in _batches(parquet, source, None, batch_size):
            codes = codes_of(batch, offset)
            for i, writer in enumerate(writers):
                mask = codes == i
                selected = int(np.count_nonzero(mask))
                if selected:
                    writer.write_batch(batch.filter(pa.array(mask)))
                    counts[names[i]] += selected
            offset += batch.num_rows
        for writer in writers:
            writer.close()
        for name, tmp in zip(names, temporaries, strict=True):
            os.replace(tmp, target / f"{name}.parquet")
    except OSError as err:
        raise StorageError(
            f"writing splits to {target} failed ({err}); check free space and permissions"
        ) from err
    finally:
        for writer in writers:
            with contextlib.suppress(Exception):
                writer.close()
        for tmp in temporaries:
            tmp.unlink(missing_ok=True)
    return counts


def _batches(
    parquet: pq.ParquetFile, source: Path, columns: list[str] | None, batch_size: int
) -> Iterator[pa.RecordBatch]:
    """Turn Arrow read errors mid-file into a CasError the CLI can print."""
    try:
        yield from parquet.iter_batches(batch_size=batch_size, columns=columns)
    except (pa.ArrowException, OSError) as err:
        raise PathError(f"reading {source} failed ({err}); check that the file is intact") from err
