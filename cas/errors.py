"""The exception tree: every failure a user can cause or meet, each with its exit code.

A ``CasError`` carries a one-line message that names the problem *and* the fix; the CLI prints
exactly that line (no traceback unless ``--verbose``) and exits with ``exit_code``.

    CasError (2)                      anything cas reports to a user
    +-- UsageError (2)                bad arguments, bad fractions, unknown remote, ...
    +-- NotARepoError (2)             not inside a Git repository / cas not initialised
    +-- PathError (2)                 path outside the repository, missing, unreadable, unsafe
    +-- PointerError (2)              a malformed pointer file (names file and line)
    +-- ManifestError (2)             a malformed or hostile manifest
    +-- ObjectMissingError (3)        an object the operation needs is in no store
    +-- CorruptObjectError (4)        an object whose bytes do not hash to its id
    +-- ConflictError (5)             the operation would destroy data the store does not hold
    +-- FileChangedError (6)          a file changed while it was being read
    +-- StorageError (7)              the store or a remote failed (disk full, permission, network)
    +-- LockedError (8)               another cas process holds a lock for too long
    +-- DependencyError (9)           an optional extra is not installed
    +-- RerunFailedError (10)         ``cas repro``: the rerun of a recorded command failed
"""

from __future__ import annotations


class CasError(Exception):
    """Base class: ``str(err)`` is the one-line message shown to the user."""

    exit_code = 2


class UsageError(CasError):
    exit_code = 2


class NotARepoError(CasError):
    exit_code = 2


class PathError(CasError):
    exit_code = 2


class PointerError(CasError):
    exit_code = 2


class ManifestError(CasError):
    exit_code = 2


class ObjectMissingError(CasError):
    exit_code = 3


class CorruptObjectError(CasError):
    exit_code = 4


class ConflictError(CasError):
    """Raised with the full list of paths at risk, so the user can save them or use --force."""

    exit_code = 5

    def __init__(self, message: str, paths: list[str] | None = None) -> None:
        super().__init__(message)
        self.paths = paths or []


class FileChangedError(CasError):
    exit_code = 6


class StorageError(CasError):
    exit_code = 7


class LockedError(CasError):
    exit_code = 8


class DependencyError(CasError):
    exit_code = 9


def missing_extra(module: str, extra: str) -> DependencyError:
    """The single message used wherever an optional dependency is imported lazily."""
    return DependencyError(
        f"the optional dependency '{module}' is not installed; "
        f"install it with: pip install 'cas-data[{extra}]'"
    )


class RerunFailedError(CasError):
    exit_code = 10
