"""Remotes: named URLs in ``.cas/config`` (committed, so every clone knows them) with their
secrets only in ``.cas/config.local`` (git-ignored).

    [core]
    remote = origin                      # the default remote
    [remote "origin"]
    url = s3://ml-data/cas
    endpoint_url = http://127.0.0.1:8333 # MinIO, SeaweedFS, R2...; else $AWS_ENDPOINT_URL
    region = eu-west-1
    profile = ml                         # an AWS profile (~/.aws/credentials)

    # .cas/config.local
    [remote "origin"]
    access_key_id = ...
    secret_access_key = ...

Credentials otherwise come from wherever botocore looks (environment, profile, instance role). A
secret is refused in the committed file, never printed, and never part of an error message.

The committed file changes with the checkout, but a clone's remotes must not (Git keeps its own
remotes outside the history): every remote cas sees in the committed file, or adds, is also
recorded in ``<git common dir>/cas/remotes`` (per clone, shared by its linked worktrees, never
committed). A remote the checked-out ``.cas/config`` does not name (an older commit, from before
``cas remote add``) is read from that record; one it does name is taken from it whole, and the
record follows. ``cas remote remove`` removes it from both. See docs/remotes.md.
"""

from __future__ import annotations

import configparser
import os
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cas.config import CONFIG, LOCAL_CONFIG, Config
from cas.errors import UsageError
from cas.store.local import storage_error
from cas.workspace import sweep, temp_name

if TYPE_CHECKING:
    from cas.repo import Repo
    from cas.store.fsspec import FsspecStore

OPTIONS = {
    "url": "where the objects live (s3://bucket/prefix, file:///abs/path, gs://..., memory://)",
    "endpoint_url": "S3 endpoint for MinIO, SeaweedFS, R2... (default: $AWS_ENDPOINT_URL)",
    "region": "S3 region",
    "profile": "AWS profile to take credentials from",
}
SECRETS = {
    "access_key_id": "S3 access key id (only in .cas/config.local)",
    "secret_access_key": "S3 secret key (only in .cas/config.local)",
    "session_token": "S3 session token (only in .cas/config.local)",
}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_CONNECT_TIMEOUT = 10
_READ_TIMEOUT = 120


def section(name: str) -> str:
    return f'remote "{name}"'


@dataclass(frozen=True)
class Remote:
    name: str
    url: str
    options: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def protocol(self) -> str:
        return self.url.split("://", 1)[0]

    @property
    def endpoint(self) -> str:
        """Where requests go, for messages: the S3 endpoint, else the URL itself."""
        if self.protocol != "s3":
            return self.url
        return (
            self.options.get("endpoint_url")
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
            or "the AWS S3 endpoint"
        )

    def storage_options(self) -> dict[str, Any]:
        """fsspec options. Only S3 takes any; other schemes use their library's defaults."""
        if self.protocol != "s3":
            return {}
        client: dict[str, str] = {}
        if self.endpoint != "the AWS S3 endpoint":
            client["endpoint_url"] = self.endpoint
        if "region" in self.options:
            client["region_name"] = self.options["region"]
        opts: dict[str, Any] = {
            "client_kwargs": client,
            # Listings must be fresh: a cached one would hide what another clone just pushed.
            "use_listings_cache": False,
            # One retry inside botocore; cas.store.fsspec retries with backoff on top.
            "config_kwargs": {
                "connect_timeout": _CONNECT_TIMEOUT,
                "read_timeout": _READ_TIMEOUT,
                "retries": {"max_attempts": 2, "mode": "standard"},
                # No CRC32 header on each request (botocore's default since 1.36): SigV4's
                # signed SHA-256 of the payload already guards it (always over http; over https
                # once no checksum header is sent), cas verifies every object it reads, and
                # several S3-compatible stores reject the new headers. Computing it cost 1-3 s
                # of a push's ~12 s of client CPU, on the one event-loop thread all requests share.
                "request_checksum_calculation": "when_required",
                "response_checksum_validation": "when_required",
            },
        }
        if "profile" in self.options:
            opts["profile"] = self.options["profile"]
        if "access_key_id" in self.secrets:
            opts["key"] = self.secrets["access_key_id"]
            opts["secret"] = self.secrets.get("secret_access_key")
            opts["token"] = self.secrets.get("session_token")
        return opts

    def open(self) -> FsspecStore:
        from cas.store.fsspec import FsspecStore

        where = f"remote '{self.name}' ({self.url})"
        name = self.name
        return FsspecStore(
            self.url,
            self.storage_options(),
            label=where,
            remote=name,
            hints={
                "auth": f"wrong credentials or permission denied for {where}: set "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or "
                f"`cas remote modify {name} --local access_key_id ...`",
                "missing_root": f"bucket of {where} does not exist: create it or fix the URL "
                f"with `cas remote modify {name} url ...`",
                "unreachable": f"cannot reach {where} at {self.endpoint}: check endpoint_url "
                f"(`cas remote modify {name} endpoint_url ...`) / network",
            },
        )


