"""The exception tree: every failure a user can cause or meet, each with its exit code.

A ``CasError`` carries a one-line message that names the problem *and* the fix; the CLI prints
exactly that line (no traceback unless ``--verbose``) and exits with ``exit_code``.

    CasError (2)                      anything cas reports to a user
    +-- UsageError (2)                bad arguments, bad fractions, unknown remote, ...
    +-- NotARepoError (2)             not inside a Git repository / cas not initialised
    +-- PathError (2)                 path outside the repository, missing, unreadable, unsafe
    +-- PointerError (2)              a malformed pointer file (names file and line)
    +-- ObjectMissingError (3)        an object the operation needs is in no store
    +-- IntegrityError (4)            stored data that cannot be trusted (never a usage problem)
    |   +-- CorruptObjectError (4)    an object whose bytes do not hash to its id
    |   +-- ManifestError (4)         a manifest, version or segment that is malformed or hostile
    +-- ConflictError (5)             the operation would destroy data the store does not hold
    +-- FileChangedError (6)          a file changed while it was being read
    +-- StorageError (7)              the store or a remote failed (disk full, permission, network)
    +-- LockedError (8)               another cas process holds a lock for too long
    +-- DependencyError (9)           an optional extra is not installed
    +-- RerunFailedError (10)         ``cas repro``: the rerun of a recorded command failed

Exit code 4 means "the data cannot be trusted": a damaged object (restore it from a sound copy:
``cas fetch --repair``) and an intact object whose content is malformed or hostile (no copy
helps: the commit that names it pins bad data) both end with it, so a script tells an integrity
failure from a mistyped argument (2) by the code alone; the class tells the two apart.

Beside the message, an error carries what it is about where the raise site knows it:
``object_id`` (a chunk, pack, manifest, version or segment id, hex), ``path`` (a repository
path or URL) and ``remote`` (a remote's name); each is None when not known. ``cas --json``
puts the known ones in its error object (docs/cli.md).
"""

from __future__ import annotations


class CasError(Exception):
    """Base class: ``str(err)`` is the one-line message shown to the user."""

    exit_code = 2

    def __init__(
        self,
        message: str = "",
        *,
        object_id: str | None = None,
        path: str | None = None,
        remote: str | None = None,
    ) -> None:
        super().__init__(message)
        self.object_id = object_id
        self.path = path
        self.remote = remote


class UsageError(CasError):
    exit_code = 2


class NotARepoError(CasError):
    exit_code = 2


class PathError(CasError):
    exit_code = 2


class PointerError(CasError):
    exit_code = 2


class ObjectMissingError(CasError):
    exit_code = 3


class IntegrityError(CasError):
    """Stored bytes, or what they describe, cannot be trusted; never raised itself."""

    exit_code = 4


class CorruptObjectError(IntegrityError):
    exit_code = 4


class ManifestError(IntegrityError):
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
