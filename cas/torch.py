"""PyTorch datasets over tracked data, read straight from the local object store.

    from cas.torch import CASDataset, CASTableDataset, CASIterableDataset
    ds = CASDataset("data.cas", rev="v2", split="train", seed=42,
                    fractions={"train": 0.9, "test": 0.1})
    path, data = ds[0]
    rows = CASTableDataset("snapshots/orders.cas", columns=["id", "amount"], id_column="id",
                           split="val", seed=42, fractions={"train": 0.9, "val": 0.1})
    stream = CASIterableDataset("corpus.cas", shuffle=True, seed=0)   # shards by worker, rank

Nothing is checked out: items are rebuilt from verified chunks (missing ones are fetched from
the default remote on demand) and checked against the file's size and BLAKE3; a corpus's files
(``kind corpus``) are read from their location and checked the same way before they are
returned. Splits are :mod:`cas.split`'s seeded, id-based assignment, so a
file never changes split when others are added. Every dataset has a ``fingerprint`` (manifest
id, resolved commit, split seed and fractions) for the training run to log.

torch is an optional extra. The dataset classes must subclass torch's ``Dataset`` and
``IterableDataset`` for ``DataLoader`` to treat them right, so this module imports torch when it
is imported (nothing else in cas imports it); without torch it still imports, and constructing a
dataset raises the ``missing_extra`` error naming ``pip install 'cas-data[torch]'``.

DataLoader workers (fork or spawn) each reopen the repository: see :class:`cas.fs.RepoView`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from cas.errors import UsageError, missing_extra
from cas.fs import CASFileSystem, RepoView
from cas.ops.compare import expected_rows
from cas.repo import Target
from cas.runs.api import note_read
from cas.split import assign_codes

try:
    import torch.distributed
    from torch.utils.data import Dataset, IterableDataset, get_worker_info

    _TORCH_MISSING = False
except ModuleNotFoundError as err:
    if (err.name or "").partition(".")[0] != "torch":
        raise
    _TORCH_MISSING = True
    Dataset = IterableDataset = object  # type: ignore[assignment,misc]  # see _require_torch

__all__ = ["CASDataset", "CASIterableDataset", "CASTableDataset"]


def _require_torch() -> None:
    if _TORCH_MISSING:
        raise missing_extra("torch", "torch")


def _target(
    view: RepoView, path: str | os.PathLike[str], repo: str | os.PathLike[str] | None
) -> Target:
    """The target ``path`` names. Paths are relative to the current directory, like the CLI's,
    unless ``repo`` is given: then to that repository's root."""
    return view.repo.target(path, view.root if repo is not None else None)


def _in_split(
    ids: Any, split: str | None, seed: int | None, fractions: Mapping[str, float] | None
) -> np.ndarray | None:
    """Which ids fall in ``split`` (None: no split asked for). Uses ``assign_codes``, the
    label-free core of ``cas.split.assign``: the same assignment, without a label per row."""
    if split is None:
        if fractions is not None:
            raise UsageError("fractions= given without split=; name the split to read")
        return None
    if seed is None or fractions is None:
        raise UsageError(f"split={split!r} needs seed= and fractions= to assign ids to splits")
    if split not in fractions:
        raise UsageError(f"split {split!r} is not one of the fractions: {', '.join(fractions)}")
    names, codes = assign_codes(ids, seed, fractions)
    return codes == names.index(split)


def _fingerprint(
    view: RepoView,
    target: Target,
    manifest: str,
    split: str | None,
    seed: int | None,
    fractions: Mapping[str, float] | None,
    items: int,
    **extra: Any,
) -> dict[str, Any]:
    """Exactly which data a dataset yields, as JSON-serialisable values for a run's log."""
    return {
        "pointer": target.pointer,
        "manifest": manifest,
        "rev": view.rev,
        "split": split,
        "seed": seed,
        "fractions": dict(fractions) if fractions is not None else None,
        "items": items,
        **extra,
    }


