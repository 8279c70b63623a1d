"""Who is calling: the account of a bearer key, or the dev account while no key exists on a
loopback bind. Resolved from the request head alone (before any body is read)."""

from __future__ import annotations

from proxy.errors import Unauthorized
from proxy.models import Account
from proxy.store.keys import KeyStore

DEV_ACCOUNT = Account(id="dev", key_id=None, dev=True)


def resolve_account(keys: KeyStore, loopback: bool, authorization: str | None) -> Account:
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() == "bearer" and token:
        account = keys.authenticate(token)
        if account is not None:
            return account
    if loopback and not keys.any_exist():
        return DEV_ACCOUNT
    if not token:
        raise Unauthorized(
            "missing API key: send 'Authorization: Bearer <key>' (create one with "
            "'profilo keys create ACCOUNT')"
        )
    raise Unauthorized("invalid or revoked API key")
