"""nginx in front of the cluster's replicas, configured by ``deploy/nginx.conf`` itself.

``render`` changes only what differs between the compose deployment and a test on one machine:
the replicas' addresses (the upstream's ``server profilo-N:8080 ...;`` lines become one line
per replica port, each with the first line's parameters), the listen address and the paths
under ``/var/cache/nginx/``. Each substitution must match, or rendering fails: the tested
configuration and the deployed one cannot drift apart.

``Nginx`` runs Debian's ``/usr/sbin/nginx`` (package ``nginx-light``) in the foreground
(``daemon off``) with its prefix, pid file and temporary files in one directory; its stdout
(the access log, ``/dev/stdout`` in the config) and stderr (the error log) go to files there.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEPLOY_CONF = ROOT / "deploy" / "nginx.conf"
NGINX = Path("/usr/sbin/nginx")

_SERVER = re.compile(r"^(?P<indent>[ \t]*)server profilo-\d+:8080(?P<params>[^;]*);.*\n", re.M)
_LISTEN = "listen 8080;"
_CACHE = "/var/cache/nginx/"


class RenderError(ValueError):
    pass


def render(template: str, port: int, replica_ports: Sequence[int], root: Path) -> str:
    """The config for a balancer on 127.0.0.1:``port`` over the replicas on ``replica_ports``."""
    servers = list(_SERVER.finditer(template))
    if not servers:
        raise RenderError("no 'server profilo-N:8080 ...;' line in the upstream block")
    first, last = servers[0], servers[-1]
    if template[first.start() : last.end()] != "".join(m.group(0) for m in servers):
        raise RenderError("the 'server profilo-N:8080' lines are not one contiguous block")
    indent, params = first.group("indent"), first.group("params")
    lines = "".join(f"{indent}server 127.0.0.1:{p}{params};\n" for p in replica_ports)
    text = template[: first.start()] + lines + template[last.end() :]
    if text.count(_LISTEN) != 1:
        raise RenderError(f"expected exactly one '{_LISTEN}'")
    text = text.replace(_LISTEN, f"listen 127.0.0.1:{port};")
    if _CACHE not in text:
        raise RenderError(f"no temporary path under {_CACHE}")
    return text.replace(_CACHE, f"{root}/")


@dataclass
class AccessLine:
    """One line of the ``balancer`` log format."""

    request: str
    status: int
    time: float  # when it was logged (the response sent), Unix time
    lb_id: str
    upstreams: list[str]  # every replica tried, in order ("127.0.0.1:PORT")
    upstream_status: str
    profilo_id: str


_LINE = re.compile(
    r'"(?P<request>[^"]*)" (?P<status>\d{3}) \d+ t=(?P<t>\S+) rt=\S+ lb_id=(?P<lb_id>\S+) '
    r'upstream="(?P<upstream>[^"]*)" upstream_status="(?P<ustatus>[^"]*)" '
    r'profilo_id="(?P<pid>[^"]*)"'
)


def parse_access_log(text: str) -> list[AccessLine]:
    out = []
    for line in text.splitlines():
        m = _LINE.search(line)
        if m is None:
            continue
        upstreams = [u.strip() for u in re.split(r"[,:]\s", m["upstream"]) if u.strip()]
        out.append(
            AccessLine(
                m["request"],
                int(m["status"]),
                float(m["t"]),
                m["lb_id"],
                upstreams,
                m["ustatus"],
                m["pid"],
            )
        )
    return out


class Nginx:
    def __init__(self, root: Path, port: int, replica_ports: Sequence[int]) -> None:
        self.root = root
        self.port = port
        self.replica_ports = list(replica_ports)
        self.conf = root / "nginx.conf"
        self.access_log = root / "access.log"
        self.error_log = root / "error.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Nginx:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)  # worker processes (user nobody when run as root) reach it
        self.conf.write_text(
            render(DEPLOY_CONF.read_text(), self.port, self.replica_ports, self.root)
        )
        cmd = [
            str(NGINX),
            "-p", f"{self.root}/",
            "-c", str(self.conf),
            "-e", "stderr",
            "-g", f"daemon off; pid {self.root}/nginx.pid;",
        ]  # fmt: skip
        with self.access_log.open("ab") as out, self.error_log.open("ab") as err:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}:\n{self.errors()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"nginx did not listen in {timeout}s:\n{self.errors()}")
            time.sleep(0.05)

    def errors(self) -> str:
        return self.error_log.read_text(errors="replace") if self.error_log.exists() else ""

    def lines(self) -> list[AccessLine]:
        return parse_access_log(self.access_log.read_text(errors="replace"))

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # fast shutdown: master and workers
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