class _Files:
    """The files of one pointer at one revision, restricted to a split: what the map-style and
    the iterable file datasets share. A file's split id is its path inside the target."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        rev: str | None,
        repo: str | os.PathLike[str] | None,
        split: str | None,
        seed: int | None,
        fractions: Mapping[str, float] | None,
    ) -> None:
        _require_torch()
        self.view = RepoView(repo, rev)
        self.target = _target(self.view, path, repo)
        self.ptr = self.view.pointer(self.target)
        rows = sorted(expected_rows(self.view.repo, self.target, self.ptr).items())
        keep = _in_split([p for p, _ in rows], split, seed, fractions)
        chosen = range(len(rows)) if keep is None else np.flatnonzero(keep).tolist()
        self.paths = [rows[i][0] for i in chosen]
        self.rows = [rows[i][1] for i in chosen]
        self.fingerprint = _fingerprint(
            self.view, self.target, self.ptr.manifest, split, seed, fractions, len(self.paths)
        )
        note_read(self.fingerprint)  # inside 'cas run': what the run read

    def __len__(self) -> int:
        return len(self.paths)

    def item(self, index: int) -> tuple[str, bytes]:
        path = self.paths[index]
        return path, self.view.read_file(self.target, self.ptr, path, self.rows[index])


class CASDataset(Dataset):
    """Map-style dataset of a tracked folder's (or file's) files, in path order.

    ``ds[i]`` is ``(path inside the target, bytes)``, or ``transform(path, bytes)`` when a
    transform is given (decode there: it runs in the DataLoader worker)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        rev: str | None = None,
        split: str | None = None,
        seed: int | None = None,
        fractions: Mapping[str, float] | None = None,
        transform: Callable[[str, bytes], Any] | None = None,
        repo: str | os.PathLike[str] | None = None,
    ) -> None:
        self._files = _Files(path, rev, repo, split, seed, fractions)
        self.transform = transform

    @property
    def fingerprint(self) -> dict[str, Any]:
        return self._files.fingerprint

    @property
    def paths(self) -> list[str]:
        return self._files.paths

    def __len__(self) -> int:
        return len(self._files)

    def __getitem__(self, index: int) -> Any:
        path, data = self._files.item(index)
        return (path, data) if self.transform is None else self.transform(path, data)


