"""From a verified session token to a Django user, and Django's authentication backend.

:func:`authenticate_token` (and its async twin) is what the middleware, the
backend and the DRF class share: verify the token, then find the user behind it.

- A linked user is found by the token's ``sub`` in one indexed query.
- A tombstoned (deleted) Clerk id, or an inactive Django user, is not let in.
- A Clerk user seen for the first time (its ``user.created`` webhook has not
  arrived yet: Clerk's sync is eventually consistent) is created through the one
  sync path, keyed on ``sub``, so the webhook later updates the same user
  (``CLERK_SYNC_FIRST_SIGHT`` chooses "create", "fetch" or "off").
- A Clerk id whose Django user was deleted locally (its link is kept, without a
  user) is not let in, and no token recreates the user: only the sync path (a
  webhook, the backfill) may.
- In "fetch" mode, Clerk's "no such user" is remembered per Clerk id for
  ``CLERK_JWKS_REFETCH_COOLDOWN`` seconds, and concurrent first sights of one id
  share one Backend API call: a burst of tokens cannot hammer the Backend API.
"""

from __future__ import annotations

import copy
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

from asgiref.sync import sync_to_async
from django.contrib.auth.backends import ModelBackend
from django.core.exceptions import ObjectDoesNotExist
from django.http import HttpRequest

from . import jwks
from .conf import clerk_settings
from .tokens import (
    Reason,
    SessionClaims,
    SessionTokenVerifier,
    TokenRejected,
    get_verifier,
)

if TYPE_CHECKING:
    from django.contrib.auth.models import _User

    from .field_map import ClerkUser
    from .models import ClerkUserLink

    # What a first-sight fetch came to: the Clerk user, False for "Clerk has none",
    # or a Reason code.
    _Fetched = ClerkUser | Literal[False] | str

logger = logging.getLogger("django_clerk_sync.auth")

FIRST_SIGHT_MODES = ("create", "fetch", "off")


@dataclass(frozen=True)
class Authentication:
    """What a token came to: a ``user`` and its ``session`` claims, or a ``reason``."""

    user: _User | None = None
    session: SessionClaims | None = None
    reason: str | None = None


class ClerkRequest(HttpRequest):
    """For type annotations: a request that ``ClerkAuthenticationMiddleware`` (or
    the backend, or the DRF class) has seen. ``def view(request: ClerkRequest)``."""

    clerk: SessionClaims | None
    clerk_rejection: str | None


class _NeedsFetch(Exception):
    """First sight in "fetch" mode: the Clerk user must be fetched (network I/O)."""


def _reject(reason: str, detail: str, clerk_id: str | None = None) -> Authentication:
    logger.debug(
        "Clerk session token rejected: %s (%s)%s",
        reason,
        detail,
        f" for Clerk user {clerk_id}" if clerk_id else "",
        extra={
            "reason": str(reason),
            "detail": detail,
            "clerk_id": clerk_id,
            "outcome": "rejected",
        },
    )
    return Authentication(reason=reason)


def _first_sight_clerk_user(clerk_id: str) -> ClerkUser:
    """A Clerk user object that knows only its id.

    No ``updated_at``: the real ``user.created`` that follows is never taken for
    stale, whatever its time.
    """
    return {
        "id": clerk_id,
        "object": "user",
        "email_addresses": [],
        "phone_numbers": [],
        "web3_wallets": [],
        "external_accounts": [],
        "primary_email_address_id": None,
        "primary_phone_number_id": None,
        "primary_web3_wallet_id": None,
        "username": None,
        "first_name": None,
        "last_name": None,
        "image_url": "",
        "has_image": False,
        "external_id": None,
        "public_metadata": {},
        "private_metadata": {},
        "unsafe_metadata": {},
        "created_at": None,
        "updated_at": None,
        "last_sign_in_at": None,
    }


def _fetch_clerk_user(clerk_id: str) -> ClerkUser | None:
    """The Clerk user from the Backend API; ``None`` if Clerk has none.

    No retries: a request is waiting. Raises ``BackendAPIError``.
    """
    from .backend_api import BackendAPI

    return BackendAPI(max_retries=0).get_user(clerk_id)


def _linked_user(clerk_id: str) -> ClerkUserLink | None:
    from .models import ClerkUserLink

    links = list(
        ClerkUserLink.objects.select_related("user").filter(clerk_id=clerk_id)[:1]
    )
    return links[0] if links else None


def _user_can_authenticate(user: object) -> bool:
    return getattr(user, "is_active", True) is not False


