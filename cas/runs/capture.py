"""Capture the four inputs of a run before it starts: code, data, config and environment.

Each ``capture_*`` returns the part of the record it covers; :func:`fingerprints` hashes them.
What is left out and why is in docs/runs.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import socket
import stat
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cas import hashing, pointer
from cas.errors import DependencyError, PathError, UsageError
from cas.runs.record import fingerprint, put_blob

if TYPE_CHECKING:
    from cas.repo import Repo

UNTRACKED_LIMIT = 10 * 1024 * 1024
REDACTED = "<redacted>"
# Environment variables that change results and hold no secret; extend with [runs] env.
ENV_ALLOW = (
    "PYTHONHASHSEED",
    "CUBLAS_WORKSPACE_CONFIG",
    "CUDA_VISIBLE_DEVICES",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "TF_DETERMINISTIC_OPS",
    "TF_CUDNN_DETERMINISTIC",
    "CUDA_LAUNCH_BLOCKING",
    "TOKENIZERS_PARALLELISM",
    "PYTORCH_CUDA_ALLOC_CONF",
    "CAS_SEED",
)
LOCKFILES = (
    "uv.lock",
    "poetry.lock",
    "Pipfile.lock",
    "environment.yml",
    "pixi.lock",
    "conda-lock.yml",
)
_SECRET_NAME = re.compile(
    r"passw(or)?d|passwd|token|secret|api[-_]?key|access[-_]?key|"
    r"private[-_]?key|credential|(^|[-_])key$",
    re.I,
)
_SECRET_VALUE = re.compile(
    r"AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY-----|gh[pousr]_[A-Za-z0-9]{30,}|"
    r"xox[abprs]-[A-Za-z0-9-]{10,}|sk-[A-Za-z0-9]{20,}|glpat-[A-Za-z0-9_-]{20}"
)


# -- code ------------------------------------------------------------------------------------
def _git(root: Path, *args: str) -> bytes:
    """Plain git, bytes out: paths with any legal byte survive (decoded with fsdecode)."""
    proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, check=False)
    if proc.returncode != 0:
        first = (proc.stderr.decode(errors="replace").strip().splitlines() or ["?"])[0]
        raise UsageError(f"git {args[0]} failed: {first}")
    return proc.stdout


def git_blob_id(data: bytes) -> str:
    """Git's id of a blob with these bytes: equal for a committed and an uncommitted copy, so
    committing an edit does not change the code fingerprint."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def excluded(path: str, exclude: Sequence[str]) -> bool:
    """Paths that are not code: data pointers and Git-ignore files (cas writes both), ``.cas/``,
    and the run's config files, metrics file and outputs."""
    name = path.rsplit("/", 1)[-1]
    if name.endswith(pointer.SUFFIX) or name == ".gitignore" or path.split("/", 1)[0] == ".cas":
        return True
    return any(path == e or path.startswith(e + "/") for e in exclude)


def _worktree_file(root: Path, rel: str) -> tuple[str, bytes] | None:
    """(git mode, bytes) of a worktree file; None when it is gone or not a file."""
    path = root / rel
    try:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            return "120000", os.fsencode(os.readlink(path))
        if not stat.S_ISREG(st.st_mode):
            return None
        return ("100755" if st.st_mode & 0o111 else "100644"), path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise PathError(f"cannot read {rel} to record it: {err.strerror}") from err


