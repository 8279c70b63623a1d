"""Concurrent clients for tests/test_cluster.py, all through the balancer.

Each client thread owns a few collections of one account and loops over every kind of request
(the real ``openai`` SDK for chats, JSON and streamed; httpx for the rest), recording for each
what it was answered: ``Call`` (status, the balancer's ``X-LB-Request-Id``, the replica's
``X-Profilo-Request-Id``, a transport error or a broken stream). Turns say ``I collect item N``
with N unique in the run; profile writes set ``note_M`` keys. What the clients were told is
what the test then checks the records against.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai

from tests.fakes.upstream import DEFAULT_CONTENT

INDEX_DOWN = "retrieval index unavailable"


@dataclass
class Call:
    kind: str
    collection: str
    started: float
    ended: float = 0.0
    status: int | None = None
    lb_id: str = ""
    profilo_id: str = ""
    error: str | None = None  # no answer, or a stream cut short
    body: Any = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.error is not None or self.status is None or self.status >= 500

    def head(self, status: int, headers: Any) -> None:
        self.status = status
        self.lb_id = headers.get("x-lb-request-id", "")
        self.profilo_id = headers.get("x-profilo-request-id", "")


class Client(threading.Thread):
    """One end of the traffic: loops until ``stop`` is set."""

    KINDS = (
        ("chat", 4), ("stream", 3), ("publish", 2), ("patch", 3), ("delete", 2),
        ("search", 3), ("dialectic", 1),
    )  # fmt: skip

    def __init__(
        self,
        k: int,
        account: str,
        token: str,
        base_url: str,
        collections: list[str],
        stop: threading.Event,
    ) -> None:
        super().__init__(name=f"client-{k}", daemon=True)
        self.k = k
        self.account = account
        self.collections = collections
        self.stop = stop
        self.rng = random.Random(1000 + k)
        self.numbers = itertools.count(k * 100_000 + 1)
        self.auth = {"Authorization": f"Bearer {token}"}
        self.http = httpx.Client(base_url=base_url, headers=self.auth, timeout=60)
        self.oai = openai.OpenAI(base_url=base_url, api_key=token, max_retries=0, timeout=60)
        self.calls: list[Call] = []
        self.notes: dict[tuple[str, str], int] = {}  # (collection, key) -> version written
        self.home: dict[int, str] = {}  # every number drawn -> the collection it was sent to
        self.crashed: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                kind = self.rng.choices([k for k, _ in self.KINDS], [w for _, w in self.KINDS])[0]
                collection = self.rng.choice(self.collections)
                call = Call(kind, collection, time.monotonic())
                try:
                    getattr(self, kind)(call)
                except (httpx.TransportError, openai.APIConnectionError) as exc:
                    call.error = f"{type(exc).__name__}: {exc}"
                call.ended = time.monotonic()
                self.calls.append(call)
                time.sleep(self.rng.uniform(0.0, 0.05))
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.crashed = exc
        finally:
            self.http.close()
            self.oai.close()

    # -- chats (the openai SDK) -----------------------------------------------------------------
    def _number(self, call: Call) -> int:
        n = next(self.numbers)
        self.home[n] = call.collection
        return n

    def _chat_body(self, call: Call) -> dict[str, Any]:
        n = self._number(call)
        call.detail["n"] = n
        return {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": f"I collect item {n}"}],
            "extra_body": {
                "collection_id": call.collection,
                "features": {"memory": True, "learning": True},
            },
        }

    def chat(self, call: Call) -> None:
        try:
            raw = self.oai.chat.completions.with_raw_response.create(**self._chat_body(call))
        except openai.APIStatusError as exc:
            call.head(exc.status_code, exc.response.headers)
            call.body = exc.response.text
            return
        call.head(raw.status_code, raw.headers)
        call.detail["learning"] = raw.headers.get("x-profilo-learning")
        assert raw.parse().choices[0].message.content == DEFAULT_CONTENT

    def stream(self, call: Call) -> None:
        body = self._chat_body(call)
        try:
            with self.oai.chat.completions.with_streaming_response.create(
                **body, stream=True
            ) as resp:
                call.head(resp.status_code, resp.headers)
                text, finished = "", False
                try:
                    for chunk in resp.parse():
                        if chunk.choices:
                            text += chunk.choices[0].delta.content or ""
                            finished = finished or chunk.choices[0].finish_reason == "stop"
                except Exception as exc:  # cut short: nginx lost the replica mid-stream
                    call.error = f"stream broken: {type(exc).__name__}: {exc}"
                    return
                if not finished or text != DEFAULT_CONTENT:
                    call.error = f"stream incomplete: {text!r}"
        except openai.APIStatusError as exc:
            call.head(exc.status_code, exc.response.headers)
            call.body = exc.response.text

    # -- the rest (httpx) -----------------------------------------------------------------------
    def _send(self, call: Call, method: str, path: str, **kw: Any) -> None:
        r = self.http.request(method, path, **kw)
        call.head(r.status_code, r.headers)
        call.body = r.json() if "json" in r.headers.get("content-type", "") else r.text

    def publish(self, call: Call) -> None:
        n = self._number(call)
        call.detail["n"] = n
        body = {
            "collection_id": call.collection,
            "messages": [{"role": "user", "content": f"I collect item {n}"}],
            "model": "gpt-4o-mini",
        }
        self._send(call, "POST", "/interactions", json=body)

    def patch(self, call: Call) -> None:
        mine = [key for (c, key) in self.notes if c == call.collection]
        if mine and self.rng.random() < 0.4:  # a new version of a note it wrote
            key = self.rng.choice(mine)
        else:
            key = f"note_{self._number(call)}"
        version = self.notes.get((call.collection, key), 0) + 1
        call.detail |= {"key": key, "version": version}
        value = f"{key.replace('_', ' ')} version {version}"
        params = {"collection_id": call.collection}
        self._send(call, "PATCH", "/profile", params=params, json={key: value})
        if call.status == 200:
            self.notes[(call.collection, key)] = version
        else:
            self.notes.pop((call.collection, key), None)  # unknown: never touched again

    def delete(self, call: Call) -> None:
        mine = [key for (c, key) in self.notes if c == call.collection]
        if not mine:
            call.kind = "patch"
            return self.patch(call)
        key = self.rng.choice(mine)
        del self.notes[(call.collection, key)]  # deleted, or unknown: never touched again
        call.detail["key"] = key
        params = {"collection_id": call.collection, "limit": 500}
        listed = self.http.get("/profile/facts", params=params)
        assert listed.status_code == 200, listed.text
        fact_id = next(f["id"] for f in listed.json()["facts"] if f["key"] == key)
        if self.rng.random() < 0.5:
            self._send(call, "DELETE", f"/profile/facts/{fact_id}", params=params)
        else:
            body = {"fact_id": fact_id, "collection_id": call.collection}
            self._send(call, "POST", "/profile/delete", json=body)
        return None

    def search(self, call: Call) -> None:
        body = {"query": "which items are collected", "collection_id": call.collection}
        self._send(call, "POST", "/profile/search", json={**body, "threshold": 0})
        self._own_facts(call)

    def dialectic(self, call: Call) -> None:
        body = {"user_message": "Which items does the user collect?"}
        self._send(
            call, "POST", "/profile/dialectic", json={**body, "collection_id": call.collection}
        )
        self._own_facts(call)

    def _own_facts(self, call: Call) -> None:
        """Every fact an answer shows was written or taught in this scope (none of another)."""
        if call.status == 200:
            for fact in call.body["facts"]:
                number = int(fact["key"].partition("_")[2])
                assert self.home.get(number) == call.collection, (call.collection, fact)
