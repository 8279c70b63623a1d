"""The profilo command: key management, and `serve` honouring config file, env and flags."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from proxy.config import load_settings
from proxy.errors import ConfigError
from tests.fakes.server import free_port
from tests.fakes.upstream import FakeUpstream

ROOT = Path(__file__).resolve().parents[1]


def profilo(
    *args: str, env: dict[str, str] | None = None, **kw: Any
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
        **kw,
    )


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    created = profilo("--data-dir", str(tmp_path), "keys", "create", "acme")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("pk-") and len(token) > 30
    listed = profilo("--data-dir", str(tmp_path), "keys", "list")
    key_id, account, _prefix, _, state = listed.stdout.strip().split("\t")
    assert (account, state) == ("acme", "active")
    assert token not in listed.stdout  # never the secret
    assert (tmp_path / "profilo.sqlite3").read_bytes().find(token.encode()) == -1  # stored hashed
    revoked = profilo("--data-dir", str(tmp_path), "keys", "revoke", key_id)
    assert revoked.returncode == 0
    assert profilo("--data-dir", str(tmp_path), "keys", "list").stdout.strip().endswith("revoked")
    assert profilo("--data-dir", str(tmp_path), "keys", "revoke", key_id).returncode == 1


def test_config_precedence_file_then_env_then_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "port: 1111\nhost: 127.0.0.2\nupstream:\n  api_base: http://file/v1\n  api_key: file-key\n"
        "models:\n  extraction: file-model\n"
    )
    s = load_settings(cfg)
    assert (s.port, s.host, s.upstream.api_base, s.models.extraction) == (
        1111,
        "127.0.0.2",
        "http://file/v1",
        "file-model",
    )
    monkeypatch.setenv("PROFILO_PORT", "2222")
    monkeypatch.setenv("PROFILO_UPSTREAM__API_BASE", "http://env/v1")
    monkeypatch.setenv("PROFILO_MODELS__EXTRACTION", "env-model")
    monkeypatch.setenv("PROFILO_MODELS__DIALECTIC", "env-dialectic")
    monkeypatch.setenv("PROFILO_DATA_DIR", str(tmp_path / "envdata"))
    s = load_settings(cfg)
    assert (s.port, s.upstream.api_base, s.models.extraction, s.models.dialectic) == (
        2222,
        "http://env/v1",
        "env-model",
        "env-dialectic",
    )
    assert s.upstream.api_key == "file-key"  # nested fields merge across sources
    assert s.data_dir == tmp_path / "envdata"
    s = load_settings(cfg, port=3333, host=None)
    assert (s.port, s.host) == (3333, "127.0.0.2")


def test_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("port: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(cfg)
    cfg.write_text("no_such_setting: 1\n")
    with pytest.raises(ConfigError, match="no_such_setting"):
        load_settings(cfg)
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.yaml")
    bad = profilo("serve", "--config", str(tmp_path / "missing.yaml"))
    assert bad.returncode == 2 and "not found" in bad.stderr


def test_os_environ_references_in_the_model_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from proxy.llm.router import UpstreamRouter

    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "model_list:\n  - model_name: m\n    litellm_params:\n      model: openai/x\n"
        "      api_key: os.environ/MY_TEST_KEY\n      api_base: http://127.0.0.1:1/v1\n"
    )
    monkeypatch.setenv("MY_TEST_KEY", "sk-from-env")
    route = UpstreamRouter(load_settings(cfg)).resolve("m")
    assert (route.kind, route.model, route.api_key) == ("passthrough", "x", "sk-from-env")
    monkeypatch.delenv("MY_TEST_KEY")
    with pytest.raises(ConfigError, match="MY_TEST_KEY"):
        UpstreamRouter(load_settings(cfg))


def test_serve_refuses_a_public_bind_without_keys(tmp_path: Path) -> None:
    out = profilo(
        "--data-dir", str(tmp_path), "serve", "--host", "0.0.0.0", "--port", str(free_port())
    )
    assert out.returncode == 2
    assert "no API keys" in out.stderr


def test_serve_honours_env_and_flags_end_to_end(tmp_path: Path, upstream: FakeUpstream) -> None:
    """What the README's first command runs: `profilo serve`, configured by PROFILO_* env."""
    port = free_port()
    env = {
        "PROFILO_DATA_DIR": str(tmp_path / "data"),
        "PROFILO_UPSTREAM__API_BASE": upstream.url,
        "PROFILO_UPSTREAM__API_KEY": "sk-env-upstream",
        "PROFILO_PORT": "1",  # the flag below wins
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "serve", "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "profilo serve did not become ready"
            time.sleep(0.2)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        out = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
        assert out.choices[0].message.content == "Hello from fake upstream"
        assert upstream.last.headers["authorization"] == "Bearer sk-env-upstream"
        assert (tmp_path / "data" / "profilo.sqlite3").exists()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # NumPy's OpenBLAS (2 threads on a 2-core machine) was capped at start-up: its spinning
    # second thread burned ~2.5 ms of CPU per memory request (proxy/native_threads.py)
    log = proc.stdout.read() if proc.stdout else ""
    assert '"message":"BLAS threads: 1"' in log, log


def test_index_rebuild_vectors_re_embeds_every_fact(
    tmp_path: Path, upstream: FakeUpstream, make_proxy: Any
) -> None:
    """After switching embedding.precision, `index rebuild --vectors` writes every fact's
    vector with the new one (the views of running replicas see the writes)."""
    import numpy as np

    from proxy.llm.embeddings import build_embedder
    from proxy.models import Scope
    from proxy.store.index import FactIndex
    from tests.conftest import MODEL_CACHE, make_settings

    settings = make_settings(tmp_path / "d", upstream)
    proxy = make_proxy(settings)
    facts = {"home_city": "Lisbon", "pet": "a beagle called Biscuit", "job": "ICU nurse"}
    r = httpx.patch(proxy.base_url + "/profile", json={**facts, "collection_id": "u"})
    assert r.status_code == 200, r.text
    proxy.server.__exit__(None, None, None)  # stopped: the command has the data dir alone

    env = {"PROFILO_EMBEDDING__PRECISION": "int8", "PROFILO_EMBEDDING__CACHE_DIR": str(MODEL_CACHE)}
    done = profilo("--data-dir", str(settings.data_dir), "index", "rebuild", "--vectors", env=env)
    assert done.returncode == 0, done.stderr
    assert "3 facts queued" in done.stdout and "vector index rebuilt: 3 facts" in done.stdout

    int8 = settings.model_copy(
        update={"embedding": settings.embedding.model_copy(update={"precision": "int8"})}
    )
    embedder = build_embedder(int8.embedding, MODEL_CACHE)
    fp32 = build_embedder(settings.embedding, MODEL_CACHE)
    index = FactIndex(settings.store, settings.chroma_path)
    try:
        scope = Scope("dev", "u")
        stored = index.vectors(scope, [h[0] for h in index.query(scope, np.ones(384), 10)])
    finally:
        index.close()
    assert len(stored) == 3
    texts = [f"{k.replace('_', ' ')}: {v}" for k, v in facts.items()]
    want, old = embedder.embed(texts), fp32.embed(texts)
    for vector in stored.values():
        best = max(float(vector @ w) for w in want)
        assert best > 0.9999  # the int8 vector of one of the facts
        assert max(float(vector @ o) for o in old) < 0.9999  # not the fp32 one any more
