"""A small client for Clerk's Backend API: the users list, count and one user.

Clerk's rate limit is per instance (100 requests / 10 s on development instances,
1000 on production) and answered with 429 + ``Retry-After``; the official Python
SDK does not retry those, so this client paces itself below the limit, honours
``Retry-After``, and retries 5xx answers and timeouts with capped backoff.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .conf import (
    DEFAULT_API_MAX_RETRIES,
    clerk_settings,
    http_url_problem,
    is_finite_number,
    max_retries_problem,
    rate_limit_problem,
)

if TYPE_CHECKING:
    from .field_map import ClerkUser

logger = logging.getLogger("django_clerk_sync.backend_api")

SECRET_KEY_PREFIXES = ("sk_test_", "sk_live_")
MAX_PAGE_SIZE = 500  # Clerk's maximum for GET /v1/users
RETRY_BACKOFF_BASE = 0.5  # seconds before the first retry of a 5xx or timeout
RETRY_BACKOFF_CAP = 30.0
RETRY_AFTER_CAP = 60.0  # a longer Retry-After is waited this long, then tried again


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # Following a redirect would send the secret key to wherever it points.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirects)


def _parse_int(digits: str) -> int | str:
    # Over 4,300 digits Python refuses to make an int: keep such a value (in a
    # user's metadata) as text rather than fail the whole page.
    return int(digits) if len(digits) <= 4000 else digits


def _parse_json(raw: bytes | str) -> Any:
    """JSON with Clerk's user-written metadata in it: deep nesting and huge numbers
    (both possible in ``unsafe_metadata``) must not make a page unreadable."""
    limit = sys.getrecursionlimit()
    try:
        return json.loads(raw, parse_int=_parse_int)
    except RecursionError:
        # Clerk caps metadata at 8 KB, so a few thousand levels at most.
        sys.setrecursionlimit(max(limit, 20_000))
        try:
            return json.loads(raw, parse_int=_parse_int)
        finally:
            sys.setrecursionlimit(limit)


class BackendAPIError(Exception):
    """A Backend API request failed for good (after any retries)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def secret_key_problem(key: object) -> str | None:
    """What is wrong with a secret key, or ``None``; never repeats the key."""
    if key is None or key == "":
        return "is not set"
    if not isinstance(key, str):
        return f"is not a string ({type(key).__name__})"
    if not key.isascii():
        return "contains a non-ASCII character (often an invisible one pasted with it)"
    if not key.isprintable() or any(ch.isspace() for ch in key):
        return "contains whitespace or an invisible character"
    if not key.startswith(SECRET_KEY_PREFIXES):
        return "does not start with sk_test_ or sk_live_"
    return None


API_URL_FIX = (
    "is not an http(s) URL with a host: set it to the Backend API base URL, "
    "https://api.clerk.com (the default), a proxy or the simulator's "
    "http://127.0.0.1:<port>"
)
SECRET_KEY_FIX = (
    "set it to the instance's secret key (Clerk dashboard -> API keys), a string "
    "starting sk_test_ or sk_live_"
)


def settings_problem() -> str | None:
    """What makes the Backend API settings unusable, as one line that names the
    setting and its fix, or ``None``: the values :class:`BackendAPI` would otherwise
    replace with defaults (it refuses a bad secret key itself).

    The middleware's "fetch" mode uses the defaults meanwhile; ``clerk_backfill``
    refuses to start, rather than run a long job with settings nobody chose.
    """
    from django.conf import settings

    value: Any = getattr(settings, "CLERK_API_URL", None)
    if value not in (None, "") and http_url_problem(value):
        return f"CLERK_API_URL {value!r} {API_URL_FIX}"
    value = getattr(settings, "CLERK_HTTP_TIMEOUT", 5)  # as check E034 reads it
    if not (is_finite_number(value) and value > 0):
        return (
            f"CLERK_HTTP_TIMEOUT must be a positive number of seconds, not {value!r}: "
            "set a number, or remove it for the default (5)"
        )
    value = getattr(settings, "CLERK_API_RATE_LIMIT", None)  # None: the default
    problem = None if value is None else rate_limit_problem(value)
    if problem:
        return (
            f"CLERK_API_RATE_LIMIT {value!r} {problem}: set (requests, seconds), "
            "e.g. (100, 10) for a development instance or (1000, 10) for production"
        )
    value = getattr(settings, "CLERK_API_MAX_RETRIES", None)
    if value is not None and max_retries_problem(value):
        return (
            f"CLERK_API_MAX_RETRIES must be a whole number, 0 or more, not {value!r}: "
            f"set one, or remove it for the default ({DEFAULT_API_MAX_RETRIES})"
        )
    return None


class _Pacer:
    """At most ``requests`` per ``seconds``: waits before a request that would exceed it."""

    def __init__(
        self,
        requests: int,
        seconds: float,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], object],
    ) -> None:
        # Clerk measures its window from when requests arrive, not from when they
        # leave here: a small margin keeps the two clocks from disagreeing.
        self.requests, self.seconds = requests, seconds * 1.05 + 0.05
        self.clock, self.sleep = clock, sleep
        self.sent: deque[float] = deque()
        self.lock = threading.Lock()

    def wait(self) -> None:
        with self.lock:
            now = self.clock()
            while self.sent and now - self.sent[0] >= self.seconds:
                self.sent.popleft()
            if len(self.sent) >= self.requests:
                self.sleep(self.seconds - (now - self.sent[0]))
                self.sent.popleft()
            self.sent.append(self.clock())


