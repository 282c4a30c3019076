"""A throwaway PostgreSQL server for tests and benchmarks (a pytest plugin module).

The server is real (``initdb`` + ``pg_ctl`` from the Debian ``postgresql`` package) because the
snapshot feature's hard parts -- driver type mapping, authentication failures, a connection that
dies mid-stream -- only show up against the real thing. It listens on loopback only, on a free
port, with its socket and data in a private temp dir, and ``fsync=off`` since the data is
disposable. The plain functions (:func:`start_server`, :func:`stop_server`) are shared with
``bench/bench_snapshot.py``; the fixtures wrap them for pytest.

Authentication: the superuser ``postgres`` is trusted (so fixtures need no secret), every other
role must present a SCRAM password -- that is what lets a test provoke a *wrong password*.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

#: The role with a password, for tests that need password authentication to fail or succeed.
PASSWORD_ROLE = "cas_pw_user"
PASSWORD = "s3cr3t-Pa55word-xyzzy"

_HBA = """\
# written by tests/pg_server.py: trust the superuser, demand SCRAM from everyone else
local all postgres trust
local all all scram-sha-256
host all postgres 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
"""


@dataclass(frozen=True)
class PgServer:
    """A running server; ``url`` for the trusted superuser, ``password_url`` for the SCRAM role."""

    bindir: Path
    base: Path
    port: int
    host: str = "127.0.0.1"

    @property
    def datadir(self) -> Path:
        return self.base / "data"

    @property
    def logfile(self) -> Path:
        return self.base / "pg.log"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    def password_url(self, password: str = PASSWORD) -> str:
        return f"postgresql://{PASSWORD_ROLE}:{password}@{self.host}:{self.port}/postgres"


def find_bindir() -> Path | None:
    """Locate the server binaries: Debian keeps them off PATH under /usr/lib/postgresql/N/bin."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
    if candidates:
        return candidates[0].parent
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        bindir = Path(out.stdout.strip())
        if (bindir / "initdb").exists():
            return bindir
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def free_port() -> int:
    """A loopback port that was free a moment ago (good enough for a private test server)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_server_user(cmd: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root, so root drops to the ``postgres`` account."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(_as_server_user(cmd), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({proc.returncode}): {proc.stderr or proc.stdout}")


def start_server(bindir: Path | None = None, port: int | None = None) -> PgServer:
    """initdb a fresh cluster in a temp dir, start it and create the password role."""
    bindir = bindir or find_bindir()
    if bindir is None:
        raise FileNotFoundError("PostgreSQL server binaries (initdb, pg_ctl) not found")
    base = Path(tempfile.mkdtemp(prefix="cas-pg-"))
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(base, account.pw_uid, account.pw_gid)
    server = PgServer(bindir=bindir, base=base, port=port or free_port())
    try:
        _run(
            [str(bindir / "initdb"), "-D", str(server.datadir), "-U", "postgres", "-A", "trust",
             "-E", "UTF8", "--locale=C", "--no-sync", "-N"],
            "initdb",
        )  # fmt: skip
        (server.datadir / "pg_hba.conf").write_text(_HBA)
        options = (
            f"-c listen_addresses={server.host} -p {server.port} -k {base} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off"
        )
        _run(
            [str(bindir / "pg_ctl"), "-D", str(server.datadir), "-l", str(server.logfile),
             "-w", "-t", "30", "-o", options, "start"],
            "pg_ctl start",
        )  # fmt: skip
        psql(server, f"CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD '{PASSWORD}'")
        psql(server, f"GRANT pg_read_all_data TO {PASSWORD_ROLE}")
    except BaseException:
        stop_server(server)
        raise
    return server


def psql(server: PgServer, sql: str) -> str:
    """Run SQL as the superuser through psql (no driver needed to set up fixtures)."""
    proc = subprocess.run(
        [str(server.bindir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
         "-h", server.host, "-p", str(server.port), "-U", "postgres", "-d", "postgres",
         "-c", sql],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"psql failed: {proc.stderr.strip()}")
    return proc.stdout


def stop_server(server: PgServer) -> None:
    """Stop immediately (the data is disposable) and remove the cluster."""
    if (server.datadir / "postmaster.pid").exists():
        subprocess.run(
            _as_server_user(
                [str(server.bindir / "pg_ctl"), "-D", str(server.datadir), "-m", "immediate",
                 "-w", "stop"]
            ),
            capture_output=True, check=False,
        )  # fmt: skip
    shutil.rmtree(server.base, ignore_errors=True)


@contextlib.contextmanager
def running_server() -> Iterator[PgServer]:
    """Context-manager form for scripts (the benchmark)."""
    server = start_server()
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One server per test session: initdb costs about a second, so it is shared."""
    bindir = find_bindir()
    if bindir is None:
        from tests.conftest import require_service

        require_service("PostgreSQL", "initdb/pg_ctl not found (apt-get install postgresql)")
    with running_server() as server:
        yield server


@pytest.fixture(scope="session")
def pg_url(pg_server: PgServer) -> str:
    """The trusted superuser's URL (no password in it)."""
    return pg_server.url
