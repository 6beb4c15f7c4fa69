"""The package's settings, read from ``django.conf.settings`` on every access.

Nothing here is computed at import time, so ``override_settings`` (in tests) and
settings changed at run time take effect at once.
"""

from __future__ import annotations

import base64
import binascii
import math
import urllib.parse
from collections.abc import Callable
from typing import Any

from django.conf import settings as django_settings

#: The default ``CLERK_SYNC_FIELD_MAP``, trimmed to the fields the user model has.
DEFAULT_FIELD_MAP_SOURCES = {
    "email": "primary_email",
    "first_name": "first_name",
    "last_name": "last_name",
    "username": "username",
}

DELETE_POLICIES = ("deactivate", "delete")

DEFAULT_API_URL = "https://api.clerk.com"
DEFAULT_API_RATE_LIMIT = (100, 10)
DEFAULT_API_MAX_RETRIES = 5

PROCESSING_MODES = ("inline", "django_tasks", "celery")
ENQUEUE_FAILURE_POLICIES = ("retry", "inline")
DEFAULT_TASK_BACKEND = "default"
DEFAULT_SWEEP_AFTER = 600
#: Ten years: a longer threshold is a mistake (and past what dates can subtract).
MAX_SWEEP_AFTER = 10 * 365 * 86400
DEFAULT_TASK_MAX_ATTEMPTS = 8
DEFAULT_TASK_RETRY_DELAY = 30


