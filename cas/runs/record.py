"""The run record format (docs/format.md, "Run record"): canonical JSON, content-addressed.

A record is encoded one way only (sorted keys, no spaces, UTF-8, no NaN), so the same record has
the same bytes and id everywhere. Blobs (small files a record names) live beside records.
"""

from __future__ import annotations

import json
import math
from typing import Any

from cas import hashing
from cas.errors import CorruptObjectError, ObjectMissingError, StorageError
from cas.store.local import LocalStore

FORMAT = "cas-run"
VERSION = 1
RUNS = "runs"
BLOBS = "blobs"


def canonical(obj: Any) -> bytes:
    """The one byte encoding of a JSON value: what ids and fingerprints hash. ASCII with
    escapes, so a file name that is not UTF-8 (held as surrogates, as ``os.fsdecode`` gives it)
    survives the round trip."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def fingerprint(obj: Any) -> str:
    return hashing.digest(canonical(obj)).hex()


def finite(value: float) -> float | str:
    """A metric value JSON can hold: NaN and infinities become their names ("nan", "inf")."""
    return value if math.isfinite(value) else str(value)


def run_key(run_id: str) -> str:
    return f"{RUNS}/{run_id[:2]}/{run_id}"


def blob_key(blob_id: str) -> str:
    return f"{BLOBS}/{blob_id[:2]}/{blob_id}"


def encode(record: dict[str, Any]) -> tuple[str, bytes]:
    data = canonical({**record, "format": FORMAT, "version": VERSION})
    return hashing.digest(data).hex(), data


def decode(data: bytes, run_id: str) -> dict[str, Any]:
    """A record's fields, after checking its bytes hash to ``run_id`` and its version."""
    if hashing.digest(data).hex() != run_id:
        raise CorruptObjectError(
            f"run record {run_id} does not hash to its id; 'cas fetch' it again"
        )
    try:
        record = json.loads(data)
    except ValueError:
        raise CorruptObjectError(f"run record {run_id} is not JSON") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CorruptObjectError(f"object {run_id} is not a run record")
    if record.get("version") != VERSION:
        raise CorruptObjectError(
            f"run record {run_id} has version {record.get('version')!r}; upgrade cas"
        )
    _check_shape(record, run_id)
    return record


# The fields readers rely on, and their types: a record fetched from a teammate's remote is input
# like any other, and one that lacks them must be refused by name, not crash a command.
_SHAPE: dict[str, tuple[type, ...]] = {
    "fingerprint": (dict,),
    "code": (dict,),
    "data": (dict,),
    "config": (dict,),
    "env": (dict,),
    "status": (str,),
    "metrics": (dict,),
    "outputs": (list,),
    "out": (list,),
}
# Scalars the catalog stores in its columns and ``cas runs`` prints (None: absent is fine).
_SCALARS: dict[str, tuple[type, ...]] = {
    "started": (str,),
    "name": (str, type(None)),
    "ended": (str, type(None)),
    "host": (str, type(None)),
    "reproduces": (str, type(None)),
    "reused": (str, type(None)),
}
_LISTS = {
    ("code", "files"),
    ("code", "deleted"),
    ("data", "pointers"),
    ("config", "argv"),
    ("config", "files"),
    ("env", "packages"),
}


def _check_shape(record: dict[str, Any], run_id: str) -> None:
    def bad(field: str) -> CorruptObjectError:
        return CorruptObjectError(f"run record {run_id} is malformed ({field}); refused")

    for key, types in (*_SHAPE.items(), *_SCALARS.items()):
        if not isinstance(record.get(key), types):
            raise bad(key)
    for section, key in _LISTS:
        if not isinstance(record[section].get(key), list):
            raise bad(f"{section}.{key}")
    fp = record["fingerprint"]
    if not all(
        isinstance(fp.get(k), str) and hashing.is_hex_id(fp[k])
        for k in ("code", "data", "config", "env", "inputs")
    ):
        raise bad("fingerprint")
    for item in record["code"]["files"] + record["config"]["files"]:
        if not (
            isinstance(item, dict)
            and isinstance(item.get("path"), str)
            and hashing.is_hex_id(str(item.get("blob")))
        ):
            raise bad("files")
    for item, name in [(p, "pointer") for p in record["data"]["pointers"]] + [
        (o, "path") for o in record["outputs"]
    ]:  # the pointer a run read, the path an output was added from: readers index by them
        if not (
            isinstance(item, dict)
            and isinstance(item.get("text"), str)
            and isinstance(item.get(name), str)
        ):
            raise bad("pointers" if name == "pointer" else "outputs")
    if not all(isinstance(a, str) for a in record["config"]["argv"]):
        raise bad("config.argv")


def put(local: LocalStore, record: dict[str, Any]) -> str:
    run_id, data = encode(record)
    local.put_bytes(run_key(run_id), data)
    return run_id


def get(local: LocalStore, run_id: str) -> dict[str, Any]:
    try:
        return decode(local.get(run_key(run_id)), run_id)
    except KeyError:
        raise ObjectMissingError(
            f"run record {run_id} is not in the local store; run 'cas fetch'"
        ) from None
    except OSError as err:
        raise StorageError(f"cannot read run record {run_id}: {err.strerror}") from err


def ids(local: LocalStore) -> list[str]:
    names = (k.rsplit("/", 1)[1] for k in local.list(RUNS + "/"))
    return [name for name in names if hashing.is_hex_id(name)]


def put_blob(local: LocalStore, data: bytes) -> str:
    blob_id = hashing.digest(data).hex()
    local.put_bytes(blob_key(blob_id), data)
    return blob_id


def get_blob(local: LocalStore, blob_id: str) -> bytes:
    try:
        data = local.get(blob_key(blob_id))
    except KeyError:
        raise ObjectMissingError(
            f"blob {blob_id} a run record names is not in the local store; run 'cas fetch'"
        ) from None
    if hashing.digest(data).hex() != blob_id:
        raise CorruptObjectError(f"blob {blob_id} does not hash to its id; 'cas fetch' it again")
    return data
