"""Bad input: every endpoint of the app's own OpenAPI document fuzzed (schemathesis), plus the
hostile bodies a schema does not describe. Never a 5xx, never a hang, every error in OpenAI's
envelope, and nothing stored changes when a request is rejected.

Bounded for CI: ``EXAMPLES`` cases per endpoint and generation mode, derandomized (the same
inputs every run), no example database. ``FUZZ_EXAMPLES=500`` runs a longer campaign.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from proxy.app import create_app
from proxy.config import Settings
from proxy.store.db import open_database
from proxy.store.keys import KeyStore
from tests.conftest import make_settings
from tests.fakes.schema import validate_error
from tests.fakes.server import ServerThread
from tests.fakes.upstream import FakeUpstream

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "15"))
MAX_BODY = 1024 * 1024
TIMEOUT = 30.0  # a request slower than this is a hang
DATA_TABLES = (
    "api_keys",
    "facts",
    "fact_versions",
    "changes",
    "account_config",
    "dialectic_sessions",
    "dialectic_turns",
    "responses",
)


def _operations() -> list[Any]:
    with tempfile.TemporaryDirectory() as tmp:
        doc = create_app(Settings(data_dir=Path(tmp))).openapi()
    schema = schemathesis.openapi.from_dict(doc)
    return [result.ok() for result in schema.get_all_operations()]


OPERATIONS = _operations()
#: Tried inputs, per endpoint (reported at the end of the module; README "Reliability").
TRIED: dict[str, int] = {}


@dataclass
class Target:
    url: str
    db: Path
    alpha: dict[str, str]  # Authorization header of the fuzzing account
    beta: dict[str, str]  # another account
    ids: dict[str, str]  # ids of other scopes: fact, job, session ids

    def snapshot(self) -> dict[str, Any]:
        """Everything users told the proxy (jobs by id and turn: their status moves on)."""
        with sqlite3.connect(self.db) as conn:
            out: dict[str, Any] = {
                t: conn.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in DATA_TABLES
            }
            out["jobs"] = conn.execute("SELECT id, scope_key, payload FROM jobs").fetchall()
        return out


def _post(url: str, auth: dict[str, str], path: str, body: Any, **params: Any) -> Any:
    r = httpx.post(url + path, json=body, headers=auth, params=params, timeout=TIMEOUT)
    assert r.status_code in (200, 201, 202), r.text
    return r.json()


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    data = tmp_path_factory.mktemp("fuzz")
    with FakeUpstream() as up:
        settings = make_settings(
            data,
            up,
            max_body_bytes=MAX_BODY,
            # a failing extraction ends at once: a chat waiting for learning never hangs
            learning={"run_worker": True, "max_attempts": 1, "poll_interval_seconds": 0.05},
        )
        keys = KeyStore(open_database(settings))
        alpha = {"Authorization": "Bearer " + keys.create("alpha")[1]}
        beta = {"Authorization": "Bearer " + keys.create("beta")[1]}
        with ServerThread(create_app(settings)) as server:
            url = server.url
            ids: dict[str, str] = {}
            for who, auth in (("alpha", alpha), ("beta", beta)):
                for coll in ("c1", "c2"):
                    r = httpx.patch(
                        url + "/v1/profile",
                        params={"collection_id": coll},
                        json={"pet": f"{who} {coll} has a cat", "city": "Lisbon"},
                        headers=auth,
                        timeout=TIMEOUT,
                    )
                    assert r.status_code == 200, r.text
                    fact = _post(
                        url, auth, "/v1/profile/facts", {"key": "boat", "value": f"{who} boat"},
                        collection_id=coll,
                    )  # fmt: skip
                    ids[f"{who}_{coll}_fact"] = fact["id"]
                turn = [{"role": "user", "content": "hi"}]
                ids[f"{who}_job"] = _post(
                    url, auth, "/v1/interactions",
                    {"collection_id": "c1", "model": "m", "messages": turn},
                )["request_id"]  # fmt: skip
                ids[f"{who}_session"] = _post(
                    url, auth, "/v1/profile/dialectic", {"user_message": "who is this?"},
                    collection_id="c1",
                )["session_id"]  # fmt: skip
            yield Target(url, settings.db_path, alpha, beta, ids)
    _report(ids)


def _report(ids: dict[str, str]) -> None:
    """At the module's end: the count of inputs tried (the README's figures)."""
    routes = len(BODY_ROUTES)
    hostile = (len(HOSTILE_BODIES) + 1) * routes + len(ODD_FEATURES) + len(ODD_MESSAGES) + 4
    print(f"\nfuzz: {sum(TRIED.values())} generated inputs over {len(TRIED)} endpoint/mode "
          f"pairs; {hostile} hand-made hostile inputs; ids of other scopes: "
          f"{len(_foreign_calls(ids))} requests")  # fmt: skip


def _check(target: Target, response: Any, before: dict[str, Any], what: str) -> None:
    status = response.status_code
    assert status < 500, f"{what}: HTTP {status}: {response.text[:500]}"
    if status >= 400:
        validate_error(response.json())
        assert target.snapshot() == before, f"{what}: a rejected request changed stored data"


FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)


@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode), ids=lambda m: m.value)
@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: op.label)
def test_every_endpoint_survives_generated_input(
    target: Target, operation: Any, mode: schemathesis.GenerationMode
) -> None:
    tried = 0

    @FUZZ_SETTINGS
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        nonlocal tried
        tried += 1
        before = target.snapshot()
        response = case.call(base_url=target.url, headers=target.alpha, timeout=TIMEOUT)
        _check(target, response, before, f"{operation.label} {mode.value}")

    try:
        run()
    except Unsatisfiable:
        # no input, or only free-form strings (e.g. a path id): nothing can be invalid
        assert mode is schemathesis.GenerationMode.NEGATIVE
        pytest.skip("the schema admits no invalid input for this endpoint")
    TRIED[f"{operation.label} {mode.value}"] = tried
    assert tried > 0


# -- what a schema does not describe -------------------------------------------------------------

BODY_ROUTES = [
    ("POST", "/v1/chat/completions"),
    ("PATCH", "/v1/profile"),
    ("POST", "/v1/profile/search"),
    ("POST", "/v1/profile/delete"),
    ("POST", "/v1/profile/facts"),
    ("PATCH", "/v1/profile/facts/{alpha_c1_fact}"),
    ("PUT", "/v1/config"),
    ("POST", "/v1/interactions"),
    ("POST", "/v1/profile/dialectic"),
    ("POST", "/v1/responses"),
    ("POST", "/v1/embeddings"),
    ("POST", "/v1/moderations"),
    ("POST", "/v1/completions"),
    ("POST", "/api/search_profiles"),
    ("POST", "/api/publish_interaction"),
    ("POST", "/api/get_profiles"),
    ("DELETE", "/api/delete_profile"),
    ("POST", "/api/set_config"),
]

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}

HOSTILE_BODIES: dict[str, bytes] = {
    "deep-array": b"[" * 100_000 + b"]" * 100_000,
    "deep-object": b'{"a":' * 20_000 + b"1" + b"}" * 20_000,
    "deep-inside-valid": json.dumps(CHAT)[:-1].encode()
    + b', "features": '
    + b'{"x":' * 5_000
    + b"1"
    + b"}" * 5_000
    + b"}",
    "invalid-utf8": b'{"model": "gpt-4o-mini", "messages": [{"role": "user", '
    b'"content": "\xff\xfe\x80"}]}',
    "lone-surrogate": b'{"model": "m", "messages": [{"role": "user", "content": "\\ud800"}], '
    b'"user_message": "\\udfff", "pet": "\\ud83d"}',
    "nul-bytes": b'{"model": "m\\u0000", "user_message": "\\u0000", "messages": [{"role": "user", '
    b'"content": "a\\u0000b"}], "pet": "\\u0000"}',
    "truncated": b'{"model": "gpt-4o-mini", "messages": [',
    "not-json": b"model=gpt-4o-mini&messages=hi",
    "empty": b"",
    "json-scalar": b"12",
    "huge-number": b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "top_k": '
    + b"9" * 5000
    + b', "threshold": 1e999, "limit": -1e400}',
    "duplicate-keys": b'{"model": "a", "model": "b", "messages": [], "messages": [{"role": "user", '
    b'"content": "x"}]}',
    "bom": b'\xef\xbb\xbf{"model": "m", "messages": [{"role": "user", "content": "x"}]}',
    "oversized": b'{"pad": "' + b"x" * (MAX_BODY + 10) + b'"}',
}


@pytest.mark.parametrize("name", list(HOSTILE_BODIES))
@pytest.mark.parametrize(("method", "path"), BODY_ROUTES, ids=[p for _, p in BODY_ROUTES])
def test_hostile_bodies_are_4xx_and_change_nothing(
    target: Target, method: str, path: str, name: str
) -> None:
    before = target.snapshot()
    r = httpx.request(
        method,
        target.url + path.format(**target.ids),
        content=HOSTILE_BODIES[name],
        headers={**target.alpha, "content-type": "application/json"},
        timeout=TIMEOUT,
    )
    _check(target, r, before, f"{method} {path} {name}")
    if name in ("deep-array", "deep-object", "invalid-utf8", "truncated", "not-json", "empty"):
        assert r.status_code == 400, r.text
    if name == "oversized":
        assert r.status_code == 413, r.text


def test_oversized_body_without_content_length_is_413(target: Target) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "m", "messages": [{"role": "user", "content": "'
        for _ in range(MAX_BODY // 4096 + 2):
            yield b"x" * 4096
        yield b'"}]}'

    for method, path in BODY_ROUTES:
        before = target.snapshot()
        r = httpx.request(
            method,
            target.url + path.format(**target.ids),
            content=chunks(),
            headers=target.alpha,
            timeout=TIMEOUT,
        )
        assert r.status_code == 413, (path, r.text)
        _check(target, r, before, path)


ODD_FEATURES: list[Any] = [
    [],
    ["memory"],
    "memory",
    1,
    True,
    {"memory": "true"},
    {"memory": 1},
    {"user_profile": []},
    {"memory_limit": 1.5},
    {"memory_limit": True},
    {"memory_limit": 0},
    {"memory_limit": 10**30},
    {"memory_limit": "5"},
    {"collection_id": 5},
    {"collection_id": ""},
    {"collection_id": "x" * 300},
    {"learning": {"on": True}},
    {"return_memory_context": None, "memory": "yes"},
]


ODD_MESSAGES: list[Any] = [
    [{"role": {"x": 1}, "content": "hi"}],  # found by the fuzzer: an unhashable role was a 500
    [{"role": ["user"], "content": "hi"}],
    [{"role": None}],
    ["hi"],
    [[]],
    {"role": "user", "content": "hi"},
    "hi",
    [],
]


@pytest.mark.parametrize("messages", ODD_MESSAGES, ids=lambda m: json.dumps(m)[:40])
def test_odd_messages_are_400(target: Target, messages: Any) -> None:
    before = target.snapshot()
    r = httpx.post(
        target.url + "/v1/chat/completions",
        json={**CHAT, "messages": messages},
        headers=target.alpha,
        timeout=TIMEOUT,
    )
    assert r.status_code == 400, r.text
    _check(target, r, before, json.dumps(messages))


@pytest.mark.parametrize("features", ODD_FEATURES, ids=lambda f: json.dumps(f)[:40])
def test_odd_feature_types_are_400(target: Target, features: Any) -> None:
    before = target.snapshot()
    r = httpx.post(
        target.url + "/v1/chat/completions",
        json={**CHAT, "features": features},
        headers=target.alpha,
        timeout=TIMEOUT,
    )
    assert r.status_code == 400, r.text
    _check(target, r, before, json.dumps(features))


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": f"message {i}"} for i in range(20_000)],
        [{"role": "user", "content": "word " * 40_000}],
        [{"role": "user", "content": [{"type": "text", "text": "x" * 100_000}]}],
        [{"role": "user", "content": None}, {"role": "assistant", "tool_calls": "nonsense"}],
    ],
    ids=["20k-messages", "200k-chars", "100k-char-part", "odd-content"],
)
def test_huge_messages_with_memory_never_fail_the_proxy(target: Target, messages: Any) -> None:
    """Huge turns are the upstream's business: relayed (200) or a clean 4xx, never a 5xx;
    memory, token budgets and learning cope with them."""
    r = httpx.post(
        target.url + "/v1/chat/completions",
        json={
            "model": "gpt-4o-mini",
            "messages": messages,
            "collection_id": "c1",
            "features": {"memory": True, "user_profile": True},
            "wait_for_learning_seconds": 5,
        },
        headers=target.alpha,
        timeout=TIMEOUT,
    )
    assert r.status_code == 200, r.text[:500]
    assert r.headers.get("x-profilo-memory-error") is None


def _foreign_calls(ids: dict[str, str]) -> list[tuple[str, str, dict[str, Any], Any]]:
    """Requests of account alpha naming what belongs to another scope."""
    calls: list[tuple[str, str, dict[str, Any], Any]] = []
    foreign = [
        (ids["beta_c1_fact"], {"collection_id": "c1"}),  # another account, same collection name
        (ids["alpha_c1_fact"], {"collection_id": "c2"}),  # own account, another collection
        (ids["alpha_c1_fact"], {}),  # own account, the account-wide scope
        (ids["alpha_c1_fact"], {"user_id": "c2"}),
    ]
    for fact_id, params in foreign:
        path = f"/v1/profile/facts/{fact_id}"
        calls += [
            ("GET", path, params, None),
            ("PATCH", path, params, {"value": "stolen"}),
            ("DELETE", path, params, None),
            ("POST", "/v1/profile/delete", params, {"fact_id": fact_id}),
            ("GET", "/v1/profile/changes", {**params, "request_id": "x"}, None),
        ]
    calls += [
        ("GET", f"/v1/interactions/{ids['beta_job']}", {}, None),
        ("POST", "/v1/profile/dialectic", {"collection_id": "c1"},
         {"user_message": "and now?", "session_id": ids["beta_session"]}),
        ("POST", "/v1/profile/dialectic", {"collection_id": "c2"},
         {"user_message": "and now?", "session_id": ids["alpha_session"]}),
    ]  # fmt: skip
    return calls


def test_ids_of_other_scopes_are_404_and_change_nothing(target: Target) -> None:
    for method, path, params, body in _foreign_calls(target.ids):
        before = target.snapshot()
        r = httpx.request(
            method,
            target.url + path,
            params=params,
            json=body,
            headers=target.alpha,
            timeout=TIMEOUT,
        )
        if path.endswith("/changes"):  # a filter that matches nothing: an empty page
            assert r.status_code == 200 and r.json()["changes"] == [], r.text
            continue
        assert r.status_code in (400, 404), (method, path, params, r.text)
        _check(target, r, before, f"{method} {path} {params}")
        assert "beta" not in r.text


# -- hostile values written over EXISTING keys, on every update path (issue 14.7) --------------

#: JSON values (raw bytes: some are not valid UTF-8, or not valid Unicode once decoded).
#: "text" ones break the edge's text rule: the same 400 ``invalid_text`` on every route.
HOSTILE_VALUES: dict[str, tuple[bytes, bool]] = {
    "lone-high-surrogate": (b'"\\ud800"', True),
    "lone-low-surrogate": (b'"\\udcff"', True),
    "high-surrogate-then-text": (b'"x\\ud83dy"', True),
    "reversed-pair": (b'"\\ude00\\ud83d"', True),
    "nul-escape": (b'"a\\u0000b"', True),
    "invalid-utf8": (b'"\xff\xfe"', True),
    "utf8-encoded-surrogate": (b'"\xed\xa0\x80"', True),
    "overlong-utf8": (b'"\xc0\xaf"', True),
    "bom-before-body": (b'"x"', True),  # a valid value; the body starts with a BOM
    "100k-chars": (b'"' + b"x" * 100_001 + b'"', False),
    "object": (b'{"a": {"b": 1}}', False),
    "list-of-objects": (b'[{"a": 1}]', False),
    "nested-list": (b'[["a"]]', False),
}

#: Every path that writes over something that exists: (method, path, query, body with VALUE).
UPDATE_PATHS: list[tuple[str, str, dict[str, str], bytes]] = [
    ("PATCH", "/v1/profile", {"collection_id": "c1"}, b'{"pet": VALUE}'),
    ("PATCH", "/v1/profile", {"collection_id": "c1"}, b'{"city": "Porto", "pet": VALUE}'),
    ("PATCH", "/v1/profile", {}, b'{"collection_id": "c1", "pet": VALUE, "dry_run": true}'),
    ("PATCH", "/v1/profile/facts/{alpha_c1_fact}", {"collection_id": "c1"}, b'{"value": VALUE}'),
    ("PATCH", "/v1/profile/facts/{alpha_c1_fact}", {"collection_id": "c1"}, b'{"key": VALUE}'),
    ("PATCH", "/v1/profile/facts/{alpha_c1_fact}", {"user_id": "c1"},
     b'{"value": "ok", "metadata": {"note": VALUE}}'),
    ("POST", "/v1/profile/facts", {"collection_id": "c1"}, b'{"key": "boat", "value": VALUE}'),
    ("PUT", "/v1/config", {}, b'{"profile_extractor_config": {"context_prompt": VALUE}}'),
    ("POST", "/api/set_config", {}, b'{"profile_extractor_config": {"context_prompt": VALUE}}'),
    ("POST", "/api/publish_interaction", {},
     b'{"user_id": "c1", "model": "m", "messages": [{"role": "user", "content": VALUE}]}'),
    ("POST", "/v1/interactions", {},
     b'{"collection_id": "c1", "model": "m", "messages": [{"role": "user", "content": VALUE}]}'),
]  # fmt: skip


@pytest.mark.parametrize("name", list(HOSTILE_VALUES))
def test_hostile_values_over_existing_keys_are_4xx_and_change_nothing(
    target: Target, name: str
) -> None:
    value, is_text = HOSTILE_VALUES[name]
    auth = {**target.alpha, "content-type": "application/json"}
    config = {"profile_extractor_config": {"context_prompt": "the existing prompt"}}
    r = httpx.put(target.url + "/v1/config", json=config, headers=target.alpha, timeout=TIMEOUT)
    assert r.status_code == 200, r.text  # an existing config to write over
    messages: set[str] = set()
    for method, path, params, template in UPDATE_PATHS:
        body = template.replace(b"VALUE", value)
        if name == "bom-before-body":
            body = b"\xef\xbb\xbf" + body
        what = f"{method} {path} {params} {template[:40]!r} {name}"
        before = target.snapshot()
        r = httpx.request(
            method,
            target.url + path.format(**target.ids),
            params=params,
            content=body,
            headers=auth,
            timeout=TIMEOUT,
        )
        assert 400 <= r.status_code < 500, (what, r.text[:300])
        _check(target, r, before, what)
        if is_text:  # one check at the edge: the same code and message whatever the route
            assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_text", what
            messages.add(r.json()["error"]["message"])
    assert len(messages) == (1 if is_text else 0), messages


def test_lone_surrogate_over_an_existing_key_is_400_not_500(target: Target) -> None:
    """Found by hand: the update path of PATCH /v1/profile encoded the value for SQLite and
    failed (UnicodeEncodeError, a 500); the create path answered 200."""
    url, params = target.url + "/v1/profile", {"collection_id": "c2"}
    r = httpx.patch(url, params=params, json={"model": "x"}, headers=target.alpha, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    before = target.snapshot()
    headers = {**target.alpha, "content-type": "application/json"}
    for body in (b'{"model": "\\udcff"}', b'{"new_key": "\\udcff"}'):  # update, then create
        r = httpx.patch(url, params=params, content=body, headers=headers, timeout=TIMEOUT)
        assert r.status_code == 400, r.text
        _check(target, r, before, body.decode())
    profile = httpx.get(url, params=params, headers=target.alpha, timeout=TIMEOUT).json()
    assert [f["value"] for f in profile["profile"]["static"] if f["key"] == "model"] == ["x"]


# -- client input in upstream URLs: traversal on every relayed route ----------------------------

TRAVERSALS = [
    "../../_log",
    "..%2F..%2F_log",
    "..%2f..%2f_log",
    "%2e%2e/%2e%2e/_log",
    "%2E%2E%2F%2E%2E%2F_log",
    "..\\..\\_log",
    "..%5C..%5C_log",
    "a/../../../_log",
    "./../_log",
    "..",
    "%2e%2e",
    "x%00y",
    "x%0d%0aHost:%20evil",
    "%252e%252e%252f_log",
    "a" * 5000,
]


def _raw(url: str, method: str, path: str, auth: dict[str, str]) -> tuple[int, bytes]:
    """A request whose path is sent byte for byte (``curl --path-as-is``): no client-side
    normalization of ``..`` or re-encoding of ``%2F``."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=TIMEOUT)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in auth.items():
            conn.putheader(name, value)
        conn.endheaders()
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