class ClerkSyncSettings:
    @property
    def WEBHOOK_SECRETS(self) -> list[str]:
        """``CLERK_WEBHOOK_SECRET``: the endpoint's signing secret(s) from the Clerk
        dashboard (``whsec_...``). A string, or a list of strings while rotating a
        secret or receiving from several Clerk instances; a delivery signed with any
        of them is accepted. Default: unset (every delivery is refused with 503, as
        it is when the value is of another type)."""
        value = getattr(django_settings, "CLERK_WEBHOOK_SECRET", None)
        if value is None or value == "":
            return []
        if isinstance(value, str):
            return [value]
        if isinstance(value, (list, tuple)):
            return list(value)
        return []  # no usable secret (system check E001 names the mistake)

    @property
    def FIELD_MAP(self) -> dict[str, Any]:
        """``CLERK_SYNC_FIELD_MAP``: ``{user model field: source}``. A source is a
        computed name (``primary_email``, ``primary_phone``, ``full_name``,
        ``image_url``), a dotted path into the Clerk user JSON
        (``"public_metadata.plan"``), a callable taking the Clerk user dict, or a
        ``"module.path:function"`` string naming one. Setting it replaces the default
        entirely. Clerk's millisecond times (``"created_at"``) written to a date or
        datetime field are converted (UTC); ``None`` written to a non-null text field
        becomes ``""``. Default: primary email, first name, last name and username, for
        whichever of those fields the user model has."""
        value = getattr(django_settings, "CLERK_SYNC_FIELD_MAP", None)
        if value is not None:
            return dict(value)
        from django.contrib.auth import get_user_model

        user_model = get_user_model()
        fields = {f.name for f in user_model._meta.get_fields()}
        defaults = dict(DEFAULT_FIELD_MAP_SOURCES)
        # Custom models name their email and login fields as they like.
        defaults[user_model.get_email_field_name()] = defaults.pop("email")
        username_field = user_model.USERNAME_FIELD
        if username_field != user_model.get_email_field_name():
            defaults[username_field] = defaults.pop("username")
        return {field: source for field, source in defaults.items() if field in fields}

    @property
    def ON_DELETE(self) -> str | Callable[..., Any]:
        """``CLERK_SYNC_ON_DELETE``: what a ``user.deleted`` does to the Django user.
        ``"deactivate"`` (default: ``is_active=False``, nothing lost), ``"delete"``,
        or a callable (or ``"module.path:function"``) called with the user."""
        return getattr(django_settings, "CLERK_SYNC_ON_DELETE", "deactivate")

    # Clerk's Backend API (shared by the backfill, the middleware's "fetch" mode and
    # its JWKS source).

    @property
    def API_URL(self) -> str:
        """``CLERK_API_URL``: the Backend API base URL, for a proxy or the Clerk
        simulator. Default ``"https://api.clerk.com"``, also used while the value is
        not a string (system check E040 names the mistake)."""
        value = getattr(django_settings, "CLERK_API_URL", None)
        if not isinstance(value, str) or not value.strip():
            return DEFAULT_API_URL
        return value.strip().rstrip("/")

    @property
    def SECRET_KEY(self) -> str:
        """``CLERK_SECRET_KEY``: the instance's Backend API secret key
        (``sk_test_...`` / ``sk_live_...``). Default: unset."""
        return getattr(django_settings, "CLERK_SECRET_KEY", None) or ""

    @property
    def HTTP_TIMEOUT(self) -> float:
        """``CLERK_HTTP_TIMEOUT``: seconds to wait for Clerk's servers on one request.
        Default 5."""
        return _number(
            getattr(django_settings, "CLERK_HTTP_TIMEOUT", 5), 5, positive=True
        )

    @property
    def API_RATE_LIMIT(self) -> tuple[int, float]:
        """``CLERK_API_RATE_LIMIT``: ``(requests, seconds)``: the most Backend API
        requests this process sends per window. Default ``(100, 10)``, a development
        instance's limit; production instances allow ``(1000, 10)``. The default is
        used while the value is unusable (system check E043 names the mistake)."""
        value = getattr(django_settings, "CLERK_API_RATE_LIMIT", DEFAULT_API_RATE_LIMIT)
        if rate_limit_problem(value):
            value = DEFAULT_API_RATE_LIMIT
        requests, seconds = value
        return int(requests), float(seconds)

    @property
    def API_MAX_RETRIES(self) -> int:
        """``CLERK_API_MAX_RETRIES``: how often one Backend API request is retried
        after a 429, a 5xx or a timeout before the backfill gives up (it keeps what
        it applied and prints how to resume). Default 5, also used while the value is
        not a non-negative integer (system check E044 names the mistake)."""
        value = getattr(
            django_settings, "CLERK_API_MAX_RETRIES", DEFAULT_API_MAX_RETRIES
        )
        return DEFAULT_API_MAX_RETRIES if max_retries_problem(value) else value

    # Session tokens (the middleware, the authentication backend, DRF).

    @property
    def PUBLISHABLE_KEY(self) -> str:
        """``CLERK_PUBLISHABLE_KEY``: the instance's publishable key
        (``pk_test_...`` / ``pk_live_...``). It encodes the Frontend API host, which
        gives the issuer tokens must carry (``https://<host>``), the public JWKS URL,
        and the name of the suffixed ``__session_<suffix>`` cookie. Default: unset."""
        value = getattr(django_settings, "CLERK_PUBLISHABLE_KEY", None)
        return value.strip() if isinstance(value, str) else ""

    @property
    def JWT_KEY(self) -> Any:
        """``CLERK_JWT_KEY``: the PEM "JWKS Public Key" from the dashboard (API keys
        page). When set, tokens are verified with it alone, networkless: no JWKS is
        fetched. The literal ``\\n`` form that environment files often hold is
        accepted. Default: unset."""
        value = getattr(django_settings, "CLERK_JWT_KEY", None)
        if value is None or (isinstance(value, str) and not value.strip()):
            return ""
        if not isinstance(value, str):
            return value  # unusable: every token is refused, and check E030 says why
        return value.strip().strip("\"'").replace("\\r", "").replace("\\n", "\n")

    @property
    def AUTHORIZED_PARTIES(self) -> list[str]:
        """``CLERK_AUTHORIZED_PARTIES``: the origins (``"https://app.example.com"``)
        allowed to have minted a token, compared with its ``azp`` claim. Empty (the
        default) accepts any ``azp``; system check W030 warns about that."""
        value = getattr(django_settings, "CLERK_AUTHORIZED_PARTIES", None) or ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple, set, frozenset)):
            # Unusable (check E036 says why): fail closed with an allow-list no
            # token's azp can match, never open with an empty one.
            return [INVALID_SETTING]
        return [p.rstrip("/") for p in value if isinstance(p, str) and p]

    @property
    def ACCEPT_TOKENS_WITHOUT_AZP(self) -> bool:
        """``CLERK_ACCEPT_TOKENS_WITHOUT_AZP``: whether a token with no ``azp`` claim
        is accepted. Clerk leaves ``azp`` out of tokens minted without an ``Origin``
        header: on top-level navigations (the handshake that refreshes the
        ``__session`` cookie) and by the Backend API. Default ``True``; set ``False``
        to accept only tokens that name an authorized party."""
        return _flag(getattr(django_settings, "CLERK_ACCEPT_TOKENS_WITHOUT_AZP", True))

    @property
    def JWT_ISSUER(self) -> str:
        """``CLERK_JWT_ISSUER``: the exact ``iss`` tokens must carry (the Frontend API
        URL, ``https://clerk.example.com`` or ``https://<slug>.clerk.accounts.dev``).
        Default: derived from ``CLERK_PUBLISHABLE_KEY``; ``""`` when neither is set,
        and then every token is rejected (system check E032). A value that is not a
        string is ignored (system check E042)."""
        value = getattr(django_settings, "CLERK_JWT_ISSUER", None)
        if isinstance(value, str) and value.strip():
            return value.strip().rstrip("/")
        host = frontend_api_host(self.PUBLISHABLE_KEY)
        return f"https://{host}" if host else ""

    @property
    def JWKS_URL(self) -> str:
        """``CLERK_JWKS_URL``: where to fetch the signing keys. Default: the Backend
        API's ``{CLERK_API_URL}/v1/jwks`` when ``CLERK_SECRET_KEY`` is set, otherwise
        the public ``{issuer}/.well-known/jwks.json``. The secret key is only ever
        sent to the Backend API URL. Not used when ``CLERK_JWT_KEY`` is set. A value
        that is not a string is ignored, and one that is not an http(s) URL makes
        every fetch fail (system check E041 names either mistake)."""
        value = getattr(django_settings, "CLERK_JWKS_URL", None)
        if isinstance(value, str) and value.strip():
            return value.strip()
        if self.SECRET_KEY:
            return f"{self.API_URL}/v1/jwks"
        issuer = self.JWT_ISSUER
        return f"{issuer}/.well-known/jwks.json" if issuer else ""

    @property
    def JWT_LEEWAY(self) -> float:
        """``CLERK_JWT_LEEWAY``: seconds of clock skew tolerated on ``exp``, ``nbf``
        and ``iat``. Default 5, as Clerk's SDKs."""
        return _number(getattr(django_settings, "CLERK_JWT_LEEWAY", 5), 5)

    @property
    def ALLOW_PENDING_SESSIONS(self) -> bool:
        """``CLERK_ALLOW_PENDING_SESSIONS``: accept tokens of sessions whose ``sts``
        is ``"pending"`` (signed in, but a required step such as choosing an
        organization is not done). Default ``False``: they are rejected."""
        return _flag(getattr(django_settings, "CLERK_ALLOW_PENDING_SESSIONS", False))

    @property
    def JWKS_CACHE_TTL(self) -> float:
        """``CLERK_JWKS_CACHE_TTL``: seconds fetched signing keys are used before they
        are fetched again. Default 300, as Clerk's SDKs. A failed refresh keeps
        the keys in use."""
        return _number(
            getattr(django_settings, "CLERK_JWKS_CACHE_TTL", 300), 300, positive=True
        )

    @property
    def JWKS_REFETCH_COOLDOWN(self) -> float:
        """``CLERK_JWKS_REFETCH_COOLDOWN``: the least number of seconds between two
        fetches of the signing keys, whatever tokens arrive (an unknown ``kid``, a
        signature that fails, a failed fetch); 0 turns it off. Default 10. With
        ``CLERK_JWKS_CACHE`` it holds across all processes (whole seconds)."""
        return _number(getattr(django_settings, "CLERK_JWKS_REFETCH_COOLDOWN", 10), 10)

    @property
    def JWKS_CACHE(self) -> str | None:
        """``CLERK_JWKS_CACHE``: the alias of a Django cache (``CACHES``) shared by
        all processes, through which they share the keys and the refetch cooldown:
        one fetch per cooldown however many workers need keys. Default ``None``:
        each process keeps its own, as it does while the value is not an alias of
        ``CACHES`` (system check E045). A cache that errors is skipped."""
        value = getattr(django_settings, "CLERK_JWKS_CACHE", None)
        return None if not value or jwks_cache_problem(value) else value

    @property
    def SYNC_FIRST_SIGHT(self) -> str:
        """``CLERK_SYNC_FIRST_SIGHT``: what a valid token for a Clerk user that has no
        Django user yet does. ``"create"`` (default): create it through the sync path
        from the token's user id; the ``user.created`` webhook fills in the rest.
        ``"fetch"``: fetch the full user from the Backend API first (needs
        ``CLERK_SECRET_KEY``). ``"off"``: the request stays anonymous."""
        return getattr(django_settings, "CLERK_SYNC_FIRST_SIGHT", "create")

    # Deferred processing (processing.py, tasks.py, clerk_sweep_events).

    @property
    def PROCESSING(self) -> str:
        """``CLERK_SYNC_PROCESSING``: how a stored event is processed. ``"inline"``
        (default): in the webhook request. ``"django_tasks"``: by a task of Django's
        tasks framework (``django.tasks`` on Django 6, the ``django-tasks`` package
        before). ``"celery"``: by a Celery task. In both deferred modes the webhook
        answers 202 once the event is stored and enqueued. While the value is none of
        these, events are processed inline (system check E050 names the mistake)."""
        value = getattr(django_settings, "CLERK_SYNC_PROCESSING", "inline")
        return value if value in PROCESSING_MODES else "inline"

    @property
    def ENQUEUE_FAILURE(self) -> str:
        """``CLERK_SYNC_ENQUEUE_FAILURE``: what the webhook does when a deferred mode
        cannot enqueue a stored event (the queue is down). ``"retry"`` (default):
        answer 503, so Svix delivers it again; the event stays stored as
        ``received``. ``"inline"``: process it in the request instead. An unknown
        value counts as ``"retry"`` (system check E054)."""
        value = getattr(django_settings, "CLERK_SYNC_ENQUEUE_FAILURE", "retry")
        return value if value in ENQUEUE_FAILURE_POLICIES else "retry"

    @property
    def TASK_QUEUE(self) -> str | None:
        """``CLERK_SYNC_TASK_QUEUE``: the queue the processing task is sent to, for
        either engine. Default ``None``: the engine's default queue (``"default"``
        for Django tasks; Celery's ``task_default_queue`` or its routes). A value
        that is not a non-empty string is ignored (system check E055)."""
        value = getattr(django_settings, "CLERK_SYNC_TASK_QUEUE", None)
        return value if isinstance(value, str) and value else None

    @property
    def TASK_BACKEND(self) -> str:
        """``CLERK_SYNC_TASK_BACKEND``: the alias in ``TASKS`` whose backend runs the
        processing task in ``"django_tasks"`` mode. Default ``"default"``, also used
        while the value is not a non-empty string (system check E053)."""
        value = getattr(django_settings, "CLERK_SYNC_TASK_BACKEND", None)
        return value if isinstance(value, str) and value else DEFAULT_TASK_BACKEND

    @property
    def SWEEP_AFTER(self) -> float:
        """``CLERK_SYNC_SWEEP_AFTER``: seconds after which ``clerk_sweep_events``
        takes an event still ``received`` (its task was lost) or failed with a
        transient error to be stuck, and enqueues it again. Default 600; keep it above
        the longest backlog the workers clear in a burst. ``--older-than`` overrides
        it (system check E056 names an unusable value)."""
        value = _number(
            getattr(django_settings, "CLERK_SYNC_SWEEP_AFTER", DEFAULT_SWEEP_AFTER),
            DEFAULT_SWEEP_AFTER,
        )
        return value if value <= MAX_SWEEP_AFTER else DEFAULT_SWEEP_AFTER

    @property
    def TASK_MAX_ATTEMPTS(self) -> int:
        """``CLERK_SYNC_TASK_MAX_ATTEMPTS``: how many attempts a worker (and the
        sweep) makes at an event that fails with a transient error before leaving it
        ``failed`` for ``clerk_replay_events --failed``. Default 8 (about an hour of
        retries with the default delay), also used while the value is not a whole
        number, 1 or more (system check E056)."""
        value = getattr(
            django_settings, "CLERK_SYNC_TASK_MAX_ATTEMPTS", DEFAULT_TASK_MAX_ATTEMPTS
        )
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            return DEFAULT_TASK_MAX_ATTEMPTS
        return value

    @property
    def TASK_RETRY_DELAY(self) -> float:
        """``CLERK_SYNC_TASK_RETRY_DELAY``: seconds before a worker retries an event
        after its first transient failure; each later retry waits twice as long (at
        most an hour), give or take a fifth so a burst of failures does not come back
        at once. Default 30, also used while the value is not a number, 0 or more
        (system check E056)."""
        return _number(
            getattr(
                django_settings, "CLERK_SYNC_TASK_RETRY_DELAY", DEFAULT_TASK_RETRY_DELAY
            ),
            DEFAULT_TASK_RETRY_DELAY,
        )