def _parser(repo: Repo) -> configparser.ConfigParser:
    """Both files, read now: the Repo's Config may predate a `cas remote` change."""
    return Config(repo.cas_dir).parser


def _is_remote(sect: str) -> bool:
    return re.fullmatch(r'remote "(.+)"', sect) is not None


def record_path(repo: Repo) -> Path:
    """The clone's record of its remotes: in Git's common folder, so no checkout changes it
    and every linked worktree of the clone sees the same remotes."""
    return repo.git.common_dir / "cas" / "remotes"


def _read_ini(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except configparser.Error as err:  # first line only, not chained: it may quote a value
        first = str(err).splitlines()[0]
        raise UsageError(f"{path} is not valid config: {first}; fix or remove it") from None
    except UnicodeDecodeError as err:
        raise UsageError(f"{path} is not UTF-8 text (byte {err.start}); fix or remove it") from None
    return parser


def _write_ini(parser: configparser.ConfigParser, path: Path, mode: int | None = None) -> None:
    """Write atomically: a temp file beside ``path``, then a rename."""
    sweep(path.parent)
    tmp = Path(temp_name(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            parser.write(f)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise storage_error(err, f"cannot write {path}") from err


def _recorded(
    repo: Repo, committed: configparser.ConfigParser | None = None
) -> configparser.ConfigParser:
    """The clone's record, first brought up to date with the committed file (``committed``:
    already read): each remote section the committed file has is copied whole (so an option
    unset there is unset here), and its default remote too. Written only when it changed."""
    if committed is None:
        committed = _read_ini(repo.cas_dir / CONFIG)
    path = record_path(repo)
    record = _read_ini(path)
    changed = False
    for sect in committed.sections():
        if not _is_remote(sect):
            continue
        values = {k: v for k, v in committed.items(sect) if k not in SECRETS}
        if not record.has_section(sect) or dict(record.items(sect)) != values:
            record[sect] = values
            changed = True
    default = committed.get("core", "remote", fallback=None)
    if default is not None and record.get("core", "remote", fallback=None) != default:
        if not record.has_section("core"):
            record.add_section("core")
        record.set("core", "remote", default)
        changed = True
    if changed:
        _write_ini(record, path)
    return record


def _refuse_committed_secrets(repo: Repo) -> None:
    """A secret in the committed file reaches everyone who can read the repository (and one an
    attacker committed would send the victim's requests to the attacker's account)."""
    committed = configparser.ConfigParser(interpolation=None)
    try:
        committed.read(repo.cas_dir / CONFIG, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError):
        return  # Config() has reported it already
    for sect in committed.sections():
        for key in SECRETS:
            if committed.has_option(sect, key):
                raise UsageError(
                    f"{key} of [{sect}] is in the committed .cas/config: delete it there (rotate "
                    "it if it was pushed) and keep it in the git-ignored .cas/config.local "
                    f"(`cas remote modify NAME --local {key} ...`)"
                )


def check_endpoint(value: str) -> None:
    """An endpoint must be an http(s) URL with a host: botocore raises a bare ValueError on
    anything else, and the committed file may hold anything."""
    try:
        parts = urllib.parse.urlsplit(value)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        ok = False
    if not ok:
        raise UsageError(
            f"endpoint_url {value[:80]!r} is not an http(s) URL; fix it with "
            "`cas remote modify NAME endpoint_url https://host:port`"
        )


def remotes(repo: Repo) -> dict[str, Remote]:
    """Every remote: as the checked-out config (overlaid by config.local) gives it, else as
    the clone's record remembers it."""
    parser = _parser(repo)
    _refuse_committed_secrets(repo)
    committed = _read_ini(repo.cas_dir / CONFIG)
    record = _recorded(repo, committed)
    found = {}
    only_recorded = [sect for sect in record.sections() if not parser.has_section(sect)]
    for sect in [*parser.sections(), *only_recorded]:
        match = re.fullmatch(r'remote "(.+)"', sect)
        if not match:
            continue
        name = match.group(1)
        values = {} if committed.has_section(sect) else dict(record.items(sect))
        if parser.has_section(sect):
            values.update(parser.items(sect))
        url = values.pop("url", None)
        if not url:
            raise UsageError(
                f"remote '{name}' has no url in .cas/config; "
                f"run `cas remote modify {name} url s3://bucket/prefix`"
            )
        secrets = {k: values.pop(k) for k in list(values) if k in SECRETS}
        if "endpoint_url" in values:
            check_endpoint(values["endpoint_url"])
        found[name] = Remote(name, url, values, secrets)
    return found


def default_name(repo: Repo) -> str | None:
    """The checked-out config's default remote, else the one the clone recorded last."""
    name = _parser(repo).get("core", "remote", fallback=None)
    return name if name is not None else _recorded(repo).get("core", "remote", fallback=None)


def resolve(repo: Repo, name: str | None = None) -> Remote:
    """The named remote, else the default; one clear line when there is none."""
    known = remotes(repo)
    if name is None:
        name = default_name(repo)
        if name is None:
            if not known:
                raise UsageError(
                    "no remote configured; run `cas remote add origin s3://bucket/prefix`"
                )
            raise UsageError(
                "no default remote; name one with -r NAME or run `cas remote default NAME`"
            )
    if name not in known:
        raise UsageError(f"no remote named '{name}'; see `cas remote list`")
    return known[name]


def check_url(url: str) -> None:
    import fsspec

    protocol, sep, rest = url.partition("://")
    if not sep or not rest:
        raise UsageError(f"{url} is not a URL; use s3://bucket/prefix or file:///absolute/path")
    if protocol not in fsspec.available_protocols():
        raise UsageError(f"{url}: unknown scheme {protocol!r}; use s3://, file://, gs://, ...")
    if protocol == "file" and not rest.startswith("/"):
        raise UsageError(f"{url}: a file URL needs an absolute path (file:///mnt/nas/cas)")
    if protocol == "s3" and not 3 <= len(rest.split("/", 1)[0]) <= 63:
        raise UsageError(f"{url}: an S3 bucket name has 3 to 63 characters")


# -- editing the config files --------------------------------------------------------------------
def _edit(repo: Repo, local: bool, change: Any) -> None:
    """Apply ``change(parser)`` to one config file, write it atomically, stage the committed one.
    Only that file is read, so the overlay never leaks secrets into the committed file."""
    path: Path = repo.cas_dir / (LOCAL_CONFIG if local else CONFIG)
    parser = _read_ini(path)
    with repo.lock():
        change(parser)
        _write_ini(parser, path, 0o600 if local else None)  # config.local may hold secrets
        if not local:
            repo.git.stage([f"{repo.cas_dir.name}/{CONFIG}"])


def add(repo: Repo, name: str, url: str, make_default: bool = False) -> Remote:
    """Add a remote; the first one (or ``make_default``) becomes the default."""
    if not _NAME.fullmatch(name):
        raise UsageError(f"{name!r} is not a valid remote name (letters, digits, _ . -)")
    check_url(url)
    known = remotes(repo)
    if name in known:
        raise UsageError(f"remote '{name}' exists; change it with `cas remote modify {name} url`")
    default = make_default or not known or default_name(repo) is None

    def change(parser: configparser.ConfigParser) -> None:
        parser[section(name)] = {"url": url}
        if default:
            if not parser.has_section("core"):
                parser.add_section("core")
            parser.set("core", "remote", name)

    _edit(repo, False, change)
    return remotes(repo)[name]


def modify(repo: Repo, name: str, key: str, value: str | None, local: bool = False) -> None:
    """Set (or with ``value=None`` unset) one option; secrets only with ``local``."""
    if name not in remotes(repo):
        raise UsageError(f"no remote named '{name}'; see `cas remote list`")
    if key not in OPTIONS and key not in SECRETS:
        allowed = ", ".join([*OPTIONS, *SECRETS])
        raise UsageError(f"unknown remote option {key!r}; choose from {allowed}")
    if key in SECRETS and not local:
        raise UsageError(
            f"{key} is a secret: it goes to the git-ignored .cas/config.local; add --local"
        )
    if key == "url" and value is not None:
        check_url(value)
    if key == "endpoint_url" and value is not None:
        check_endpoint(value)
    if key == "url" and value is None:
        raise UsageError("a remote needs a url; use `cas remote remove` to drop the remote")

    recorded = _recorded(repo)

    def change(parser: configparser.ConfigParser) -> None:
        sect = section(name)
        if not parser.has_section(sect):
            # a remote only the clone's record knows (an older checkout): the committed file
            # gets all of it, not one option without a url
            known = not local and recorded.has_section(sect)
            parser[sect] = dict(recorded.items(sect)) if known else {}
        if value is None:
            parser.remove_option(sect, key)
            return
        parser.set(sect, key, value)

    _edit(repo, local, change)


def set_default(repo: Repo, name: str) -> None:
    if name not in remotes(repo):
        raise UsageError(f"no remote named '{name}'; see `cas remote list`")

    def change(parser: configparser.ConfigParser) -> None:
        if not parser.has_section("core"):
            parser.add_section("core")
        parser.set("core", "remote", name)

    _edit(repo, False, change)


def remove(repo: Repo, name: str) -> None:
    if name not in remotes(repo):
        raise UsageError(f"no remote named '{name}'; see `cas remote list`")
    was_default = default_name(repo) == name

    def change(parser: configparser.ConfigParser) -> None:
        parser.remove_section(section(name))
        if was_default and parser.has_section("core"):
            parser.remove_option("core", "remote")

    _edit(repo, False, change)
    if (repo.cas_dir / LOCAL_CONFIG).exists():
        _edit(repo, True, lambda parser: parser.remove_section(section(name)))
    with repo.lock():
        record = _read_ini(record_path(repo))
        record.remove_section(section(name))
        if record.get("core", "remote", fallback=None) == name:
            record.remove_option("core", "remote")
        _write_ini(record, record_path(repo))
