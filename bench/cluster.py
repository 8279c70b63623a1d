"""The scale-out topology on one machine: Postgres, a Chroma server, N replicas, nginx.

    python -m bench.cluster [--replicas 3]

starts everything on loopback, prints the URLs and an API key, and stops it all on Ctrl-C.
From tests (``tests/test_cluster.py``)::

    with Cluster(3, upstream_url=fake.url) as cluster:
        httpx.get(cluster.url + "/v1/profile", headers=cluster.auth(token))
        cluster.kill(0)            # SIGKILL; cluster.kill(1, signal.SIGTERM): a rolling stop
        cluster.restart(0)
        cluster.stop_chroma(); cluster.start_chroma()

The same pieces as ``deploy/compose.yaml``: a throwaway PostgreSQL (``bench/pg_cluster.py``),
``chroma run`` over a temporary directory (``bench/chroma_server.py``), N ``profilo serve``
processes (each its own data dir, the same ``PROFILO_STORE__DATABASE_URL``,
``PROFILO_STORE__CHROMA_URL`` and upstream), nginx rendered from ``deploy/nginx.conf``
(``bench/nginx.py``). The upstream is the caller's (``upstream_url``; ``{i}`` in it is replaced
by the replica's index, so a fake upstream can tell the replicas apart), else the learning
benchmark's fake (``bench/bench_learning.py``: chats, streams, extraction answers). Every
process is stopped by its pid at exit, on an error too.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.chroma_server import ChromaServer
from bench.nginx import Nginx
from bench.pg_cluster import PgCluster
from bench.replica import ROOT, Replica, reserve_ports

MODEL_CACHE = Path(tempfile.gettempdir()) / "profilo-test-models"


class Cluster:
    def __init__(
        self,
        replicas: int = 3,
        *,
        upstream_url: str | None = None,
        env: dict[str, str] | None = None,
        root: Path | None = None,
        lease_seconds: float = 3.0,
        drain_delay_seconds: float = 3.0,
        ready_timeout: float = 180.0,
    ) -> None:
        self.size = replicas
        self.root = Path(root or tempfile.mkdtemp(prefix="profilo-cluster-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self._upstream_url = upstream_url
        self._extra_env = dict(env or {})
        self.lease_seconds = lease_seconds
        self.drain_delay_seconds = drain_delay_seconds
        self.ready_timeout = ready_timeout
        self.pg: PgCluster | None = None
        self.database_url = ""
        self._ports = reserve_ports(replicas + 3)  # replicas, nginx, Chroma, the fake upstream
        self.chroma = ChromaServer(self.root / "chroma", self._ports[-2], self.root / "chroma.log")
        self.upstream: subprocess.Popen[bytes] | None = None
        self.replicas: list[Replica] = []
        self.nginx = Nginx(self.root / "nginx", self._ports[-3], [])

    # -- addresses ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The balancer (``/v1`` under it)."""
        return self.nginx.url

    def upstream_for(self, index: int) -> str:
        assert self._upstream_url is not None
        return self._upstream_url.replace("{i}", str(index))

    def replica_env(self, index: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROFILO_")}
        env |= {
            "PYTHONUNBUFFERED": "1",
            "PROFILO_STORE__DATABASE_URL": self.database_url,
            "PROFILO_STORE__CHROMA_URL": self.chroma.url,
            "PROFILO_UPSTREAM__API_BASE": self.upstream_for(index),
            "PROFILO_UPSTREAM__API_KEY": "sk-cluster-upstream",
            "PROFILO_EMBEDDING__CACHE_DIR": str(MODEL_CACHE),
            "PROFILO_LOG_LEVEL": "warning",
            "PROFILO_LEARNING__LEASE_SECONDS": str(self.lease_seconds),
            # longer than nginx's keepalive_timeout (deploy/nginx.conf), as in production
            "PROFILO_SERVER__DRAIN_DELAY_SECONDS": str(self.drain_delay_seconds),
        }
        return env | self._extra_env

    # -- life cycle -----------------------------------------------------------------------------
    def start(self) -> Cluster:
        atexit.register(self.stop)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.pg = PgCluster()
        self.pg.start()
        self.database_url = self.pg.create_database("profilo")
        self._migrate()
        self.chroma.start()
        if self._upstream_url is None:
            self._start_fake_upstream()
        for i in range(self.size):
            data = self.root / f"replica-{i}"
            data.mkdir()
            log = self.root / f"replica-{i}.log"
            self.replicas.append(Replica(i, self._ports[i], data, log, self.replica_env(i)))
        for replica in self.replicas:
            replica.spawn()
        for replica in self.replicas:
            replica.wait_ready(self.ready_timeout)
        self.nginx.replica_ports = [r.port for r in self.replicas]
        self.nginx.start()

    def _migrate(self) -> None:
        from proxy.store.postgres import PostgresDatabase

        PostgresDatabase(self.database_url, min_size=0, max_size=1).close()  # under its lock

    def _start_fake_upstream(self) -> None:
        port = self._ports[-1]
        cmd = [sys.executable, "-m", "bench.bench_learning", "upstream", "--port", str(port)]
        with (self.root / "upstream.log").open("ab") as out:
            self.upstream = subprocess.Popen(
                cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._upstream_url = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                httpx.get(self._upstream_url + "/models", timeout=1)
                return
            if self.upstream.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the fake upstream did not start")
            time.sleep(0.1)

    def create_key(self, account: str) -> str:
        from proxy.store.keys import KeyStore
        from proxy.store.postgres import PostgresDatabase

        db = PostgresDatabase(self.database_url, min_size=0, max_size=1, migrate=False)
        try:
            return KeyStore(db).create(account)[1]
        finally:
            db.close()

    @staticmethod
    def auth(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    # -- faults ---------------------------------------------------------------------------------
    def kill(self, index: int, sig: int = signal.SIGKILL) -> None:
        replica = self.replicas[index]
        assert replica.proc is not None and replica.alive, f"replica {index} is not running"
        os.kill(replica.proc.pid, sig)

    def wait_exit(self, index: int, timeout: float = 60.0) -> int:
        return self.replicas[index].wait_exit(timeout)

    def restart(self, index: int, env: dict[str, str] | None = None) -> None:
        """Stop the replica if it still runs (SIGTERM), then start it on the same port;
        ``env`` is added to its environment for this run only."""
        replica = self.replicas[index]
        replica.stop()
        replica.env = self.replica_env(index) | (env or {})
        replica.spawn()
        replica.wait_ready(self.ready_timeout)

    def stop_chroma(self) -> None:
        self.chroma.stop()

    def start_chroma(self) -> None:
        self.chroma.start()

    def stop(self) -> None:
        atexit.unregister(self.stop)
        steps: list[Any] = [self.nginx.stop]
        steps += [r.terminate for r in self.replicas]  # they drain at the same time
        steps += [r.join for r in self.replicas]
        steps += [self.chroma.stop, self._stop_upstream]
        if self.pg is not None:
            steps.append(self.pg.stop)
        for step in steps:
            with contextlib.suppress(Exception):
                step()

    def _stop_upstream(self) -> None:
        if self.upstream is not None and self.upstream.poll() is None:
            self.upstream.terminate()
            self.upstream.wait(timeout=10)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--upstream", default=None, help="the replicas' upstream api_base "
                    "(default: a fake one that also answers extraction calls)")  # fmt: skip
    args = ap.parse_args()
    cluster = Cluster(args.replicas, upstream_url=args.upstream)
    with cluster:
        token = cluster.create_key("demo")
        print(f"balancer     {cluster.url}/v1   (API key for account 'demo': {token})")
        for r in cluster.replicas:
            print(f"replica {r.index}    {r.url}/v1   (pid {r.proc.pid if r.proc else '-'})")
        print(f"postgres     {cluster.database_url}")
        print(f"chroma       {cluster.chroma.url}")
        print(f"upstream     {cluster.upstream_for(0)}")
        print(f"logs         {cluster.root}\nCtrl-C stops everything.", flush=True)
        stop = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, stop)
        signal.sigwait(stop)
        print("stopping", flush=True)
    cluster.remove()


if __name__ == "__main__":
    main()