def _resolve(
    session: SessionClaims, *, fetched: _Fetched | None = None
) -> tuple[Any, str | None]:
    """The user for verified ``session`` claims: ``(user, None)`` or ``(None, reason)``.

    Database work only, except that "fetch" mode raises :class:`_NeedsFetch` when
    ``fetched`` (the Clerk user, or ``False`` for "Clerk has none") is not given.
    """
    from . import sync

    clerk_id = session.user_id
    link = _linked_user(clerk_id)
    if link is not None:
        if link.is_tombstone:
            return None, Reason.USER_DELETED
        if link.user is None:
            # Deleted locally (the link outlived its user): an operator's decision
            # that a token must not undo; a webhook or the backfill may.
            return None, Reason.USER_DELETED_LOCALLY
    if link is None:
        mode = clerk_settings.SYNC_FIRST_SIGHT
        if mode == "fetch":
            if fetched is None:
                raise _NeedsFetch()
            if fetched is False:
                return None, Reason.USER_UNKNOWN
            clerk_user = fetched
        elif mode == "create":
            clerk_user = _first_sight_clerk_user(clerk_id)
        else:
            return None, Reason.USER_UNKNOWN
        if not isinstance(clerk_user, dict) or clerk_user.get("id") != clerk_id:
            return None, Reason.USER_FETCH_FAILED
        try:
            result = sync.sync_user(clerk_user, source="middleware")
        except sync.SignalReceiverError:
            # The user was committed; a receiver of clerk_user_synced failed.
            logger.warning(
                "Clerk user %s: a clerk_user_synced receiver raised",
                clerk_id,
                extra={"clerk_id": clerk_id, "source": "middleware"},
            )
            link = _linked_user(clerk_id)
            user = link.user if link is not None and not link.is_tombstone else None
        except Exception as exc:
            # A conflict, the database, or the project's field map (a source that
            # raises, a map system checks flag): the request goes on anonymous.
            logger.warning(
                "Clerk user %s could not be created on first sight (%s)",
                clerk_id,
                type(exc).__name__,
                extra={
                    "clerk_id": clerk_id,
                    "source": "middleware",
                    "reason": Reason.USER_SYNC_FAILED,
                    "error": type(exc).__name__,
                },
            )
            return None, Reason.USER_SYNC_FAILED
        else:
            if result.outcome == sync.TOMBSTONED:
                return None, Reason.USER_DELETED
            user = result.user
        if user is None:
            return None, Reason.USER_UNKNOWN
    else:
        user = link.user
    if not _user_can_authenticate(user):
        return None, Reason.USER_INACTIVE
    return user, None


class _FirstSightFetches:
    """ "fetch" mode's guard against a storm of Backend API calls: Clerk's "no such
    user" is remembered per Clerk id for ``cooldown`` seconds (a token outlives
    its user by up to a minute), and the requests that arrive while an id is being
    fetched wait for that one call instead of making their own."""

    MAX_REMEMBERED = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # clerk id -> until when Clerk is known not to have it
        self._unknown: dict[str, float] = {}
        self._in_flight: dict[str, list[Any]] = {}  # clerk id -> [Event, result]

    def fetch(
        self, clerk_id: str, *, now: float, cooldown: float, wait: float
    ) -> _Fetched:
        with self._lock:
            until = self._unknown.get(clerk_id)
            if until is not None:
                if now < until and now >= until - cooldown:
                    return False
                del self._unknown[clerk_id]
            call: Any = self._in_flight.get(clerk_id)
            leading = call is None
            if leading:
                call = self._in_flight[clerk_id] = [threading.Event(), None]
        if not leading:
            done = call[0].wait(wait)
            result = call[1] if done else None
            if result is None:
                return Reason.USER_FETCH_FAILED
            # The sync path gets its own copy of the user object.
            return copy.deepcopy(result) if isinstance(result, dict) else result
        result = Reason.USER_FETCH_FAILED
        try:
            result = _fetch_for_first_sight(clerk_id)
        finally:
            with self._lock:
                if result is False and cooldown > 0:
                    if len(self._unknown) >= self.MAX_REMEMBERED:
                        self._unknown = {
                            k: t for k, t in self._unknown.items() if t > now
                        }
                    if len(self._unknown) < self.MAX_REMEMBERED:
                        self._unknown[clerk_id] = now + cooldown
                del self._in_flight[clerk_id]
            call[1] = result
            call[0].set()
        return result