class CASIterableDataset(IterableDataset):
    """Stream of a tracked folder's files, split across DataLoader workers and distributed
    ranks with no overlap and no gaps: item ``k`` of the epoch's order goes to shard
    ``k % (world_size * num_workers)``, shard ``rank * num_workers + worker``.

    The rank and world size come from ``rank=``/``world_size=``, else from ``torch.distributed``
    when it is initialised, else 0 and 1. With ``shuffle`` the order is a permutation seeded by
    ``(seed, epoch)``: every rank computes the same one, which is what keeps the shards
    disjoint, so ``seed`` is required. ``set_epoch`` changes it; call it before each epoch's
    iterator is made (DataLoader workers get a copy of the dataset when they start)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        rev: str | None = None,
        split: str | None = None,
        seed: int | None = None,
        fractions: Mapping[str, float] | None = None,
        shuffle: bool = False,
        transform: Callable[[str, bytes], Any] | None = None,
        repo: str | os.PathLike[str] | None = None,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        if shuffle and seed is None:
            raise UsageError("shuffle=True needs seed= so every worker and rank shuffles alike")
        if (rank is None) != (world_size is None):
            raise UsageError("pass rank= and world_size= together, or neither")
        if world_size is not None and rank is not None and not 0 <= rank < world_size:
            raise UsageError(f"rank={rank} is not in 0 .. world_size-1 ({world_size - 1})")
        self._files = _Files(path, rev, repo, split, seed, fractions)
        self.seed = seed
        self.shuffle = shuffle
        self.transform = transform
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    @property
    def fingerprint(self) -> dict[str, Any]:
        return {**self._files.fingerprint, "shuffle": self.shuffle}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _shard(self) -> tuple[int, int]:
        """(this shard, number of shards) over ranks x DataLoader workers."""
        if self.rank is not None and self.world_size is not None:
            rank, world = self.rank, self.world_size
        elif torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        else:
            rank, world = 0, 1
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        return rank * workers + worker, world * workers

    def __iter__(self) -> Iterator[Any]:
        n = len(self._files)
        order = (
            np.random.default_rng([self.seed, self.epoch]).permutation(n)
            if self.shuffle
            else np.arange(n)
        )
        shard, shards = self._shard()
        for index in order[shard::shards].tolist():
            path, data = self._files.item(index)
            yield (path, data) if self.transform is None else self.transform(path, data)


class CASTableDataset(Dataset):
    """Rows of a tracked Parquet file, or of every ``.parquet`` file (in path order) of a
    tracked folder such as a snapshot folder. ``ds[i]`` is a dict of column -> value, or
    ``transform(row)``.

    The files are read through ``cas://`` (:class:`cas.fs.CASFileSystem`), so pyarrow reads
    only the column chunks of ``columns``. A row's split id is its ``id_column`` value; that
    column is read for the split even when ``columns`` leaves it out of the items."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        columns: list[str] | None = None,
        id_column: str | None = None,
        split: str | None = None,
        seed: int | None = None,
        fractions: Mapping[str, float] | None = None,
        rev: str | None = None,
        transform: Callable[[dict[str, Any]], Any] | None = None,
        repo: str | os.PathLike[str] | None = None,
    ) -> None:
        _require_torch()
        import pyarrow as pa
        import pyarrow.parquet as pq

        if split is not None and id_column is None:
            raise UsageError(f"split={split!r} needs id_column= (the column holding row ids)")
        fs = CASFileSystem(repo, rev)
        target = _target(fs.view, path, repo)
        ptr = fs.view.pointer(target)
        files = sorted(
            name
            for name in fs.view.files(target, ptr)
            if ptr.kind == "file" or name.endswith(".parquet")
        )
        if not files:
            raise UsageError(f"{target.pointer} tracks no .parquet file; name a Parquet dataset")
        wanted = columns
        if columns is not None and id_column is not None and id_column not in columns:
            wanted = [*columns, id_column]
        tables = []
        for name in files:
            with fs.open(name) as f:
                try:
                    tables.append(pq.read_table(f, columns=wanted))
                except (pa.ArrowException, OSError) as err:
                    raise UsageError(f"cannot read {name} as Parquet: {err}") from err
        try:
            table = pa.concat_tables(tables)
        except pa.ArrowInvalid as err:
            raise UsageError(
                f"the Parquet files of {target.pointer} differ in schema: {err}"
            ) from err
        if id_column is not None and id_column not in table.column_names:
            raise UsageError(
                f"id column {id_column!r} is not in {target.pointer}; "
                f"pick one of: {', '.join(table.column_names)}"
            )
        keep = _in_split(table.column(id_column) if id_column else None, split, seed, fractions)
        if keep is not None:
            table = table.filter(pa.array(keep))
        if columns is not None:
            table = table.select(columns)
        self._table = table.combine_chunks()
        self.transform = transform
        self.fingerprint = _fingerprint(
            fs.view,
            target,
            ptr.manifest,
            split,
            seed,
            fractions,
            table.num_rows,
            files=files,
            columns=table.column_names,
            id_column=id_column,
        )
        note_read(self.fingerprint)  # inside 'cas run': what the run read

    def __len__(self) -> int:
        return self._table.num_rows

    def __getitem__(self, index: int) -> Any:
        row = {
            name: col[index].as_py()
            for name, col in zip(self._table.column_names, self._table.columns)
        }
        return row if self.transform is None else self.transform(row)