class BackendAPI:
    """``BackendAPI().list_users(limit=500, order_by="+created_at")`` and friends.

    Settings are read when the client is made: ``CLERK_API_URL``,
    ``CLERK_SECRET_KEY``, ``CLERK_HTTP_TIMEOUT``, ``CLERK_API_RATE_LIMIT``.
    """

    def __init__(
        self,
        *,
        api_url: str | None = None,
        secret_key: str | None = None,
        timeout: float | None = None,
        rate_limit: tuple[int, float] | None = None,
        max_retries: int | None = None,
        sleep: Callable[[float], object] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api_url = (api_url or clerk_settings.API_URL).rstrip("/")
        if http_url_problem(self.api_url):
            raise BackendAPIError(f"CLERK_API_URL {self.api_url!r} {API_URL_FIX}")
        self.secret_key = (
            secret_key if secret_key is not None else clerk_settings.SECRET_KEY
        )
        problem = secret_key_problem(self.secret_key)
        if problem:
            raise BackendAPIError(f"CLERK_SECRET_KEY {problem}: {SECRET_KEY_FIX}")
        self.timeout = timeout or clerk_settings.HTTP_TIMEOUT
        requests, seconds = rate_limit or clerk_settings.API_RATE_LIMIT
        self.pacer = _Pacer(requests, seconds, clock=clock, sleep=sleep)
        retries = clerk_settings.API_MAX_RETRIES if max_retries is None else max_retries
        self.max_attempts = 1 + max(0, retries)
        self.sleep = sleep
        self.requests_sent = 0

    # Endpoints

    def list_users(
        self,
        *,
        limit: int,
        offset: int | None = None,
        order_by: str = "+created_at",
        **filters: Any,
    ) -> list[ClerkUser]:
        """One page of ``GET /v1/users``: a list of Clerk user objects."""
        if not 1 <= limit <= MAX_PAGE_SIZE:
            # Clerk silently answers 10 users for an out-of-range limit.
            raise ValueError(f"limit must be 1 to {MAX_PAGE_SIZE}, not {limit}")
        params = {"limit": limit, "order_by": order_by, **filters}
        if offset:
            params["offset"] = offset
        users = self._get("/v1/users", params)
        if not isinstance(users, list):
            raise BackendAPIError("GET /v1/users did not answer a JSON array")
        return users

    def count_users(self, **filters: Any) -> int:
        answer = self._get("/v1/users/count", filters)
        try:
            return int(answer["total_count"])
        except (TypeError, KeyError, ValueError):
            raise BackendAPIError("GET /v1/users/count did not answer a total_count")

    def get_user(self, clerk_id: str) -> ClerkUser | None:
        """One Clerk user object, or ``None`` if Clerk has no such user."""
        path = "/v1/users/" + urllib.parse.quote(clerk_id, safe="")
        try:
            return self._get(path, {})
        except BackendAPIError as error:
            if error.status == 404:
                return None
            raise

    # Transport

    def _get(self, path: str, params: dict[str, Any]) -> Any:
        query = urllib.parse.urlencode(
            {k: v for k, v in params.items() if v is not None}, doseq=True
        )
        url = f"{self.api_url}{path}" + (f"?{query}" if query else "")
        request = urllib.request.Request(
            url,
            headers={
                "Authorization": f"Bearer {self.secret_key}",
                "Accept": "application/json",
                "User-Agent": "django-clerk-sync",
            },
        )
        for attempt in range(1, self.max_attempts + 1):
            self.pacer.wait()
            self.requests_sent += 1
            try:
                with _opener.open(request, timeout=self.timeout) as response:
                    return _parse_json(response.read())
            except urllib.error.HTTPError as error:
                status = error.code
                retry_after = _retry_after(error.headers.get("Retry-After"))
                error.close()
                if status == 429:
                    wait = min(
                        retry_after if retry_after is not None else 1.0, RETRY_AFTER_CAP
                    )
                elif 300 <= status < 400:
                    raise BackendAPIError(
                        f"GET {path} answered a redirect ({status}); set CLERK_API_URL "
                        "to the final address (redirects are not followed: they would "
                        "carry the secret key elsewhere)",
                        status=status,
                    )
                elif status >= 500:
                    wait = min(
                        RETRY_BACKOFF_BASE * 2 ** (attempt - 1), RETRY_BACKOFF_CAP
                    )
                else:
                    hint = {
                        401: " (check CLERK_SECRET_KEY)",
                        403: " (check CLERK_SECRET_KEY)",
                        404: " (check CLERK_API_URL: the base, without /v1)",
                    }.get(status, "")
                    raise BackendAPIError(
                        f"GET {path} answered {status}{hint}", status=status
                    )
                reason = f"HTTP {status}"
            except (
                urllib.error.URLError,
                http.client.HTTPException,
                TimeoutError,
                ConnectionError,
            ) as error:
                reason = type(getattr(error, "reason", error)).__name__
                wait = min(RETRY_BACKOFF_BASE * 2 ** (attempt - 1), RETRY_BACKOFF_CAP)
                status = None
            except ValueError:
                raise BackendAPIError(f"GET {path} did not answer JSON")
            if attempt == self.max_attempts:
                raise BackendAPIError(
                    f"GET {path} failed {attempt} times, last with {reason}",
                    status=status,
                )
            logger.info(
                "Clerk Backend API %s: %s; retrying in %.1f s",
                path,
                reason,
                wait,
                extra={
                    "path": path,
                    "reason": reason,
                    "http_status": status,
                    "attempt": attempt,
                    "retry_in": wait,
                },
            )
            self.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover


def _retry_after(value: Any) -> float | None:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, seconds) if math.isfinite(seconds) else RETRY_AFTER_CAP
