"""``ProfiloClient``: the blocking client (httpx). Reflexio's method names and arguments for
the /api routes, plus the Hebbrix-style /v1 profile, facts and dialectic."""

from __future__ import annotations

from types import TracebackType
from typing import Any

import httpx

from proxy.client import _calls as c
from proxy.client import types as t


class ProfiloClient:
    """``ProfiloClient(url_endpoint=..., api_key=...)``; both default to ``PROFILO_URL`` /
    ``PROFILO_API_KEY`` (then Reflexio's ``REFLEXIO_URL`` / ``REFLEXIO_API_KEY``).

    ``publish_wait_seconds`` > 0 makes every ``publish_interaction`` wait (up to that long)
    until the proxy has learned from it, so a search right after sees the result.
    """

    def __init__(
        self,
        api_key: str | None = None,
        url_endpoint: str | None = None,
        *,
        timeout: float = 60.0,
        publish_wait_seconds: float = 0.0,
        http_client: httpx.Client | None = None,
    ) -> None:
        self.base_url, headers = c.settings(url_endpoint, api_key)
        self.publish_wait_seconds = publish_wait_seconds
        self._http = http_client or httpx.Client(timeout=timeout)
        self._http.headers.update(headers)

    def _send(self, call: c.Call[c.T]) -> c.T:
        response = self._http.request(
            call.method, self.base_url + call.path, json=call.json, params=call.params or None
        )
        return c.parse(call, response)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ProfiloClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- Reflexio ----------------------------------------------------------------------------
    def search_user_profiles(
        self,
        user_id: str,
        query: str,
        threshold: float | None = None,
        top_k: int | None = None,
        source: str | None = None,
        custom_feature: str | dict[str, Any] | None = None,
    ) -> t.SearchUserProfileResponse:
        return self._send(
            c.search_user_profiles(user_id, query, threshold, top_k, source, custom_feature)
        )

    def publish_interaction(
        self,
        user_id: str,
        interactions: list[dict[str, Any]],
        session_id: str | None = None,
        source: str | None = None,
        wait_for_response: bool = False,
    ) -> t.PublishUserInteractionResponse:
        wait = c.MAX_PUBLISH_WAIT if wait_for_response else self.publish_wait_seconds
        return self._send(c.publish_interaction(user_id, interactions, session_id, source, wait))

    def get_profiles(
        self,
        user_id: str,
        top_k: int | None = None,
        start_time: int | None = None,
        end_time: int | None = None,
    ) -> t.GetUserProfilesResponse:
        return self._send(c.get_profiles(user_id, top_k, start_time, end_time))

    def get_profile_change_log(
        self, user_id: str | None = None, limit: int | None = None
    ) -> t.ProfileChangeLogResponse:
        return self._send(c.get_profile_change_log(user_id, limit))

    def delete_profile(
        self,
        user_id: str,
        profile_id: str | None = None,
        search_query: str | None = None,
        wait_for_response: bool = False,
    ) -> t.DeleteProfileResponse:
        """The deletion is applied before this returns either way; ``wait_for_response`` is
        accepted for Reflexio compatibility. An unknown ``profile_id`` gives success False."""
        return self._send(c.delete_profile(user_id, profile_id, search_query))

    def get_config(self) -> t.Config:
        return self._send(c.get_config())

    def set_config(self, config: t.Config | dict[str, Any]) -> t.SetConfigResponse:
        return self._send(c.set_config(config))

    # -- Hebbrix-style /v1 -------------------------------------------------------------------
    def get_profile(self, collection_id: str | None = None) -> t.Profile:
        return self._send(c.get_profile(collection_id))

    def patch_profile(
        self, fields: dict[str, Any], collection_id: str | None = None, dry_run: bool = False
    ) -> t.PatchResult:
        return self._send(c.patch_profile(collection_id, fields, dry_run))

    def list_facts(
        self,
        collection_id: str | None = None,
        *,
        kind: str | None = None,
        category: str | None = None,
        source: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> t.FactPage:
        return self._send(c.list_facts(collection_id, kind, category, source, limit, cursor))

    def get_fact(self, fact_id: str, collection_id: str | None = None) -> t.Fact:
        return self._send(c.get_fact(collection_id, fact_id))

    def create_fact(
        self, key: str, value: Any, collection_id: str | None = None, **fields: Any
    ) -> t.Fact:
        return self._send(c.create_fact(collection_id, {"key": key, "value": value} | fields))

    def update_fact(self, fact_id: str, collection_id: str | None = None, **fields: Any) -> t.Fact:
        return self._send(c.update_fact(collection_id, fact_id, fields))

    def delete_fact(self, fact_id: str, collection_id: str | None = None) -> t.DeletedFact:
        return self._send(c.delete_fact(collection_id, fact_id))

    def dialectic(
        self,
        question: str,
        collection_id: str | None = None,
        session_id: str | None = None,
        model: str | None = None,
    ) -> t.DialecticResponse:
        return self._send(c.dialectic(collection_id, question, session_id, model))

    def dialectic_session(self, collection_id: str | None = None) -> DialecticSession:
        return DialecticSession(self, collection_id)


class DialecticSession:
    """Questions about one user that share a dialectic session: each answer's
    ``session_id`` is sent with the next question, so earlier turns are context."""

    def __init__(self, client: ProfiloClient, collection_id: str | None) -> None:
        self._client = client
        self.collection_id = collection_id
        self.session_id: str | None = None

    def ask(self, question: str, model: str | None = None) -> t.DialecticResponse:
        answer = self._client.dialectic(question, self.collection_id, self.session_id, model)
        self.session_id = answer.session_id
        return answer
