"""deploy/ is the topology tests/test_cluster.py runs: nginx.conf is the file the cluster
harness renders (only addresses and paths change), and compose.yaml has the same services
and settings the harness gives its replicas (each of which must exist)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from bench.cluster import Cluster
from bench.nginx import DEPLOY_CONF, NGINX, RenderError, render
from proxy.config import Settings

COMPOSE = DEPLOY_CONF.parent / "compose.yaml"


def test_the_rendered_nginx_conf_differs_from_the_deployed_one_in_addresses_and_paths(
    tmp_path: Path,
) -> None:
    template = DEPLOY_CONF.read_text()
    text = render(template, 8081, [9001, 9002, 9003, 9004], tmp_path)
    servers = re.findall(r"^\s*server (\S+)( [^;]*);", text, re.M)
    first = re.search(r"^\s*server profilo-1:8080( [^;]*);", template, re.M)
    assert first is not None
    assert servers == [(f"127.0.0.1:{p}", first.group(1)) for p in (9001, 9002, 9003, 9004)]
    assert "listen 127.0.0.1:8081;" in text and "/var/cache/nginx/" not in text

    def rest(conf: str) -> list[str]:
        return [line for line in conf.splitlines() if not re.match(r"\s*(server|listen) ", line)]

    deployed = [line.replace("/var/cache/nginx/", f"{tmp_path}/") for line in rest(template)]
    assert rest(text) == deployed
    with pytest.raises(RenderError):
        render(template.replace("server profilo-", "server other-"), 8081, [9001], tmp_path)
    with pytest.raises(RenderError):
        render(template.replace("listen 8080;", "listen 80;"), 8081, [9001], tmp_path)


@pytest.mark.skipif(not NGINX.exists(), reason=f"{NGINX} is missing (make nginx)")
def test_nginx_accepts_the_rendered_conf(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text(render(DEPLOY_CONF.read_text(), 8081, [9001, 9002, 9003], tmp_path))
    cmd = [str(NGINX), "-t", "-p", f"{tmp_path}/", "-c", str(conf), "-e", "stderr"]
    cmd += ["-g", f"pid {tmp_path}/nginx.pid;"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


def test_compose_runs_the_tested_topology(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    replicas = sorted(name for name in services if name.startswith("profilo-"))
    upstream = re.findall(r"^\s*server (profilo-\d+):8080", DEPLOY_CONF.read_text(), re.M)
    assert replicas == upstream and len(replicas) == 3  # one "server" line per replica
    assert {"postgres", "chroma", "lb"} <= set(services)
    assert services["lb"]["volumes"] == ["./nginx.conf:/etc/nginx/nginx.conf:ro"]
    envs = [services[name]["environment"] for name in replicas]
    assert all(env == envs[0] for env in envs)
    # every setting the replicas get exists (a renamed one fails here, not in production)
    for key, value in envs[0].items():
        monkeypatch.setenv(key, "sk-test" if value.startswith("${") else str(value))
    settings = Settings()
    assert settings.store.database_url and settings.store.chroma_url
    # and the harness sets the same ones (its own knobs aside)
    harness = Cluster(3, upstream_url="http://127.0.0.1:1/v1", root=tmp_path).replica_env(0)
    own = {"PROFILO_EMBEDDING__CACHE_DIR", "PROFILO_LOG_LEVEL"}
    assert {k for k in harness if k.startswith("PROFILO_")} - own <= set(envs[0])


def test_nginx_closes_idle_connections_before_a_replica_does(tmp_path: Path) -> None:
    """nginx's idle keep-alive to the replicas ends before theirs, and before a draining
    replica closes its idle connections: else a request can be sent on a connection the
    replica is closing, and a POST that was sent is not retried (a 502)."""
    found = re.search(r"^\s*keepalive_timeout (\d+)s;", DEPLOY_CONF.read_text(), re.M)
    assert found is not None
    idle = int(found.group(1))
    server = Settings().server
    assert idle < server.keep_alive_seconds
    env = yaml.safe_load(COMPOSE.read_text())["x-profilo"]["environment"]
    drains = [
        float(env.get("PROFILO_SERVER__DRAIN_DELAY_SECONDS", server.drain_delay_seconds)),
        Cluster(3, upstream_url="http://127.0.0.1:1/v1", root=tmp_path).drain_delay_seconds,
    ]
    assert all(idle < drain for drain in drains), (idle, drains)
