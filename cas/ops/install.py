"""``cas install-hooks`` / ``uninstall-hooks``: put the scripts of ``hooks/`` where Git runs them.

- The folder is Git's own answer (``git rev-parse --git-path hooks``), so ``core.hooksPath`` and
  linked worktrees are honoured.
- A hook of the user's that is not ours is kept as ``<name>.pre-cas`` and run first (its failure
  stops the hook, as it would have alone); uninstalling puts it back. Installing twice changes
  nothing.
- ``git config cas.python`` records this interpreter, so hooks find cas without an active venv.
- The merge driver is registered in ``.git/config`` (``merge.cas.*``) and ``*.cas merge=cas`` is
  added to ``.gitattributes`` (staged: every clone that installs the hooks then merges data).
  Uninstalling leaves ``.gitattributes`` alone: it is the team's file, and without the driver Git
  falls back to a plain text merge.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cas.errors import UsageError
from cas.store.local import storage_error
from cas.workspace import sweep, temp_name

if TYPE_CHECKING:
    from cas.repo import Repo

HOOKS = ("pre-push", "post-checkout", "post-merge", "pre-commit")
RUNNER = "cas-hook-run"
MARKER = "'cas install-hooks'"
CHAINED = ".pre-cas"
ATTRIBUTE = "*.cas merge=cas"
SCRIPTS = Path(__file__).resolve().parent.parent / "hookscripts"  # -> the repository's hooks/


@dataclass
class InstallResult:
    folder: str
    hooks: list[str] = field(default_factory=list)
    chained: list[str] = field(default_factory=list)


def hooks_folder(repo: Repo) -> Path:
    folder = Path(repo.git.run("rev-parse", "--git-path", "hooks").strip())
    return folder if folder.is_absolute() else repo.root / folder


def _ours(path: Path) -> bool:
    try:
        return MARKER in path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return False


def _write(dest: Path, data: bytes) -> None:
    sweep(dest.parent)
    tmp = Path(temp_name(dest))
    try:
        tmp.write_bytes(data)
        os.chmod(tmp, 0o755)
        os.replace(tmp, dest)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise storage_error(err, f"cannot write the hook {dest}") from err


def install(repo: Repo) -> InstallResult:
    folder = hooks_folder(repo)
    result = InstallResult(str(folder))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise storage_error(err, f"cannot create the hooks folder {folder}") from err
    _write(folder / RUNNER, (SCRIPTS / RUNNER).read_bytes())
    for name in HOOKS:
        dest, kept = folder / name, folder / (name + CHAINED)
        if (dest.exists() or dest.is_symlink()) and not _ours(dest):
            if kept.exists():
                raise UsageError(
                    f"{dest} is not cas's and {kept.name} exists too; merge them by hand, "
                    "remove one, and rerun"
                )
            os.replace(dest, kept)
            result.chained.append(name)
        _write(dest, (SCRIPTS / name).read_bytes())
        result.hooks.append(name)
    git = repo.git
    git.run("config", "cas.python", sys.executable)
    git.run("config", "merge.cas.name", "cas: 3-way merge of the datasets pointers name")
    driver = f"{shlex.quote(sys.executable)} -m cas hook merge %O %A %B %P"  # run by a shell
    git.run("config", "merge.cas.driver", driver)
    attributes = repo.root / ".gitattributes"
    text = attributes.read_text(encoding="utf-8") if attributes.exists() else ""
    if ATTRIBUTE not in text.splitlines():
        sep = "" if not text or text.endswith("\n") else "\n"
        attributes.write_text(f"{text}{sep}{ATTRIBUTE}\n", encoding="utf-8")
    git.stage([".gitattributes"])
    return result


def uninstall(repo: Repo) -> InstallResult:
    folder = hooks_folder(repo)
    result = InstallResult(str(folder))
    for name in HOOKS:
        dest, kept = folder / name, folder / (name + CHAINED)
        if _ours(dest):
            dest.unlink()
            result.hooks.append(name)
            if kept.exists():
                os.replace(kept, dest)
                result.chained.append(name)
    if _ours(folder / RUNNER):
        (folder / RUNNER).unlink()
    for key in ("cas.python", "merge.cas.name", "merge.cas.driver"):
        repo.git.probe("config", "--unset", key)  # absent already: nothing to undo
    return result