INVALID_SETTING = "invalid:setting"


def _flag(value: object) -> bool:
    """A security switch: only ``True`` itself turns it on. ``"False"`` from an
    environment variable would be truthy; check E039 names the mistake."""
    return value is True


def _number(value: Any, default: float, *, positive: bool = False) -> float:
    usable = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value > 0 if positive else value >= 0)
    )
    return float(value) if usable else default  # system check E034 names the mistake


# What makes a value unusable: shared by the properties above (which then fall back),
# the system checks (which name the mistake) and clerk_backfill (which refuses to run).


def http_url_problem(value: object) -> str | None:
    """Why ``value`` is not an http(s) URL with a host, or ``None``."""
    if not isinstance(value, str):
        return f"is not a string ({type(value).__name__})"
    value = value.strip()
    if any(ch.isspace() for ch in value) or not value.isprintable():
        return "is not an http(s) URL (it contains whitespace)"
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 (raises ValueError for a malformed port)
    except ValueError:
        return "is not a well-formed URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "is not an http(s) URL with a host"
    return None


def rate_limit_problem(value: object) -> str | None:
    """Why ``value`` is not a ``(requests, seconds)`` pair, or ``None``."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        return "is not a pair (requests, seconds)"
    requests, seconds = value
    if not isinstance(requests, int) or isinstance(requests, bool) or requests < 1:
        return "does not allow a whole number of requests, 1 or more"
    if not is_finite_number(seconds) or seconds <= 0:
        return "does not have a window of a positive number of seconds"
    return None


def max_retries_problem(value: object) -> str | None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        return "is not a whole number, 0 or more"
    return None


def jwks_cache_problem(value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        return "is not the alias of a cache (a non-empty string)"
    caches = getattr(django_settings, "CACHES", None)
    if not isinstance(caches, dict) or value not in caches:
        return "is not an alias in CACHES"
    return None


def is_finite_number(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def frontend_api_host(publishable_key: object) -> str:
    """The Frontend API host a publishable key encodes, or ``""``.

    The key is ``pk_test_`` / ``pk_live_`` then base64 of ``"<host>$"``.
    """
    if not isinstance(publishable_key, str):
        return ""
    prefix, sep, encoded = publishable_key.partition("_")
    kind, sep2, encoded = encoded.partition("_")
    if prefix != "pk" or kind not in ("test", "live") or not sep or not sep2:
        return ""
    try:
        decoded = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        text = decoded.decode("ascii")
    except (binascii.Error, ValueError):
        return ""
    if not text.endswith("$"):
        return ""
    host = text[:-1]
    if not host or not host.isprintable() or any(c in host for c in "/?#@ \\"):
        return ""
    return host


clerk_settings = ClerkSyncSettings()
