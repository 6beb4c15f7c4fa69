"""``ClerkAuthenticationMiddleware``: ``request.user`` from a Clerk session token.

Put it after Django's ``AuthenticationMiddleware``::

    MIDDLEWARE = [
        ...,
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django_clerk_sync.middleware.ClerkAuthenticationMiddleware",
        ...,
    ]

For every request it sets ``request.clerk`` (the verified :class:`SessionClaims`,
or ``None``) and ``request.clerk_rejection`` (why a token was refused, or ``None``).
A valid token makes ``request.user`` its Django user. A request without a token,
or with a token that is refused, is left as it would be without this middleware:
anonymous, unless a Django session login says otherwise. Nothing in a token can
make it raise.

It is natively sync and async: under ASGI, fetching keys (or a user, in "fetch"
mode) happens in a worker thread and database queries in Django's sync thread,
never on the event loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, cast

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest, HttpResponseBase

from .backends import (
    Authentication,
    ClerkRequest,
    aauthenticate_token,
    annotate,
    authenticate_token,
)
from .tokens import SessionTokenVerifier, get_verifier, token_from_request

if TYPE_CHECKING:
    from django.contrib.auth.models import _User

    # A sync or an async view chain, as Django hands it to middleware.
    _GetResponse = Callable[
        [HttpRequest], HttpResponseBase | Awaitable[HttpResponseBase]
    ]

__all__ = ["ClerkAuthenticationMiddleware"]


class ClerkAuthenticationMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: _GetResponse) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(
        self, request: HttpRequest
    ) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.is_async:
            return self.__acall__(request)
        verifier, token = self.prepare(request)
        if token is not None:
            self.apply(request, authenticate_token(token, verifier=verifier))
        return self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        verifier, token = self.prepare(request)
        if token is not None:
            self.apply(request, await aauthenticate_token(token, verifier=verifier))
        return await cast("Awaitable[HttpResponseBase]", self.get_response(request))

    def prepare(self, request: HttpRequest) -> tuple[SessionTokenVerifier, str | None]:
        """Mark the request as seen; return the verifier and the token (or ``None``)."""
        request = cast(ClerkRequest, request)
        request.clerk = None
        request.clerk_rejection = None
        if not hasattr(request, "user"):
            # Without AuthenticationMiddleware, views still find a user.
            request.user = AnonymousUser()
        verifier = get_verifier()
        token, _ = token_from_request(request, verifier.cookie_names)
        return verifier, token

    def apply(self, request: HttpRequest, outcome: Authentication) -> None:
        annotate(request, outcome)
        if outcome.user is None:
            return
        user = outcome.user
        request.user = user

        async def auser() -> _User:
            return user

        request.auser = auser  # Django 5.0+: await request.auser()