def capture_code(
    repo: Repo, exclude: Sequence[str], limit: int = UNTRACKED_LIMIT
) -> tuple[dict[str, Any], list[str]]:
    """The commit, its tree, and every uncommitted or untracked (not ignored) file, each stored
    as a blob; returns the record's ``code`` and warnings. The fingerprint covers the effective
    tree (path, mode, Git blob id of each file), so it depends on content alone."""
    root = repo.root
    tree: dict[str, tuple[str, str]] = {}
    found = repo.git.probe("rev-parse", "-q", "HEAD^{commit}", "HEAD^{tree}")
    head, tree_id = found.split() if found else (None, None)  # None: before the first commit
    if head:
        for entry in _git(root, "ls-tree", "-r", "-z", "--full-tree", "HEAD").split(b"\0"):
            if entry:
                info, _, name = entry.partition(b"\t")
                mode, _kind, sha = info.decode().split()
                tree[os.fsdecode(name)] = (mode, sha)
    status = _git(
        root,
        "status",
        "--porcelain=v1",
        "-z",
        "--untracked-files=all",
        "--no-renames",
        "--ignore-submodules=all",
    )
    files: list[dict[str, Any]] = []
    deleted: list[str] = []
    skipped: list[dict[str, Any]] = []
    warnings: list[str] = []
    for entry in status.split(b"\0"):
        if not entry:
            continue
        code, rel = entry[:2].decode(), os.fsdecode(entry[3:])
        if excluded(rel, exclude):
            continue
        found = _worktree_file(root, rel)
        if found is None:
            if rel in tree:
                deleted.append(rel)
                del tree[rel]
            continue
        mode, data = found
        if len(data) > limit:
            skipped.append({"path": rel, "size": len(data)})
            warnings.append(
                f"{rel} ({len(data)} bytes) is over the {limit}-byte limit for source files and "
                "is not recorded; 'cas add' it if it is data"
            )
            tree.pop(rel, None)
            continue
        sha = git_blob_id(data)
        tree[rel] = (mode, sha)
        files.append(
            {
                "path": rel,
                "mode": mode,
                "git": sha,
                "blob": put_blob(repo.local, data),
                "untracked": code == "??",
            }
        )
    effective = sorted([p, m, s] for p, (m, s) in tree.items() if not excluded(p, exclude))
    record = {
        "commit": head,
        "tree": tree_id,
        "files": sorted(files, key=lambda f: f["path"]),
        "deleted": sorted(deleted),
        "skipped": skipped,
        "fingerprint_of": fingerprint(effective),
    }
    return record, warnings


def is_dirty(code: dict[str, Any]) -> bool:
    return bool(code["files"] or code["deleted"] or code["skipped"])


# -- data ------------------------------------------------------------------------------------
def capture_data(
    repo: Repo, data_args: Sequence[str], outputs: Sequence[str], cwd: Path
) -> list[dict]:
    """Every pointer in the worktree (or those named by ``--data``, relative to ``cwd``),
    outputs left out: path, kind, and the manifest or version id it names."""
    targets = repo.targets(list(data_args), cwd=cwd)
    found = []
    for target in targets:
        if target.path in outputs:
            continue
        ptr = repo.read_pointer(target)
        found.append(
            {
                "pointer": target.pointer,
                "kind": ptr.kind,
                "manifest": ptr.manifest,
                "text": ptr.encode().decode("ascii"),
            }
        )
    return sorted(found, key=lambda d: d["pointer"])


# -- config ----------------------------------------------------------------------------------
def redact_argv(argv: Sequence[str]) -> list[str]:
    """The command line with the values of options named like a secret replaced:
    ``--token X``, ``--api-key=X``, ``PASSWORD=X``."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
            continue
        name, eq, _value = arg.partition("=")
        if eq and _SECRET_NAME.search(name.lstrip("-")):
            out.append(f"{name}={REDACTED}")
        elif arg.startswith("-") and _SECRET_NAME.search(arg.lstrip("-")):
            out.append(arg)
            hide_next = True
        elif _SECRET_VALUE.search(arg):
            out.append(REDACTED)
        else:
            out.append(arg)
    return out


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys (``optimizer.lr``); lists keep their JSON form."""
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(flatten(item, f"{prefix}{key}."))
        return flat
    return {prefix[:-1] or "value": value}


