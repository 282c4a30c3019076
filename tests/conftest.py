"""Shared fixtures. Service fixtures live in their own modules and are loaded as plugins."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.s3_server import S3Server

pytest_plugins = ["tests.pg_server", "tests.s3_server"]


def require_service(what: str, why: str) -> None:
    """Skip locally when a service is unavailable, but fail in CI (CAS_REQUIRE_SERVICES=1)."""
    message = f"{what} is unavailable: {why}"
    if os.environ.get("CAS_REQUIRE_SERVICES") == "1":
        pytest.fail(message + " (CAS_REQUIRE_SERVICES=1: services are required)")
    pytest.skip(message)


def git(cwd: Path, *args: str) -> str:
    """Run real git in ``cwd`` and return its stdout; a failure fails the test."""
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture
def git_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Git repository with an identity, as the current directory."""
    root = tmp_path / "proj"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "test@example.com")
    git(root, "config", "user.name", "Test")
    monkeypatch.chdir(root)
    return root


CAS = [sys.executable, "-m", "cas"]


def cas(
    cwd: Path, *args: str, code: int = 0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real ``cas`` CLI; assert its exit code (a mismatch shows its output)."""
    proc = subprocess.run(
        [*CAS, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == code, (
        f"cas {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    )
    return proc


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)
    return path


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes: equality means byte-for-byte equal trees."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(params=["file", "s3"])
def remote_url(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, dict[str, str]]:
    """A remote URL and the environment a client needs for it (credentials for S3)."""
    if request.param == "file":
        return (tmp_path / "remote").as_uri(), {}
    server: S3Server = request.getfixturevalue("s3_server")
    bucket: str = request.getfixturevalue("s3_bucket")
    for key, value in server.env.items():
        monkeypatch.setenv(key, value)  # for the in-process API calls
    return f"s3://{bucket}/cas", server.env
