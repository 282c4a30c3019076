"""Shared fixtures. Service fixtures live in their own modules and are loaded as plugins."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytest_plugins: list[str] = []


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