def parse_structured(data: bytes, rel: str) -> Any:
    """A JSON or YAML file's value (by suffix); None for other files."""
    suffix = rel.rsplit(".", 1)[-1].lower()
    try:
        if suffix == "json":
            return json.loads(data)
        if suffix in ("yaml", "yml"):
            try:
                import yaml
            except ImportError:
                raise DependencyError(
                    f"{rel} is YAML and PyYAML is not installed; pip install 'cas[runs]'"
                ) from None
            return yaml.safe_load(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise UsageError(f"{rel} is not valid {suffix.upper()}: {str(err)[:120]}") from None
    except Exception as err:  # yaml.YAMLError, without importing yaml to name it
        if type(err).__module__.startswith("yaml"):
            raise UsageError(f"{rel} is not valid YAML: {str(err).splitlines()[0]}") from None
        raise
    return None


def secret_in(keys: dict[str, Any], data: bytes) -> str | None:
    """What in a config file looks like a credential (a key name or a token pattern)."""
    for key, value in keys.items():
        last = key.rsplit(".", 1)[-1]
        if _SECRET_NAME.search(last) and value not in (None, "", False):
            return f"key {key!r}"
    match = _SECRET_VALUE.search(data.decode("utf-8", "replace"))
    return f"a value like {match.group(0)[:6]}..." if match else None


def capture_config(
    repo: Repo,
    argv: Sequence[str],
    config_files: Sequence[str],
    seed: int | None,
    cwd: str,
    allow_secrets: bool = False,
) -> dict[str, Any]:
    files = []
    for rel in config_files:
        try:
            data = (repo.root / rel).read_bytes()
        except OSError as err:
            raise PathError(f"cannot read config file {rel}: {err.strerror}") from err
        value = parse_structured(data, rel)
        keys = flatten(value) if isinstance(value, dict) else {}
        found = secret_in(keys, data)
        if found and not allow_secrets:
            raise UsageError(
                f"config file {rel} holds {found}, which looks like a credential; move it to an "
                "environment variable, or pass --allow-secrets to record the file anyway"
            )
        files.append({"path": rel, "blob": put_blob(repo.local, data), "keys": keys})
    return {
        "argv": redact_argv(argv),
        "cwd": cwd,
        "files": files,
        "seed": seed,
        "env": env_values(repo),
    }


def env_allow_list(repo: Repo) -> list[str]:
    extra = [n.strip() for n in (repo.config.get("runs", "env", "") or "").split(",")]
    for name in extra:
        if name and _SECRET_NAME.search(name):
            raise UsageError(
                f"[runs] env in .cas/config names {name}, which looks like a secret; "
                "cas never records one: remove it"
            )
    return sorted({*ENV_ALLOW, *(n for n in extra if n)})


def env_values(repo: Repo) -> dict[str, str]:
    """The allow-listed variables set in this process's environment (a repro sets it to the
    recorded one before capturing)."""
    return {name: os.environ[name] for name in env_allow_list(repo) if name in os.environ}


# -- environment -----------------------------------------------------------------------------
def interpreter(argv: Sequence[str]) -> str:
    """The Python the command runs: its first word when that is a Python, else cas's own."""
    if argv:
        first = shutil.which(argv[0]) or argv[0]
        if re.fullmatch(r"python[0-9.]*", Path(first).name):
            return first
    return sys.executable


def probe_python(executable: str) -> dict[str, Any]:
    """Version and installed distributions of an interpreter: read here when it is cas's own,
    else by running :mod:`cas.runs.probe` in it (one interpreter start, ~30 ms)."""
    from cas.runs import probe

    ours, theirs = Path(os.path.abspath(sys.executable)), Path(os.path.abspath(executable))
    # One bin folder is one environment (a venv's python is a symlink to the base one, so
    # realpath alone cannot tell two venvs apart); in it, the same name or the same binary.
    if ours.parent == theirs.parent and (ours == theirs or ours.resolve() == theirs.resolve()):
        return probe.describe()
    proc = subprocess.run([executable, probe.__file__], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"python": None, "implementation": None, "packages": []}
    return json.loads(proc.stdout)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpus() -> list[str]:
    """GPU model, driver and CUDA version from nvidia-smi, when there is one."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    proc = subprocess.run(
        [smi, "--query-gpu=name,driver_version", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        check=False,
        timeout=10,
    )
    return sorted(line.strip() for line in proc.stdout.splitlines() if line.strip())


def capture_env(repo: Repo, argv: Sequence[str], image_digest: str | None) -> dict[str, Any]:
    info = probe_python(interpreter(argv))
    lockfiles = {}
    for name in sorted(os.listdir(repo.root)):
        if name in LOCKFILES or re.fullmatch(r"requirements.*\.txt", name):
            with open(repo.root / name, "rb") as f:
                lockfiles[name] = hashing.digest(f.read()).hex()
    return {
        **info,
        "packages_hash": fingerprint(info["packages"]),
        "os": platform.system(),
        "arch": platform.machine(),
        "cpu": _cpu_model(),
        "gpu": _gpus(),
        "lockfiles": lockfiles,
        "image_digest": image_digest or os.environ.get("CAS_IMAGE_DIGEST"),
    }


def host() -> str:
    return socket.gethostname()


# -- fingerprints ----------------------------------------------------------------------------
def fingerprints(
    code: dict[str, Any], data: list[dict], config: dict[str, Any], env: dict[str, Any]
) -> dict[str, str]:
    """The four fingerprints and ``inputs``, their hash. ``env`` leaves out ``runtime`` (what
    the helpers report once the command runs: not known before it starts)."""
    argv = list(config["argv"])
    if argv and re.fullmatch(r"python[0-9.]*", Path(argv[0]).name):
        argv[0] = "python"  # which Python it is belongs to the environment fingerprint
    parts = {
        "code": code["fingerprint_of"],
        "data": fingerprint(data),
        "config": fingerprint(
            {k: v for k, v in config.items() if k not in ("files", "argv")}
            | {"argv": argv, "files": [[f["path"], f["blob"]] for f in config["files"]]}
        ),
        "env": fingerprint({k: v for k, v in env.items() if k != "runtime"}),
    }
    parts["inputs"] = fingerprint(parts)
    return parts
