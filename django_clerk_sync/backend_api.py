"""A small client for Clerk's Backend API: the users list, count and one user.

Clerk's rate limit is per instance (100 requests / 10 s on development instances,
1000 on production) and answered with 429 + ``Retry-After``; the official Python
SDK does not retry those, so this client paces itself below the limit, honours
``Retry-After``, and retries 5xx answers and timeouts with capped backoff.
"""

import http.client
import json
import math
import logging
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque

from .conf import clerk_settings

logger = logging.getLogger("django_clerk_sync.backend_api")

SECRET_KEY_PREFIXES = ("sk_test_", "sk_live_")
MAX_PAGE_SIZE = 500  # Clerk's maximum for GET /v1/users
RETRY_BACKOFF_BASE = 0.5  # seconds before the first retry of a 5xx or timeout
RETRY_BACKOFF_CAP = 30.0
RETRY_AFTER_CAP = 60.0  # a longer Retry-After is waited this long, then tried again


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # Following a redirect would send the secret key to wherever it points.
    def redirect_request(self, *args, **kwargs):
        return None


_opener = urllib.request.build_opener(_NoRedirects)


def _parse_int(digits):
    # Over 4,300 digits Python refuses to make an int: keep such a value (in a
    # user's metadata) as text rather than fail the whole page.
    return int(digits) if len(digits) <= 4000 else digits


def _parse_json(raw):
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

    def __init__(self, message, *, status=None):
        super().__init__(message)
        self.status = status


def secret_key_problem(key):
    """What is wrong with a secret key, or ``None``; never repeats the key."""
    if not isinstance(key, str) or not key:
        return "is not set"
    if not key.isascii():
        return "contains a non-ASCII character (often an invisible one pasted with it)"
    if not key.isprintable() or any(ch.isspace() for ch in key):
        return "contains whitespace or an invisible character"
    if not key.startswith(SECRET_KEY_PREFIXES):
        return "does not start with sk_test_ or sk_live_"
    return None


class _Pacer:
    """At most ``requests`` per ``seconds``: waits before a request that would exceed it."""

    def __init__(self, requests, seconds, *, clock, sleep):
        # Clerk measures its window from when requests arrive, not from when they
        # leave here: a small margin keeps the two clocks from disagreeing.
        self.requests, self.seconds = requests, seconds * 1.05 + 0.05
        self.clock, self.sleep = clock, sleep
        self.sent = deque()
        self.lock = threading.Lock()

    def wait(self):
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
        api_url=None,
        secret_key=None,
        timeout=None,
        rate_limit=None,
        max_retries=None,
        sleep=time.sleep,
        clock=time.monotonic,
    ):
        self.api_url = (api_url or clerk_settings.API_URL).rstrip("/")
        parts = urllib.parse.urlsplit(self.api_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BackendAPIError(
                f"CLERK_API_URL {self.api_url!r} is not an http(s) URL with a host "
                "(default https://api.clerk.com)"
            )
        self.secret_key = secret_key if secret_key is not None else clerk_settings.SECRET_KEY
        problem = secret_key_problem(self.secret_key)
        if problem:
            raise BackendAPIError(f"CLERK_SECRET_KEY {problem}")
        self.timeout = timeout or clerk_settings.HTTP_TIMEOUT
        requests, seconds = rate_limit or clerk_settings.API_RATE_LIMIT
        self.pacer = _Pacer(requests, seconds, clock=clock, sleep=sleep)
        retries = clerk_settings.API_MAX_RETRIES if max_retries is None else max_retries
        self.max_attempts = 1 + max(0, retries)
        self.sleep = sleep
        self.requests_sent = 0

    # Endpoints

    def list_users(self, *, limit, offset=None, order_by="+created_at", **filters):
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

    def count_users(self, **filters):
        answer = self._get("/v1/users/count", filters)
        try:
            return int(answer["total_count"])
        except (TypeError, KeyError, ValueError):
            raise BackendAPIError("GET /v1/users/count did not answer a total_count")

    def get_user(self, clerk_id):
        """One Clerk user object, or ``None`` if Clerk has no such user."""
        path = "/v1/users/" + urllib.parse.quote(clerk_id, safe="")
        try:
            return self._get(path, {})
        except BackendAPIError as error:
            if error.status == 404:
                return None
            raise

    # Transport

    def _get(self, path, params):
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
                    wait = min(retry_after if retry_after is not None else 1.0, RETRY_AFTER_CAP)
                elif 300 <= status < 400:
                    raise BackendAPIError(
                        f"GET {path} answered a redirect ({status}); set CLERK_API_URL "
                        "to the final address (redirects are not followed: they would "
                        "carry the secret key elsewhere)",
                        status=status,
                    )
                elif status >= 500:
                    wait = min(RETRY_BACKOFF_BASE * 2 ** (attempt - 1), RETRY_BACKOFF_CAP)
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
                "Clerk Backend API %s: %s; retrying in %.1f s", path, reason, wait
            )
            self.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover


def _retry_after(value):
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, seconds) if math.isfinite(seconds) else RETRY_AFTER_CAP