def test_traversal_never_reaches_another_upstream_path(tmp_path: Path) -> None:
    """Every route that puts a client's id into an upstream URL (models, responses and its
    input items, stored chat completions), with every traversal variant: the upstream only
    ever sees the paths of its allow-list, and the answer is a 4xx envelope."""
    with FakeUpstream() as up:
        settings = make_settings(tmp_path / "d", up)
        with ServerThread(create_app(settings)) as server:
            auth = {"Authorization": "Bearer sk-any"}
            created = httpx.post(
                server.url + "/v1/responses", json={"model": "gpt-4o", "input": "hi"},
                headers=auth, timeout=TIMEOUT,
            )  # fmt: skip
            assert created.status_code == 200, created.text
            rid = created.json()["id"]
            allowed = {"/v1/models", "/v1/responses", f"/v1/responses/{rid}",
                       f"/v1/responses/{rid}/input_items"}  # fmt: skip
            routes = [
                ("GET", "/v1/models/{}"),
                ("GET", "/v1/responses/{}"),
                ("DELETE", "/v1/responses/{}"),
                ("GET", "/v1/responses/{}/input_items"),
                ("GET", f"/v1/responses/{rid}/{{}}"),
                ("GET", f"/v1/responses/{rid}/input_items?after={{}}"),
                ("GET", "/v1/chat/completions/{}"),
                ("GET", "/v1/chat/completions/{}/messages"),
                ("DELETE", "/v1/chat/completions/{}"),
            ]
            tried = 0
            for method, template in routes:
                for variant in TRAVERSALS:
                    status, body = _raw(server.url, method, template.format(variant), auth)
                    tried += 1
                    assert 400 <= status < 500, (method, template, variant, status, body[:200])
                    validate_error(json.loads(body))
            seen = {r.path for r in up.requests}
            assert seen <= allowed, seen - allowed
            assert not any("_log" in r.path or "evil" in str(r.headers) for r in up.requests)
    TRIED["traversal (raw paths, every relayed route)"] = tried
