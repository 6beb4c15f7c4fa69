"""Clerk session tokens for Django REST Framework.

Install the extra: ``pip install django-clerk-sync[drf]``.

::

    REST_FRAMEWORK = {
        "DEFAULT_AUTHENTICATION_CLASSES": [
            "django_clerk_sync.contrib.drf.ClerkAuthentication",
        ],
    }

``request.user`` is the token's Django user and ``request.auth`` its
:class:`~django_clerk_sync.tokens.SessionClaims`. A request without a token is not
authenticated by this class (the next class, or anonymous), and neither is one whose
``__session`` cookie is refused (often just stale). A refused Bearer token is
answered 401 with ``WWW-Authenticate: Bearer error="invalid_token",
error_description="<reason>"`` and the body ``{"detail": ..., "code": "<reason>"}``.

When ``ClerkAuthenticationMiddleware`` already ran, its result is reused: the token
is not verified twice. A token from the ``__session`` cookie is subject to Django's
CSRF check on unsafe methods (403 without a valid CSRF token), as DRF's
``SessionAuthentication`` is; a Bearer header token is not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn, cast

from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, SessionAuthentication

from ..backends import annotate, authenticate_token
from ..tokens import token_from_request

if TYPE_CHECKING:
    from rest_framework.request import Request

    from ..backends import ClerkRequest
    from ..tokens import SessionClaims

    class _DRFRequest(ClerkRequest):
        _clerk_drf_reason: str | None

    # What authenticate() answers: (user, claims), or None for "not this class".
    _Answer = tuple[Any, SessionClaims | None] | None

__all__ = ["ClerkAuthentication"]

MESSAGES: dict[str, str] = {
    "not_configured": "Clerk session tokens are not configured on this server.",
    "malformed": "The token is not a well-formed JWT.",
    "unsupported_algorithm": "The token is not signed with RS256.",
    "not_a_session_token": "The token is not a Clerk session token.",
    "unknown_key": "The token is signed with an unknown key.",
    "keys_unavailable": "Clerk's signing keys are unavailable; try again.",
    "bad_signature": "The token's signature is invalid.",
    "missing_claim": "The token lacks a required claim.",
    "invalid_claim": "The token has an invalid claim.",
    "wrong_issuer": "The token was issued by another Clerk instance.",
    "expired": "The token has expired.",
    "not_yet_valid": "The token is not valid yet.",
    "issued_in_future": "The token is issued in the future.",
    "wrong_party": "The token was minted for another origin.",
    "missing_party": "The token names no authorized party.",
    "pending_session": "The session is pending.",
    "user_deleted": "The user has been deleted.",
    "user_inactive": "The user is inactive.",
    "user_unknown": "The user is unknown.",
    "user_deleted_locally": "The user was deleted on this server.",
    "user_fetch_failed": "The user could not be fetched from Clerk; try again.",
    "user_sync_failed": "The user could not be created; try again.",
}


class ClerkAuthentication(BaseAuthentication):
    www_authenticate_realm = "api"

    def authenticate(self, request: Request) -> _Answer:
        django_request = cast("_DRFRequest", request._request)
        token, where = token_from_request(django_request)
        if hasattr(django_request, "clerk_rejection"):  # the middleware ran
            if django_request.clerk is not None:
                self.enforce_csrf_for_cookies(request, where)
                return django_request.user, django_request.clerk
            if django_request.clerk_rejection is None:
                return None  # no token
            return self.refuse(django_request, django_request.clerk_rejection, where)
        if token is None:
            return None
        outcome = authenticate_token(token)
        annotate(django_request, outcome)
        if outcome.user is None:
            return self.refuse(django_request, outcome.reason, where)
        self.enforce_csrf_for_cookies(request, where)
        return outcome.user, outcome.session

    def enforce_csrf_for_cookies(self, request: Request, where: str | None) -> None:
        """A token the browser sends by itself (the ``__session`` cookie) is as
        forgeable by another site as a session cookie: DRF marks its views
        csrf_exempt, so check CSRF here, as DRF's SessionAuthentication does. A
        Bearer header cannot be sent by another site and needs no check."""
        if where == "cookie":
            SessionAuthentication().enforce_csrf(request)

    def refuse(
        self, django_request: _DRFRequest, reason: str | None, where: str | None
    ) -> _Answer:
        if where == "cookie":
            # A stale __session cookie (the browser refreshes it every ~50 s) must
            # not shut out the next class, e.g. a Django session login.
            django_request._clerk_drf_reason = reason
            return None
        self.fail(django_request, reason)

    def fail(self, django_request: _DRFRequest, reason: str | None) -> NoReturn:
        django_request._clerk_drf_reason = reason
        raise exceptions.AuthenticationFailed(
            {"detail": MESSAGES.get(reason or "", "Invalid token."), "code": reason},
            code=reason,
        )

    def authenticate_header(self, request: Request) -> str:
        header = f'Bearer realm="{self.www_authenticate_realm}"'
        reason = getattr(request._request, "_clerk_drf_reason", None)
        if reason:
            header += f', error="invalid_token", error_description="{reason}"'
        return header
