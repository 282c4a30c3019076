"""Driver adapters: turn a source URL + SQL text into a stream of clean Arrow record batches.

Each adapter hides one driver's quirks so that :mod:`cas.snapshot` only ever sees plain Arrow
types that Parquet can store losslessly and that other tools can read:

* PostgreSQL goes through ADBC (``adbc-driver-postgresql``), which streams the binary COPY
  protocol straight into Arrow -- about 4x faster than row-by-row DB-API conversion. ADBC hands
  some types back as opaque extension types; they are mapped here (``numeric`` to decimal or
  string, ``interval`` to a struct) or refused with a hint to cast in SQL.
* SQLite uses the stdlib ``sqlite3`` module (ADBC's SQLite driver fails on the mixed-type columns
  SQLite allows). Column types come from the declared types plus the values actually seen; if a
  later batch does not fit the type chosen so far the stream raises :class:`SchemaRestart` and the
  caller runs the query again with the wider type, so the final schema depends only on the rows.
* DuckDB uses the ``duckdb`` package and its Arrow record batch reader.

The drivers are optional extras, imported only when a source of that kind is used. Every message
that can reach a user goes through :meth:`SourceURL.scrub`, so a password in the URL never leaks.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import re
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cas.errors import CasError, StorageError, UsageError, missing_extra

#: Query-string keys whose values are secrets (matched as substrings, case-insensitively).
_SECRET_KEYS = ("password", "passwd", "pwd", "secret", "token", "apikey", "api_key", "sslkey")

_SCHEMES = {
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "sqlite": "sqlite",
    "sqlite3": "sqlite",
    "duckdb": "duckdb",
}

#: Longest driver message kept in an error; the rest is noise that hides the first line.
_MAX_MESSAGE = 400


class SchemaRestart(Exception):
    """A batch did not fit the schema inferred so far: rerun the query (the wider type is kept).

    Only the SQLite adapter raises it: SQLite columns have no fixed type, and a Parquet file's
    schema is fixed once its first row group is written.
    """


# --------------------------------------------------------------------------------------------
# URLs and secrets


@dataclass(frozen=True)
class SourceURL:
    """A parsed ``--source``: what to connect to, how to show it, and what must never be shown."""

    raw: str
    kind: str  # "postgresql" | "sqlite" | "duckdb"
    redacted: str
    secrets: tuple[str, ...] = ()

    def scrub(self, text: str) -> str:
        """Remove every secret (and the raw URL) from ``text`` before it is shown or stored."""
        if self.raw and self.raw != self.redacted:
            text = text.replace(self.raw, self.redacted)
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text

    def __repr__(self) -> str:  # never print the raw URL, even in a traceback
        return f"SourceURL({self.redacted!r})"


def parse_source(url: str) -> SourceURL:
    """Parse and validate a source URL; the error never echoes the URL (it may hold a password)."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower().split("+", 1)[0]
    kind = _SCHEMES.get(scheme)
    if not parts.scheme or kind is None:
        shown = f" (got scheme '{scheme}')" if scheme and "@" not in scheme else ""
        raise UsageError(
            "--source must be a URL starting with postgresql://, sqlite:/// or duckdb://"
            f"{shown}; e.g. postgresql://user@host:5432/db"
        )
    secrets: list[str] = []
    netloc = parts.netloc
    if parts.password is not None:
        password = parts.password
        secrets += [password, unquote(password), quote(unquote(password), safe="")]
        userinfo, _, hostinfo = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}@{hostinfo}" if user else hostinfo
    query_items = parse_qsl(parts.query, keep_blank_values=True)
    kept = []
    for key, value in query_items:
        if any(word in key.lower() for word in _SECRET_KEYS):
            if value:
                secrets += [value, quote(value, safe="")]
        else:
            kept.append((key, value))
    # urlunsplit would turn sqlite:///app.db into sqlite:/app.db: rebuild it by hand
    redacted = f"{parts.scheme}://{netloc}{parts.path}"
    if kept:
        redacted += "?" + urlencode(kept)
    if parts.fragment:
        redacted += "#" + parts.fragment
    return SourceURL(
        raw=url, kind=kind, redacted=redacted, secrets=tuple(s for s in set(secrets) if s)
    )


def one_line(text: str) -> str:
    """Driver messages span lines (libpq adds hints and carets): the CLI shows exactly one."""
    text = re.sub(r"Query was: .*?(?=SQLSTATE|$)", "", text, flags=re.DOTALL)
    text = " ".join(text.split())
    if len(text) > _MAX_MESSAGE:
        text = text[: _MAX_MESSAGE - 3] + "..."
    return text


