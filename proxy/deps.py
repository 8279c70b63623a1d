"""FastAPI dependencies: the app's services, the current account, the request id."""

from __future__ import annotations

import logging

import anyio
from fastapi import Request

from proxy.errors import BadRequest
from proxy.identity import end_user_id, header_end_user
from proxy.models import Account, Scope
from proxy.services.auth import resolve_account
from proxy.services.container import Services

log = logging.getLogger("profilo.auth")


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


def authenticate(request: Request) -> Account:
    """The account of the bearer key; the dev account while no key exists on a loopback bind.
    (Blocking: reads the keys table. Routes use ``current_account``.)"""
    services = get_services(request)
    account = resolve_account(
        services.keys, services.settings.loopback, request.headers.get("authorization")
    )
    request.scope.setdefault("state", {})["account_id"] = account.id
    return account


async def current_account(request: Request) -> Account:
    """The account the middleware resolved from the request head (before reading the body);
    resolved here for a route the middleware does not guard."""
    account = request.scope.get("state", {}).get("account")
    if isinstance(account, Account):
        return account
    return await anyio.to_thread.run_sync(authenticate, request)


def scope_for(account: Account, *candidates: str | None) -> Scope:
    """The scope of a profile request: ``collection_id`` (or its alias ``user_id``) from the
    query string and/or the body. They may repeat one another but never disagree."""
    given = {c for c in candidates if c is not None}
    if len(given) > 1:
        raise BadRequest(
            "collection_id / user_id are given more than once with different values",
            param="collection_id",
        )
    collection_id = given.pop() if given else None
    if collection_id is not None:
        collection_id = end_user_id(collection_id)
    return Scope(account.id, collection_id)


def user_header(request: Request) -> tuple[str, str] | None:
    """The first configured end-user header (``memory.user_headers``) the request carries."""
    return header_end_user(request.headers, get_services(request).settings.memory.user_headers)
