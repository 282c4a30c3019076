"""cas: content-addressed, Git-integrated data versioning for machine learning.

Git pins the code; cas pins the data. The public Python API (docs/api.md):

- ``cas.Repo.open(path)`` / ``cas.Repo.init(path)``: a repository, with a method per command
  (``add``, ``status``, ``checkout``, ``push``, ``pull``, ``runs``, ...);
- ``cas.open(path, rev)`` and ``cas.read_bytes(path, rev)``: one tracked file at a revision;
- the errors (``cas.CasError`` and its subclasses, each with its exit code);
- the submodules ``cas.split``, ``cas.torch`` and ``cas.fs`` (``CASFileSystem``, ``cas://``).

Inside a command started by ``cas run`` (no-ops outside one; see docs/runs.md):
``cas.seed_everything``, ``cas.log_metric``, ``cas.log_metrics``, ``cas.current_run`` and, in a
notebook, ``with cas.start_run(name=...)``.

``import cas`` loads only the standard library and cas.runs.api: every other name is imported
on first use (PEP 562), so a training script that only logs metrics, and the ``cas`` command,
start as fast as before.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from cas.runs.api import current_run, log_metric, log_metrics, seed_everything, start_run

if TYPE_CHECKING:
    from cas import errors as errors
    from cas import fs as fs
    from cas import split as split
    from cas import torch as torch
    from cas.errors import (
        CasError,
        ConflictError,
        CorruptObjectError,
        DependencyError,
        FileChangedError,
        IntegrityError,
        LockedError,
        ManifestError,
        NotARepoError,
        ObjectMissingError,
        PathError,
        PointerError,
        RerunFailedError,
        StorageError,
        UsageError,
    )
    from cas.fs import open_tracked as open
    from cas.fs import read_bytes
    from cas.repo import Repo

__version__ = "0.1.0"

__all__ = [
    "CasError",
    "ConflictError",
    "CorruptObjectError",
    "DependencyError",
    "FileChangedError",
    "IntegrityError",
    "LockedError",
    "ManifestError",
    "NotARepoError",
    "ObjectMissingError",
    "PathError",
    "PointerError",
    "Repo",
    "RerunFailedError",
    "StorageError",
    "UsageError",
    "current_run",
    "log_metric",
    "log_metrics",
    "open",
    "read_bytes",
    "seed_everything",
    "start_run",
]
#: name -> (module, attribute in it), imported on first access.
_LAZY: dict[str, tuple[str, str]] = {
    "Repo": ("cas.repo", "Repo"),
    "open": ("cas.fs", "open_tracked"),
    "read_bytes": ("cas.fs", "read_bytes"),
    **{name: ("cas.errors", name) for name in __all__ if name.endswith("Error")},
}
#: Submodules reachable as attributes (``cas.split.assign``) without an import statement. Not
#: in ``__all__``: ``from cas import *`` must not load torch.
_SUBMODULES = ("errors", "fs", "split", "torch")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attribute = _LAZY[name]
        value = getattr(importlib.import_module(module), attribute)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"cas.{name}")
    else:
        raise AttributeError(f"module 'cas' has no attribute {name!r}")
    globals()[name] = value  # the next access is a plain lookup
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *_SUBMODULES})
