"""profilo's Python client: Reflexio's methods over /api, Hebbrix-style ones over /v1.

Code written for Reflexio runs with only its import and constructor changed::

    from proxy import client as reflexio
    client = reflexio.ReflexioClient(url_endpoint="http://127.0.0.1:8080", api_key="pk-...")

Imports httpx and pydantic only (nothing of the server).
"""

from proxy.client._calls import ProfiloError
from proxy.client.aio import AsyncDialecticSession, AsyncProfiloClient
from proxy.client.sync import DialecticSession, ProfiloClient
from proxy.client.types import (
    Config,
    DeleteProfileResponse,
    Fact,
    ProfileChangeLog,
    ProfileChangeLogResponse,
    PublishUserInteractionResponse,
    SearchUserProfileResponse,
    UserProfile,
)

#: Reflexio's class names, for code written against its client.
ReflexioClient = ProfiloClient
AsyncReflexioClient = AsyncProfiloClient

__all__ = [
    "AsyncDialecticSession",
    "AsyncProfiloClient",
    "AsyncReflexioClient",
    "Config",
    "DeleteProfileResponse",
    "DialecticSession",
    "Fact",
    "ProfileChangeLog",
    "ProfileChangeLogResponse",
    "ProfiloClient",
    "ProfiloError",
    "PublishUserInteractionResponse",
    "ReflexioClient",
    "SearchUserProfileResponse",
    "UserProfile",
]
