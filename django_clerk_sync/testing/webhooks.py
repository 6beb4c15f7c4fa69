"""Svix-signed deliveries: headers, a POST through a Django test client, a POST over
real HTTP."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Awaitable, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, overload

from .payloads import new_svix_id

if TYPE_CHECKING:
    from django.test import AsyncClient, Client

    # What the test clients return (django-stubs' names): a response with .json().
    from django.test.client import _MonkeyPatchedASGIResponse as _ASGIResponse
    from django.test.client import _MonkeyPatchedWSGIResponse as _WSGIResponse

#: A signing secret for tests only: ``whsec_`` and base64 of 32 readable bytes.
TEST_WEBHOOK_SECRET = "whsec_" + base64.b64encode(
    b"django-clerk-sync-test-secret-32"
).decode("ascii")


def signed_headers(
    secret: str,
    body: bytes | str,
    *,
    svix_id: str | None = None,
    timestamp: datetime | float | None = None,
) -> dict[str, str]:
    """Svix headers for ``body`` signed with ``secret`` by svix's own signer.

    ``timestamp`` is a ``datetime`` or Unix seconds; default now.
    """
    from svix.webhooks import Webhook

    if timestamp is None:
        when = datetime.now(tz=timezone.utc)
    elif isinstance(timestamp, datetime):
        when = timestamp
    else:
        when = datetime.fromtimestamp(timestamp, tz=timezone.utc)
    svix_id = svix_id or new_svix_id()
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    return {
        "svix-id": svix_id,
        "svix-timestamp": str(int(when.timestamp())),
        "svix-signature": Webhook(secret).sign(svix_id, when, text),
    }


def _body(envelope_or_body: Mapping[str, Any] | bytes | str) -> bytes:
    if isinstance(envelope_or_body, (bytes, bytearray, memoryview)):
        # Sent exactly as given: the signature covers these bytes.
        return bytes(envelope_or_body)
    if isinstance(envelope_or_body, str):
        return envelope_or_body.encode("utf-8")
    if not isinstance(envelope_or_body, Mapping):
        raise TypeError(
            "post_webhook() takes an envelope (a dict, e.g. json.loads(event(...))) or "
            "the body as bytes or str, not "
            f"{type(envelope_or_body).__name__}"
        )
    return json.dumps(envelope_or_body).encode("utf-8")


@overload
def post_webhook(
    client: Client,
    envelope_or_body: Mapping[str, Any] | bytes | str,
    *,
    secret: str | None = ...,
    svix_id: str | None = ...,
    timestamp: datetime | float | None = ...,
    url: str | None = ...,
    **extra: Any,
) -> _WSGIResponse: ...


@overload
def post_webhook(
    client: AsyncClient,
    envelope_or_body: Mapping[str, Any] | bytes | str,
    *,
    secret: str | None = ...,
    svix_id: str | None = ...,
    timestamp: datetime | float | None = ...,
    url: str | None = ...,
    **extra: Any,
) -> Awaitable[_ASGIResponse]: ...


def post_webhook(
    client: Client | AsyncClient,
    envelope_or_body: Mapping[str, Any] | bytes | str,
    *,
    secret: str | None = None,
    svix_id: str | None = None,
    timestamp: datetime | float | None = None,
    url: str | None = None,
    **extra: Any,
) -> _WSGIResponse | Awaitable[_ASGIResponse]:
    """POST a Svix-signed delivery through a Django test ``Client`` (the response)
    or ``AsyncClient`` (an awaitable of it).

    ``envelope_or_body``: an envelope dict, or bytes (a captured payload) sent
    exactly as given. ``secret``: default the first of ``CLERK_WEBHOOK_SECRET``.
    ``url``: default ``reverse("django_clerk_sync:webhook")``. ``svix_id`` (the
    idempotency key, default a fresh one) and ``timestamp`` as for
    :func:`signed_headers`. ``extra`` goes to ``client.post``; its ``headers=``
    are added to the signed ones, and win over them.
    """
    if secret is None:
        from ..conf import clerk_settings

        secrets = clerk_settings.WEBHOOK_SECRETS
        if not secrets:
            raise ValueError(
                "post_webhook() has no signing secret: set CLERK_WEBHOOK_SECRET in the "
                "settings or pass secret='whsec_...'."
            )
        secret = secrets[0]
    if url is None:
        from django.urls import NoReverseMatch, reverse

        try:
            url = reverse("django_clerk_sync:webhook")
        except NoReverseMatch:
            raise NoReverseMatch(
                "post_webhook() found no URL named django_clerk_sync:webhook: add "
                'include("django_clerk_sync.urls") to the URLconf or pass url=.'
            )
    body = _body(envelope_or_body)
    headers = signed_headers(secret, body, svix_id=svix_id, timestamp=timestamp)
    headers.update(extra.pop("headers", None) or {})
    return client.post(
        url, body, content_type="application/json", headers=headers, **extra
    )


def deliver(
    url: str,
    secret: str,
    body: bytes,
    *,
    svix_id: str | None = None,
    timeout: float = 15,
) -> tuple[int, dict[str, str], bytes]:
    """POST a signed delivery to ``url`` over real HTTP, as Svix would.

    Returns ``(status, response headers, response body)``; never follows redirects
    (Svix does not either) and never raises for an HTTP error status.
    """

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    headers = {"Content-Type": "application/json", "User-Agent": "Svix-Webhooks/1.0"}
    headers.update(signed_headers(secret, body, svix_id=svix_id))
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()