def _seconds(value: Any, default: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return default  # system check E034 names the mistake
    return value if 0 <= value < float("inf") else default


def _fetch_once(session: SessionClaims, verifier: SessionTokenVerifier) -> _Fetched:
    """``fetched`` for :func:`_resolve` through the verifier's :class:`_FirstSightFetches`
    (one per configured instance, dropped with the verifier)."""
    fetches = getattr(verifier, "_first_sight_fetches", None)
    if fetches is None:
        fetches = verifier._first_sight_fetches = _FirstSightFetches()
    return fetches.fetch(
        session.user_id,
        now=verifier.clock(),
        cooldown=_seconds(clerk_settings.JWKS_REFETCH_COOLDOWN, 10.0),
        wait=_seconds(clerk_settings.HTTP_TIMEOUT, 5.0) + 1.0,
    )


def _fetch_for_first_sight(clerk_id: str) -> _Fetched:
    """``fetched`` for :func:`_resolve`: the Clerk user, ``False``, or a reason."""
    from .backend_api import BackendAPIError

    try:
        clerk_user = _fetch_clerk_user(clerk_id)
    except BackendAPIError as exc:
        logger.warning(
            "Clerk user %s could not be fetched on first sight (status %s)",
            clerk_id,
            exc.status,
            extra={
                "clerk_id": clerk_id,
                "source": "middleware",
                "reason": Reason.USER_FETCH_FAILED,
                "http_status": exc.status,
            },
        )
        return Reason.USER_FETCH_FAILED
    return False if clerk_user is None else clerk_user


def _outcome(session: SessionClaims, user: Any, reason: str | None) -> Authentication:
    if reason is not None:
        return _reject(reason, "the user behind the token", session.user_id)
    return Authentication(user=user, session=session)


def authenticate_token(
    token: str, *, verifier: SessionTokenVerifier | None = None
) -> Authentication:
    """Verify ``token`` and find its user; never raises for anything in the token."""
    verifier = verifier or get_verifier()
    try:
        session = verifier.verify(token)
    except TokenRejected as rejected:
        return _reject(rejected.reason, rejected.detail, rejected.clerk_id)
    try:
        user, reason = _resolve(session)
    except _NeedsFetch:
        fetched = _fetch_once(session, verifier)
        if isinstance(fetched, str):
            return _reject(fetched, "Backend API", session.user_id)
        user, reason = _resolve(session, fetched=fetched)
    return _outcome(session, user, reason)


async def aauthenticate_token(
    token: str, *, verifier: SessionTokenVerifier | None = None
) -> Authentication:
    """:func:`authenticate_token` for async code: a fetch of keys or of a user runs in
    a worker thread, the database in Django's sync thread; the event loop never
    waits on either."""
    verifier = verifier or get_verifier()
    try:
        try:
            session = verifier.verify(token, network=False)
        except jwks.NeedsNetwork:
            session = await sync_to_async(verifier.verify, thread_sensitive=False)(
                token
            )
    except TokenRejected as rejected:
        return _reject(rejected.reason, rejected.detail, rejected.clerk_id)
    resolve = sync_to_async(_resolve)
    try:
        user, reason = await resolve(session)
    except _NeedsFetch:
        fetched = await sync_to_async(_fetch_once, thread_sensitive=False)(
            session, verifier
        )
        if isinstance(fetched, str):
            return _reject(fetched, "Backend API", session.user_id)
        user, reason = await resolve(session, fetched=fetched)
    return _outcome(session, user, reason)


def annotate(request: HttpRequest, outcome: Authentication) -> None:
    """Put an :class:`Authentication` on a Django request: ``request.clerk`` (the
    claims, or ``None``) and ``request.clerk_rejection`` (a reason code, or ``None``).
    """
    request = cast(ClerkRequest, request)
    request.clerk = outcome.session if outcome.user is not None else None
    request.clerk_rejection = outcome.reason


class ClerkBackend(ModelBackend):
    """``authenticate(request, clerk_token=token)`` returns the token's user, so that
    ``login()`` can start a Django session from a Clerk sign-in.

    Permissions work as with ``ModelBackend``. A user restored from the session is
    refused once inactive or deleted in Clerk (tombstoned).
    """

    # Takes a token, not ModelBackend's username and password (as Django's own
    # RemoteUserBackend takes remote_user).
    def authenticate(  # type: ignore[override]
        self,
        request: HttpRequest | None,
        clerk_token: str | None = None,
        **kwargs: Any,
    ) -> _User | None:
        if clerk_token is None:
            return None
        outcome = authenticate_token(clerk_token)
        if request is not None:
            annotate(request, outcome)
        return outcome.user

    def get_user(self, user_id: Any) -> _User | None:
        from django.contrib.auth import get_user_model

        user_model = get_user_model()
        try:
            user = user_model._default_manager.select_related("clerk_link").get(
                pk=user_id
            )
        except (user_model.DoesNotExist, ValueError, TypeError):
            return None
        try:
            if user.clerk_link.is_tombstone:
                return None
        except ObjectDoesNotExist:
            pass  # a local user outside Clerk
        return user if self.user_can_authenticate(user) else None
