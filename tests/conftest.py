"""Shared fixtures: a fake upstream on loopback, the proxy under a real uvicorn, no egress."""

from __future__ import annotations

import ipaddress
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from proxy.app import create_app
from proxy.config import Settings
from tests.fakes.server import ServerThread
from tests.fakes.upstream import FakeUpstream
from tests.records_backend import (  # noqa: F401 (fixtures)
    close_postgres_databases,
    current_database_url,
    current_vector_backend,
    pg_cluster,
    pytest_generate_tests,
    records_backend,
)

UPSTREAM_KEY = "sk-upstream-secret"

for _name in [n for n in os.environ if n.startswith("PROFILO_")]:
    del os.environ[_name]  # the developer's own settings must not leak into tests
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def _is_local(address: Any) -> bool:
    if not isinstance(address, tuple):
        return True  # unix sockets
    host = str(address[0])
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def no_egress(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Every test fails if anything tries to connect outside loopback."""
    attempts: list[Any] = []
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def connect(self: socket.socket, address: Any) -> Any:
        if not _is_local(address):
            attempts.append(address)
            raise OSError(f"test blocked a non-loopback connection to {address!r}")
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> Any:
        if not _is_local(address):
            attempts.append(address)
            raise OSError(f"test blocked a non-loopback connection to {address!r}")
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    yield attempts
    assert not attempts, f"non-loopback connections attempted: {attempts}"


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:
        yield up


@dataclass
class Proxy:
    url: str
    settings: Settings
    server: ServerThread

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def client(self, api_key: str = "sk-client", **kw: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=api_key, max_retries=0, **kw)

    def async_client(self, api_key: str = "sk-client", **kw: Any) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.base_url, api_key=api_key, max_retries=0, **kw)


MODEL_CACHE = Path(tempfile.gettempdir()) / "profilo-test-models"


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll ``predicate`` until it holds (``timeout``: a failure bound, never an expectation)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def open_handles(path: Path) -> int:
    """This process's open file descriptors on ``path`` (one per SQLite connection)."""
    fds = Path("/proc/self/fd")
    count = 0
    for fd in fds.iterdir():
        try:
            if os.readlink(fd) == str(path):
                count += 1
        except OSError:  # closed while listing
            pass
    return count


def make_settings(data_dir: Path, fake: FakeUpstream | None, **overrides: Any) -> Settings:
    """Settings for one test's proxy. The embedding model's ONNX graph is built once per
    machine into a shared cache dir (building it per test would cost seconds each)."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "embedding": {"cache_dir": MODEL_CACHE},
        # Jobs are still written; no background extraction call races a test's own requests.
        # Tests of learning turn the worker on (learning={...}).
        "learning": {"run_worker": False},
    }
    if fake is not None:
        values["upstream"] = {"api_base": fake.url, "api_key": UPSTREAM_KEY}
    values.update(overrides)
    url = current_database_url()
    if url is not None:  # this test runs on Postgres (tests/records_backend.py)
        store = dict(values.get("store") or {})
        store.setdefault("database_url", url)
        store.setdefault("vector_backend", current_vector_backend())
        values["store"] = store
    return Settings(**values)


@pytest.fixture
def make_proxy(tmp_path: Path, upstream: FakeUpstream) -> Iterator[Callable[..., Proxy]]:
    servers: list[ServerThread] = []

    def make(
        settings: Settings | None = None,
        *,
        clock: Callable[[], float] | None = None,
        **overrides: Any,
    ) -> Proxy:
        """``clock``: the usage limits' (tests/usage_helpers.FakeClock)."""
        if settings is None:
            settings = make_settings(tmp_path / "data", upstream, **overrides)
        server = ServerThread(create_app(settings, clock=clock))
        server.__enter__()
        servers.append(server)
        return Proxy(server.url, settings, server)

    yield make
    for server in reversed(servers):
        server.__exit__(None, None, None)


@pytest.fixture
def proxy(make_proxy: Callable[..., Proxy]) -> Proxy:
    return make_proxy()