def _import_driver(module: str, extra: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise missing_extra(module.split(".", 1)[0], extra) from err


def _dist_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# --------------------------------------------------------------------------------------------
# Arrow type normalisation (shared by the ADBC and DuckDB adapters)

_INTERVAL_STRUCT = pa.struct(
    [("months", pa.int32()), ("days", pa.int32()), ("nanoseconds", pa.int64())]
)
_INTERVAL_DTYPE = np.dtype([("months", "<i4"), ("days", "<i4"), ("nanoseconds", "<i8")])


def _meta(field_: pa.Field, key: str) -> str | None:
    value = (field_.metadata or {}).get(key.encode())
    return value.decode() if value is not None else None


def _numeric_type(field_: pa.Field) -> pa.DataType:
    """PostgreSQL ``numeric(p,s)`` -> decimal128/256(p,s); unconstrained -> exact decimal text."""
    typmod_text = _meta(field_, "POSTGRESQL:typmod")
    typmod = int(typmod_text) if typmod_text and typmod_text.lstrip("-").isdigit() else -1
    if typmod < 4:
        return pa.string()
    precision = ((typmod - 4) >> 16) & 0xFFFF
    scale = (((typmod - 4) & 0x7FF) ^ 1024) - 1024  # PostgreSQL 15 allows a negative scale
    if not 0 <= scale <= precision or precision == 0:
        return pa.string()
    if precision <= 38:
        return pa.decimal128(precision, scale)
    if precision <= 76:
        return pa.decimal256(precision, scale)
    return pa.string()


def normalize_field(field_: pa.Field) -> pa.Field:
    """The Arrow type a driver's field is stored as (no metadata: it would vary by driver)."""
    return pa.field(field_.name, _normalize_type(field_), nullable=field_.nullable)


def _normalize_type(field_: pa.Field) -> pa.DataType:
    t = field_.type
    if isinstance(t, pa.BaseExtensionType):
        name = t.extension_name
        if name in ("arrow.json", "arrow.uuid"):
            return t  # Parquet has JSON and UUID logical types: kept as such
        if name == "arrow.opaque":
            type_name = getattr(t, "type_name", "?")
            if type_name == "numeric":
                return _numeric_type(field_)
            if pa.types.is_string(t.storage_type) or pa.types.is_large_string(t.storage_type):
                return pa.string()
            raise UsageError(
                f"column '{field_.name}' has type '{type_name}', which the driver returns only "
                f"in its binary wire format; cast it in the query, e.g. {field_.name}::text"
            )
        return _normalize_type(pa.field(field_.name, t.storage_type, metadata=field_.metadata))
    if pa.types.is_dictionary(t):
        return _normalize_type(pa.field(field_.name, t.value_type, metadata=field_.metadata))
    if t == pa.month_day_nano_interval():
        return _INTERVAL_STRUCT
    if pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_binary_view(t):
        return pa.binary()
    if pa.types.is_list(t) or pa.types.is_list_view(t):
        return pa.list_(normalize_field(t.value_field))
    if pa.types.is_large_list(t) or pa.types.is_large_list_view(t):
        return pa.large_list(normalize_field(t.value_field))
    if pa.types.is_fixed_size_list(t):
        return pa.list_(normalize_field(t.value_field), t.list_size)
    if pa.types.is_struct(t):
        return pa.struct([normalize_field(t.field(i)) for i in range(t.num_fields)])
    if pa.types.is_map(t):
        return pa.map_(normalize_field(t.key_field), normalize_field(t.item_field))
    return t


def convert_array(arr: pa.Array, dst: pa.DataType, column: str) -> pa.Array:
    """Convert ``arr`` to ``dst`` (from :func:`normalize_field`); a value that does not fit
    (e.g. NaN in a ``numeric(10,2)``) is a usage error naming the column and the fix."""
    src = arr.type
    if src == dst:
        return arr
    try:
        if isinstance(src, pa.BaseExtensionType):
            return convert_array(arr.storage, dst, column)
        if pa.types.is_dictionary(src):
            return convert_array(arr.dictionary_decode(), dst, column)
        if src == pa.month_day_nano_interval():
            return _interval_to_struct(arr)
        if pa.types.is_list_view(src) or pa.types.is_large_list_view(src):
            plain = (
                pa.list_(src.value_field)
                if pa.types.is_list_view(src)
                else pa.large_list(src.value_field)
            )
            return convert_array(pc.cast(arr, plain), dst, column)
        if (pa.types.is_list(src) and pa.types.is_list(dst)) or (
            pa.types.is_large_list(src) and pa.types.is_large_list(dst)
        ):
            values = convert_array(arr.values, dst.value_type, column)
            return type(arr).from_arrays(
                arr.offsets, values, type=dst, mask=arr.is_null() if arr.null_count else None
            )
        if pa.types.is_struct(src) and pa.types.is_struct(dst):
            children = [
                convert_array(arr.field(i), dst.field(i).type, column)
                for i in range(dst.num_fields)
            ]
            return pa.StructArray.from_arrays(
                children,
                fields=[dst.field(i) for i in range(dst.num_fields)],
                mask=arr.is_null() if arr.null_count else None,
            )
        return pc.cast(arr, dst)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as err:
        raise UsageError(
            f"column '{column}': a value does not fit {dst} ({one_line(str(err))}); "
            f"cast the column in the query, e.g. to text or float"
        ) from err


def _interval_to_struct(arr: pa.Array) -> pa.Array:
    """Parquet cannot store Arrow's month-day-nano interval: keep all three parts, losslessly."""
    data = arr.buffers()[1]
    parts = np.frombuffer(data, dtype=_INTERVAL_DTYPE)[arr.offset : arr.offset + len(arr)]
    children = [pa.array(parts[name].copy()) for name in _INTERVAL_DTYPE.names or ()]
    return pa.StructArray.from_arrays(
        children,
        fields=list(_INTERVAL_STRUCT),
        mask=arr.is_null() if arr.null_count else None,
    )


class _NormalizingStream:
    """Wrap a driver's RecordBatchReader: map types, drop metadata, translate driver errors."""

    def __init__(
        self,
        reader: pa.RecordBatchReader,
        translate: Callable[[BaseException], CasError],
        source_types: list[str | None],
    ) -> None:
        self._reader = reader
        self._translate = translate
        self.source_types = source_types
        self.schema = pa.schema([normalize_field(f) for f in reader.schema])
        self._identity = all(
            f.type == g.type for f, g in zip(reader.schema, self.schema, strict=True)
        )

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        while True:
            try:
                batch = self._reader.read_next_batch()
            except StopIteration:
                return
            except (pa.ArrowException, OSError) as err:
                raise self._translate(err) from err
            yield self._convert(batch)

    def _convert(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        if self._identity:
            columns = batch.columns
        else:
            columns = [
                convert_array(col, f.type, f.name)
                for col, f in zip(batch.columns, self.schema, strict=True)
            ]
        return pa.RecordBatch.from_arrays(columns, schema=self.schema)

    def close(self) -> None:
        self._reader.close()


# --------------------------------------------------------------------------------------------
# Connections


@dataclass
class ResultStream:
    """What :meth:`Connection.execute` returns: a fixed schema and the batches, in order.

    ``prefetch`` says the batches may be pulled on another thread (the driver decodes without
    holding the GIL, so fetching overlaps Parquet encoding); ``cancel`` interrupts a pull that
    is blocked in the driver, from any thread.
    """

    schema: pa.Schema
    batches: Iterator[pa.RecordBatch]
    source_types: list[str | None] = field(default_factory=list)
    prefetch: bool = False
    cancel: Callable[[], None] | None = None


class Connection(ABC):
    """One open connection to a source; use as a context manager so it is always closed."""

    driver: str
    driver_version: str
    server_version: str | None = None

    def __init__(self, source: SourceURL) -> None:
        self.source = source

    @abstractmethod
    def execute(self, query: str, batch_rows: int) -> ResultStream:
        """Start the query; batches are pulled lazily so memory stays bounded."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection (and any half-read result)."""

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(source: SourceURL) -> Connection:
    """Open a connection for ``source``; failures are scrubbed, one-line ``CasError`` s."""
    factories: dict[str, Callable[[SourceURL], Connection]] = {
        "postgresql": PostgresConnection,
        "sqlite": SqliteConnection,
        "duckdb": DuckDBConnection,
    }
    return factories[source.kind](source)


# ---------------------------------------------------------------------------- PostgreSQL (ADBC)


class PostgresConnection(Connection):
    """ADBC PostgreSQL: COPY BINARY streamed into Arrow batches (sized by the driver, ~16 MB)."""

    driver = "adbc-driver-postgresql"

    def __init__(self, source: SourceURL) -> None:
        super().__init__(source)
        self._dbapi = _import_driver("adbc_driver_postgresql.dbapi", "postgres")
        self._adbc = _import_driver("adbc_driver_manager", "postgres")
        self.driver_version = _dist_version("adbc-driver-postgresql")
        uri = source.raw.strip()
        scheme, rest = uri.split(":", 1)
        uri = "postgresql:" + rest if scheme.lower() != "postgresql" else uri
        self._cursor: Any = None
        try:
            self._conn = self._dbapi.connect(uri)
        except self._adbc.Error as err:
            raise StorageError(
                f"cannot connect to {source.redacted}: {self._message(err)}"
            ) from None
        try:
            info = self._conn.adbc_get_info()
            self.server_version = _pg_version(str(info.get("vendor_version", "")))
            with contextlib.closing(self._conn.cursor()) as cur:
                # The same query text must mean the same rows wherever it runs: timestamp
                # literals like '2026-11-01' are read in the session time zone.
                cur.execute("SET TIME ZONE 'UTC'")
                # A snapshot must never change its source (the transaction that runs the
                # query is also rolled back, never committed).
                cur.execute("SET default_transaction_read_only = on")
            self._conn.commit()  # the settings hold for the next transaction: the query's
        except self._adbc.Error as err:
            self._conn.close()
            raise StorageError(f"cannot set up {source.redacted}: {self._message(err)}") from None

    def _message(self, err: BaseException) -> str:
        text = re.sub(r"^\w+: ", "", str(err))
        for noise in (
            "[libpq] ",
            "Failed to connect: ",
            "Failed to prepare query: ",
            "Failed to execute query: ",
            "could not begin COPY: ",
            "Execution error [PGRES_FATAL_ERROR]: ",
        ):
            text = text.replace(noise, "")
        return self.source.scrub(one_line(text))

    def _translate(self, err: BaseException) -> CasError:
        """The server rejecting the query is a usage error; losing the server is a storage one."""
        message = self._message(err)
        adbc = self._adbc
        if "ReadRecord failed" in message and "record type" in message:
            return UsageError(
                f"query failed on {self.source.redacted}: the driver cannot read composite "
                f"(ROW/record) values ({message}); convert them in the query, e.g. to_jsonb(...)"
            )
        query_problem = isinstance(
            err, adbc.ProgrammingError | adbc.DataError | adbc.IntegrityError
        ) or ("ERROR:" in str(err) and "FATAL:" not in str(err))
        if query_problem:
            return UsageError(f"query failed on {self.source.redacted}: {message}")
        return StorageError(f"reading from {self.source.redacted} failed: {message}")

    def execute(self, query: str, batch_rows: int) -> ResultStream:
        # batch_rows is not used: the driver sizes batches in bytes, and the snapshot writer
        # re-chunks rows anyway, so the output does not depend on it.
        self._cursor = self._conn.cursor()
        try:
            self._cursor.execute(query)
            reader = self._cursor.fetch_record_batch()
        except self._adbc.Error as err:
            raise self._translate(err) from None
        except (pa.ArrowException, OSError) as err:
            raise self._translate(err) from None
        types = [_meta(f, "POSTGRESQL:type") for f in reader.schema]
        stream = _NormalizingStream(reader, self._translate, types)
        return ResultStream(
            stream.schema, iter(stream), types, prefetch=True, cancel=self._cursor.adbc_cancel
        )

    def close(self) -> None:
        if self._cursor is not None:
            self._cursor.close()
            self._cursor = None
        self._conn.close()


def _pg_version(vendor_version: str) -> str | None:
    """libpq reports 150018 for 15.18 (and 90624 for 9.6.24)."""
    if not vendor_version.isdigit():
        return vendor_version or None
    number = int(vendor_version)
    if number >= 100000:
        return f"{number // 10000}.{number % 10000}"
    return f"{number // 10000}.{number // 100 % 100}.{number % 100}"


# ----------------------------------------------------------------------------------- DuckDB


class DuckDBConnection(Connection):
    """``duckdb://`` is an in-memory database (for read_csv/read_parquet/...);
    ``duckdb:///path.duckdb`` opens a database file read-only."""

    driver = "duckdb"

    def __init__(self, source: SourceURL) -> None:
        super().__init__(source)
        self._duckdb = _import_driver("duckdb", "duckdb")
        self.driver_version = str(getattr(self._duckdb, "__version__", "unknown"))
        path = _path_of(source)
        try:
            if path is None:
                self._conn = self._duckdb.connect(":memory:")
            else:
                self._conn = self._duckdb.connect(str(path), read_only=True)
            self._conn.execute("SET TimeZone = 'UTC'")
        except self._duckdb.Error as err:
            raise StorageError(f"cannot open {source.redacted}: {self._message(err)}") from None

    def _message(self, err: BaseException) -> str:
        return self.source.scrub(one_line(str(err)))

    def _translate(self, err: BaseException) -> CasError:
        if isinstance(err, self._duckdb.IOException | self._duckdb.HTTPException):
            return StorageError(f"reading from {self.source.redacted} failed: {self._message(err)}")
        return UsageError(f"query failed on {self.source.redacted}: {self._message(err)}")

    def execute(self, query: str, batch_rows: int) -> ResultStream:
        try:
            relation = self._conn.sql(query)
            if relation is None:
                raise UsageError("the query returned no rows or columns: use a SELECT statement")
            types = [str(t) for t in relation.types]
            to_reader = getattr(relation, "to_arrow_reader", None) or relation.fetch_record_batch
            reader = to_reader(batch_rows)
        except self._duckdb.Error as err:
            raise self._translate(err) from None
        stream = _NormalizingStream(reader, self._translate, types)
        return ResultStream(
            stream.schema, iter(stream), types, prefetch=True, cancel=self._conn.interrupt
        )

    def close(self) -> None:
        self._conn.close()


def _path_of(source: SourceURL) -> Path | None:
    """``x:///rel.db`` is relative to the cwd, ``x:////abs.db`` absolute (SQLAlchemy's rule);
    ``x://`` and ``x:///:memory:`` mean in memory."""
    parts = urlsplit(source.raw.strip())
    if parts.netloc not in ("", "localhost"):
        raise UsageError(
            f"{source.kind} sources are local files: use {source.kind}:///relative/path or "
            f"{source.kind}:////absolute/path (got host '{parts.netloc}')"
        )
    path = unquote(parts.path)
    if path.startswith("/"):
        path = path[1:]
    if path in ("", ":memory:"):
        return None
    return Path(path)


# ----------------------------------------------------------------------------------- SQLite

# Kinds form a chain (null < bool < int < float < string); binary stands apart. A column's kind
# is the join of its declared type and every value seen, so it does not depend on batch sizes.
_CHAIN = ("null", "bool", "int", "float", "string")
_ARROW_OF = {
    "null": pa.null(),
    "bool": pa.bool_(),
    "int": pa.int64(),
    "float": pa.float64(),
    "string": pa.string(),
    "binary": pa.binary(),
}
_KIND_OF_PY = {int: "int", float: "float", str: "string", bytes: "binary", bool: "bool"}


def _declared_kind(decltype: str) -> str:
    """SQLite's affinity rules (datatype3.html 3.1), plus BOOL*, which SQLite treats as numeric."""
    t = decltype.upper()
    if "INT" in t:
        return "int"
    if "CHAR" in t or "CLOB" in t or "TEXT" in t:
        return "string"
    if "BLOB" in t:
        return "binary"
    if "REAL" in t or "FLOA" in t or "DOUB" in t:
        return "float"
    if "BOOL" in t:
        return "bool"
    return "null"  # no type or NUMERIC affinity (DATE, DECIMAL, ...): decided by the values


def _join(a: str, b: str, column: str) -> str:
    if a == b or b == "null":
        return a
    if a == "null":
        return b
    if "binary" in (a, b):
        raise UsageError(
            f"column '{column}' mixes BLOB values with other types; cast it in the query, "
            f"e.g. CAST({column} AS BLOB) or hex({column})"
        )
    return max(a, b, key=_CHAIN.index)


class SqliteConnection(Connection):
    """stdlib sqlite3, opened read-only: a snapshot must never change (or create) its source."""

    driver = "sqlite3"

    def __init__(self, source: SourceURL) -> None:
        super().__init__(source)
        self.driver_version = sqlite3.sqlite_version
        path = _path_of(source)
        self._floor: dict[str, dict[int, str]] = {}
        try:
            if path is None:
                self._conn = sqlite3.connect(":memory:")
            else:
                if not path.is_file():
                    raise StorageError(f"cannot open {source.redacted}: no such file '{path}'")
                uri = f"file:{quote(str(path.resolve()))}?mode=ro"
                self._conn = sqlite3.connect(uri, uri=True)
        except sqlite3.Error as err:
            raise StorageError(f"cannot open {source.redacted}: {one_line(str(err))}") from None

    def _declared(self, query: str, width: int) -> list[str]:
        """Declared column types, via a temp view: sqlite3 does not expose sqlite3_column_decltype.

        Only a plain SELECT can be a view; for anything else the values alone decide, which is
        why a failure here is expected and not an error.
        """
        body = query.strip().rstrip(";").strip()
        try:
            self._conn.execute(f"CREATE TEMP VIEW _cas_snapshot_probe AS {body}")
        except sqlite3.Error:
            return [""] * width
        try:
            rows = self._conn.execute("PRAGMA temp.table_info(_cas_snapshot_probe)").fetchall()
        finally:
            self._conn.execute("DROP VIEW temp._cas_snapshot_probe")
        types = [str(r[2] or "") for r in rows]
        return types if len(types) == width else [""] * width

    def execute(self, query: str, batch_rows: int) -> ResultStream:
        cursor = self._conn.cursor()
        try:
            cursor.execute(query)
        except sqlite3.Error as err:
            raise UsageError(
                f"query failed on {self.source.redacted}: {one_line(str(err))}"
            ) from None
        if cursor.description is None:
            raise UsageError("the query returned no rows or columns: use a SELECT statement")
        names = [d[0] for d in cursor.description]
        declared = self._declared(query, len(names))
        floor = self._floor.setdefault(query, {})
        kinds = [
            _join(_declared_kind(t), floor.get(i, "null"), names[i]) for i, t in enumerate(declared)
        ]
        first = self._fetch(cursor, batch_rows)
        if first:
            columns = list(zip(*first, strict=True))
            kinds = [
                _join(k, _kind_of(col, k, n), n)
                for k, col, n in zip(kinds, columns, names, strict=True)
            ]
        for i, kind in enumerate(kinds):
            floor[i] = kind
        schema = pa.schema([pa.field(n, _ARROW_OF[k]) for n, k in zip(names, kinds, strict=True)])
        return ResultStream(
            schema, self._batches(cursor, first, schema, kinds, batch_rows, floor), declared
        )

    def _fetch(self, cursor: sqlite3.Cursor, batch_rows: int) -> list[tuple[Any, ...]]:
        try:
            return cursor.fetchmany(batch_rows)
        except sqlite3.Error as err:
            raise UsageError(
                f"query failed on {self.source.redacted}: {one_line(str(err))}"
            ) from None

    def _batches(
        self,
        cursor: sqlite3.Cursor,
        rows: list[tuple[Any, ...]],
        schema: pa.Schema,
        kinds: list[str],
        batch_rows: int,
        floor: dict[int, str],
    ) -> Iterator[pa.RecordBatch]:
        try:
            if not rows:
                yield pa.RecordBatch.from_pylist([], schema=schema)
                return
            while rows:
                columns = list(zip(*rows, strict=True))
                arrays = []
                for i, (col, kind) in enumerate(zip(columns, kinds, strict=True)):
                    needed = _join(kind, _kind_of(col, kind, schema.names[i]), schema.names[i])
                    if needed != kind:
                        floor[i] = needed
                        raise SchemaRestart(schema.names[i])
                    arrays.append(_to_arrow(col, kind))
                yield pa.RecordBatch.from_arrays(arrays, schema=schema)
                rows = self._fetch(cursor, batch_rows)
        finally:
            cursor.close()

    def close(self) -> None:
        self._conn.close()


def _kind_of(values: tuple[Any, ...], current: str, column: str) -> str:
    """The join of the values' kinds; ints that are all 0/1 stay ``bool`` in a BOOL column."""
    types = set(map(type, values))
    types.discard(type(None))
    kind = "null"
    for t in types:
        value_kind = _KIND_OF_PY.get(t)
        if value_kind is None:
            raise UsageError(f"column '{column}': unsupported SQLite value type {t.__name__}")
        if value_kind == "int" and current == "bool" and set(values) <= {0, 1, None}:
            value_kind = "bool"
        kind = _join(kind, value_kind, column)
    return kind


def _to_arrow(values: tuple[Any, ...], kind: str) -> pa.Array:
    if kind == "null":
        return pa.nulls(len(values))
    if kind == "bool":
        return pa.array([None if v is None else bool(v) for v in values], pa.bool_())
    if kind == "string" and not all(v is None or type(v) is str for v in values):
        # a mixed column: numbers keep their SQLite text form (repr keeps floats round-trip)
        values = tuple(
            v if v is None or type(v) is str else (repr(v) if type(v) is float else str(v))
            for v in values
        )
    return pa.array(values, _ARROW_OF[kind])
