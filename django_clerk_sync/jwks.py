"""Where the keys that sign Clerk session tokens come from, and how they are cached.

Two sources:

- :class:`StaticKey`: the PEM "JWKS Public Key" of ``CLERK_JWT_KEY``. Networkless.
- :class:`RemoteKeys`: a JWKS fetched over HTTP (the Backend API's ``/v1/jwks``
  with the secret key, or the Frontend API's public ``/.well-known/jwks.json``).

``RemoteKeys`` is built to beat the official SDKs' weak spots:

- one instance per configured Clerk instance, so keys never leak between two;
- keys are used for ``ttl`` seconds, then fetched again in the background while the
  held keys go on being served (stale-while-revalidate: no request waits on a slow
  JWKS endpoint when a key for its ``kid`` is held); a failed fetch keeps the last
  good keys (stale-if-error);
- at most one fetch per ``cooldown`` seconds whatever tokens arrive: an unknown
  ``kid`` or a failing signature cannot make us hammer Clerk, and a ``kid`` that a
  fresh fetch did not have is answered "unknown" until the cooldown ends (negative
  cache), when the next fetch may find it;
- one deadline, ``timeout`` seconds, for the whole fetch (connecting, the headers
  and every read of the body: a server that drips its answer is cut off), no
  redirects (the secret key never follows one), a size cap;
- optionally a Django cache shared by every process: the keys, and the cooldown
  too. Before fetching, a process claims the fetch with an atomic ``cache.add``
  that expires with the cooldown; the one that wins fetches and shares the keys,
  the others wait for its answer (at most ``timeout`` seconds) and adopt it, so
  however many processes need keys, there is one fetch per cooldown. A cache that
  errors is skipped (per-process behaviour), with a warning at most once a minute.

Nothing here blocks on the network unless asked to: a lookup that would need a
fetch raises :class:`NeedsNetwork` when called with ``network=False``, so the async
middleware can do the fetch in a worker thread instead of on the event loop.
"""

import base64
import hashlib
import http.client
import json
import logging
import math
import secrets
import socket
import threading
import time
import urllib.error
import urllib.request

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey, RSAPublicNumbers

from .conf import http_url_problem

logger = logging.getLogger("django_clerk_sync.jwks")

MIN_RSA_KEY_SIZE = 2048
MAX_JWKS_BYTES = 1024 * 1024
MAX_UNKNOWN_KIDS = 1024
_READ_SIZE = 16 * 1024
#: Seconds between two warnings about an unusable shared cache (per key source).
SHARED_CACHE_WARNING_INTERVAL = 60.0
#: The longest pause between two looks at the shared cache while another process
#: fetches.
_MAX_POLL_PAUSE = 0.1


class NeedsNetwork(Exception):
    """The answer needs a fetch, and the caller asked for none (``network=False``)."""


class KeyNotFound(Exception):
    """No key for this ``kid``: unknown, or no keys could be had at all."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason  # "unknown_key" or "keys_unavailable"


class InvalidKey(ValueError):
    """Text or a JWK that is not a usable RSA public key; the message says why."""


def load_pem_public_key(text):
    """An RSA public key from PEM text, as ``CLERK_JWT_KEY`` holds it.

    Accepts the literal ``\\n`` form pasted into environment files. Raises
    :class:`InvalidKey` with a reason fit for a system check (never the text).
    """
    if not isinstance(text, str):
        raise InvalidKey(f"is not a string ({type(text).__name__})")
    if not text.strip():
        raise InvalidKey("is empty")
    text = text.strip().strip("\"'").replace("\\r", "").replace("\\n", "\n")
    if "PRIVATE KEY" in text:
        raise InvalidKey(
            "is a private key: paste the PEM public key, never the private one"
        )
    if "BEGIN CERTIFICATE" in text:
        raise InvalidKey("is a certificate, not a public key")
    try:
        key = serialization.load_pem_public_key(text.encode("utf-8"))
    except (ValueError, TypeError, UnicodeError):
        # cryptography's texts vary by version; ours say what to do.
        raise InvalidKey("is not a PEM public key (-----BEGIN PUBLIC KEY----- ...)")
    except Exception as exc:  # e.g. an unsupported key type in some versions
        raise InvalidKey(f"cannot be loaded ({type(exc).__name__})")
    return check_rsa_key(key)


def check_rsa_key(key):
    if not isinstance(key, RSAPublicKey):
        raise InvalidKey(
            f"is not an RSA public key ({type(key).__name__.lstrip('_')}); Clerk signs "
            "session tokens with RS256"
        )
    if key.key_size < MIN_RSA_KEY_SIZE:
        raise InvalidKey(f"is a {key.key_size}-bit RSA key; at least 2048 bits needed")
    return key


def _b64url_int(value):
    if not isinstance(value, str) or not value:
        raise InvalidKey("n or e missing")
    data = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    return int.from_bytes(data, "big")


def key_from_jwk(jwk):
    """An RSA public key from one JWK dict; raises :class:`InvalidKey`."""
    if not isinstance(jwk, dict):
        raise InvalidKey("not an object")
    if jwk.get("kty") != "RSA":
        raise InvalidKey("kty is not RSA")
    if jwk.get("use") not in (None, "sig") or jwk.get("alg") not in (None, "RS256"):
        raise InvalidKey("not an RS256 signing key")
    try:
        numbers = RSAPublicNumbers(_b64url_int(jwk.get("e")), _b64url_int(jwk.get("n")))
        key = numbers.public_key()
    except (ValueError, TypeError) as exc:
        raise InvalidKey(f"unusable numbers ({type(exc).__name__})")
    return check_rsa_key(key)


def same_key(a, b):
    return a is b or (
        a is not None and b is not None and a.public_numbers() == b.public_numbers()
    )


class StaticKey:
    """One key for every token (``CLERK_JWT_KEY``): nothing to fetch or refresh."""

    description = "CLERK_JWT_KEY"

    def __init__(self, key):
        self.key = key

    def key_for(self, kid, *, network=True):
        return self.key

    def current(self, kid):
        return self.key

    def key_after_bad_signature(self, kid, failed_key, *, network=True):
        return None

    def settle(self, timeout=None):
        return True


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A redirect would carry the Authorization header (the secret key) elsewhere.
    def redirect_request(self, *args, **kwargs):
        return None


class _Deadline:
    """One deadline for a whole fetch: every socket the fetch opens is shut down when
    it passes, which ends a read blocked on a server that drips its answer."""

    def __init__(self, seconds):
        self.at = time.monotonic() + seconds
        self._sockets = []
        self._lock = threading.Lock()
        self._passed = False
        self._timer = threading.Timer(seconds, self._cut)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self):
        return self.at - time.monotonic()

    def watch(self, sock):
        with self._lock:
            if not self._passed:
                self._sockets.append(sock)
                return
        self._shutdown(sock)

    def _cut(self):
        with self._lock:
            self._passed = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            self._shutdown(sock)

    @staticmethod
    def _shutdown(sock):
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def cancel(self):
        self._timer.cancel()


def _watched(connection_class, deadline):
    # A base chosen at run time, which mypy cannot follow.
    class Connection(connection_class):  # type: ignore[valid-type,misc]
        def connect(self):
            super().connect()
            deadline.watch(self.sock)

    return Connection


class _DeadlineHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline):
        super().__init__()
        self._deadline = deadline

    def http_open(self, req):
        return self.do_open(_watched(http.client.HTTPConnection, self._deadline), req)


class _DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline):
        super().__init__()
        self._deadline = deadline

    def https_open(self, req):
        return self.do_open(
            _watched(http.client.HTTPSConnection, self._deadline),
            req,
            context=self._context,  # type: ignore[attr-defined]  # HTTPSHandler's own
        )


class _DeadlinePassed(Exception):
    pass


class _InSavepoint:
    """A ``DatabaseCache`` whose calls each run in a savepoint: inside a request's
    transaction (``ATOMIC_REQUESTS``, a DRF view) a failing cache query would
    otherwise abort the request's transaction, and the request would fail after."""

    def __init__(self, cache):
        from django.db import router

        self._cache = cache
        self._using = router.db_for_write(cache.cache_model_class)

    def __getattr__(self, name):
        method = getattr(self._cache, name)

        def call(*args, **kwargs):
            from django.db import transaction

            with transaction.atomic(using=self._using):
                return method(*args, **kwargs)

        return call


class RemoteKeys:
    """A JWKS fetched from ``url``, cached in this object (and optionally in a Django
    cache shared by all processes, named by ``shared_cache``).

    ``headers`` go with every fetch (``Authorization`` for the Backend API).
    ``clock`` returns Unix seconds; tests may replace it.
    """

    def __init__(
        self,
        url,
        *,
        headers=None,
        timeout=5.0,
        ttl=300.0,
        cooldown=10.0,
        shared_cache=None,
        clock=time.time,
    ):
        self.url = url
        self.description = url
        self.headers = dict(headers or {})
        self.timeout = timeout
        self.ttl = ttl
        self.cooldown = cooldown
        self.shared_cache = shared_cache  # a Django cache alias, or None
        self.clock = clock
        self._keys = None  # {kid: key} from the last good fetch; None before one
        self._fetched_at = None  # when those keys were fetched (Unix seconds)
        # The last fetch attempt this process goes by, its own or (shared cache)
        # another process's: the cooldown runs from it.
        self._last_attempt = None
        self._generation = 0  # bumped by every attempt: lets waiters skip a fetch
        self._unknown = {}  # kid -> until when it is known to be unknown
        self._lock = threading.Lock()
        self._background = threading.Lock()  # held while a background refresh runs
        self._cache_warned_at = None  # monotonic time of the last cache warning
        self._cache_failures = 0  # cache failures since that warning
        # Keyed by URL and credentials, never by kid (Clerk's kid is the instance
        # id, so two instances look alike); the secret itself is only hashed.
        identity = f"{url}\0{self.headers.get('Authorization', '')}"
        digest = hashlib.sha256(identity.encode()).hexdigest()[:32]
        self._shared_key = f"django_clerk_sync:jwks:{digest}"  # the keys
        self._claim_key = f"django_clerk_sync:jwks-claim:{digest}"  # who fetches
        self._result_key = f"django_clerk_sync:jwks-result:{digest}"  # how it ended

    # -- lookups

    def current(self, kid):
        """The key now held for ``kid``, or ``None``; never fetches."""
        keys = self._keys
        return keys.get(kid) if keys is not None else None

    def _may_fetch(self, now):
        last = self._last_attempt
        return last is None or now - last >= self.cooldown or now < last

    def _fresh(self):
        return (
            self._fetched_at is not None and self.clock() - self._fetched_at < self.ttl
        )

    def key_for(self, kid, *, network=True):
        """The key for ``kid``. A held key is returned at once, even past the TTL
        (a refresh then starts in the background, one at a time). Keys missing, or
        lacking ``kid``, are fetched in the caller's thread (within the cooldown).
        Raises :class:`KeyNotFound` or, with ``network=False`` when that fetch is
        due, :class:`NeedsNetwork`."""
        now = self.clock()
        keys = self._keys
        if keys is not None:
            key = keys.get(kid)
            if key is not None:
                if now - self._fetched_at >= self.ttl and self._may_fetch(now):
                    self._refresh_in_background()
                return key
            until = self._unknown.get(kid)
            if (until is not None and now < until) or not self._may_fetch(now):
                raise KeyNotFound("unknown_key")
        elif not self._may_fetch(now):
            raise KeyNotFound("keys_unavailable")
        if not network:
            raise NeedsNetwork()
        self._refresh(lambda: self.current(kid) is not None)
        keys = self._keys
        if keys is None:
            raise KeyNotFound("keys_unavailable")
        key = keys.get(kid)
        if key is None:
            self._remember_unknown(kid)
            raise KeyNotFound("unknown_key")
        return key

    def key_after_bad_signature(self, kid, failed_key, *, network=True):
        """A different key for ``kid`` after a fetch (Clerk's ``kid`` is the instance
        id, so a rotated key can keep it), or ``None``. One fetch per cooldown."""

        def another_key():
            key = self.current(kid)
            return key if key is not None and not same_key(key, failed_key) else None

        now = self.clock()
        if another_key() is not None:
            return another_key()  # another request already fetched the new key
        if not self._may_fetch(now):
            return None
        if not network:
            raise NeedsNetwork()
        self._refresh(lambda: another_key() is not None)
        return another_key()

    def _remember_unknown(self, kid):
        now = self.clock()
        if len(self._unknown) >= MAX_UNKNOWN_KIDS:
            self._unknown = {k: t for k, t in self._unknown.items() if t > now}
            if len(self._unknown) >= MAX_UNKNOWN_KIDS:
                return  # the cooldown alone still bounds the fetches
        # Until the cooldown ends: the next allowed fetch may find the kid.
        last = self._last_attempt
        self._unknown[kid] = (now if last is None else last) + self.cooldown

    # -- fetching

    def _refresh_in_background(self):
        """Start one refresh in a daemon thread, unless one is already running."""
        if not self._background.acquire(blocking=False):
            return

        def run():
            try:
                self._refresh(self._fresh)
            except Exception:  # pragma: no cover - _fetch catches what it expects
                logger.exception(
                    "Refreshing Clerk's JWKS from %s failed",
                    self.url,
                    extra={"url": self.url, "outcome": "failed"},
                )
            finally:
                self._background.release()

        try:
            threading.Thread(
                target=run, name="django_clerk_sync JWKS refresh", daemon=True
            ).start()
        except RuntimeError:  # no thread to be had (interpreter shutting down)
            self._background.release()

    def settle(self, timeout=None):
        """Wait until no background refresh is running (for tests); returns whether
        none is."""
        if self._background.acquire(timeout=-1 if timeout is None else timeout):
            self._background.release()
            return True
        return False

    def _refresh(self, satisfied):
        """Bring the keys up to date, once per cooldown; ``satisfied()`` says whether
        keys another process shared answer the caller's need without a fetch."""
        generation = self._generation
        with self._lock:
            if self._generation != generation:
                return  # another thread fetched while this one waited
            attempted_at = None
            try:
                attempted_at = self._update(satisfied)
            finally:
                now = self.clock()
                # Out of range: another host's clock, or keys fetched long ago
                # (adopted within their TTL); the cooldown then starts now.
                if (
                    attempted_at is None
                    or not now - self.cooldown <= attempted_at <= now
                ):
                    attempted_at = now
                self._last_attempt = attempted_at
                self._generation += 1

    def _update(self, satisfied):
        """Fetch, or with a shared cache adopt, claim and fetch, or wait for the
        process that claimed the fetch. Returns when the fetch this process goes by
        was attempted, if it was another process's."""
        if not self.shared_cache:
            self._fetch()
            return None
        claim = None
        try:
            cache = self._shared()
            fetched_at = self._adopt_shared(cache)
            if fetched_at is not None and satisfied():
                return fetched_at
            if self.cooldown > 0:
                # An atomic add: of all processes, one wins the fetch for this
                # cooldown; the claim expires with it, so a winner that dies
                # blocks no one for longer.
                claim = {"at": self.clock(), "id": secrets.token_hex(8)}
                if not cache.add(self._claim_key, claim, timeout=self._claim_ttl()):
                    return self._await_other_fetch(cache)
        except Exception as exc:  # a cache that errors must never fail a request
            self._cache_unusable(exc, "fetching")
            self._fetch()
            return None
        self._share(cache, self._fetch(), claim)
        return None

    def _claim_ttl(self):
        # Cache timeouts are whole seconds (Redis, memcached).
        return max(1, math.ceil(self.cooldown))

    def _await_other_fetch(self, cache):
        """Another process claimed this cooldown's fetch: wait for it to end, at most
        ``timeout`` seconds (its own fetch is cut off then), and adopt the keys it
        shared. Returns when the claim was made: this process's cooldown ends with
        it."""
        deadline = time.monotonic() + self.timeout
        pause = 0.01
        while True:
            found = cache.get_many([self._claim_key, self._result_key])
            claim, result = found.get(self._claim_key), found.get(self._result_key)
            if not isinstance(claim, dict):
                break  # it expired meanwhile
            if isinstance(result, dict) and result.get("claim") == claim.get("id"):
                break  # the fetch ended, well or not
            left = deadline - time.monotonic()
            if left <= 0:
                break  # the claimant is stuck or gone
            time.sleep(min(pause, left))
            pause = min(2 * pause, _MAX_POLL_PAUSE)
        self._adopt_shared(cache)
        at = claim.get("at") if isinstance(claim, dict) else None
        return at if isinstance(at, (int, float)) else None

    def _install(self, keys, fetched_at):
        # Keep the key objects that did not change, so tokens verified with them
        # stay cached across a refresh.
        old = self._keys or {}
        merged = {
            kid: old[kid] if same_key(old.get(kid), key) else key
            for kid, key in keys.items()
        }
        self._keys = merged
        self._fetched_at = fetched_at
        self._unknown = {k: t for k, t in self._unknown.items() if k not in merged}

    def _fetch(self):
        """Fetch and install the keys; returns the JWKS document, or ``None`` when
        the fetch failed (the keys held are kept)."""
        problem = http_url_problem(self.url)
        if problem:
            # Only http(s): urllib would also open file:// and ftp:// URLs.
            return self._failed(
                f"the URL {problem} (check CLERK_JWKS_URL, or CLERK_API_URL)"
            )
        deadline = _Deadline(self.timeout)
        try:
            request = urllib.request.Request(
                self.url,
                headers={
                    "Accept": "application/json",
                    "User-Agent": "django-clerk-sync",
                    **self.headers,
                },
            )
            opener = urllib.request.build_opener(
                _NoRedirect,
                _DeadlineHTTPHandler(deadline),
                _DeadlineHTTPSHandler(deadline),
            )
            with opener.open(request, timeout=self.timeout) as response:
                body = self._read(response, deadline)
        except urllib.error.HTTPError as error:
            error.close()
            hint = " (check CLERK_SECRET_KEY)" if error.code in (401, 403) else ""
            return self._failed(f"HTTP {error.code}{hint}")
        except Exception as exc:  # URLError, timeouts, resets, bad status lines
            if deadline.remaining() <= 0:
                return self._failed(f"no full answer within {self.timeout:g} s")
            reason = getattr(exc, "reason", exc)
            return self._failed(type(reason).__name__)
        finally:
            deadline.cancel()
        if len(body) > MAX_JWKS_BYTES:
            return self._failed("answer larger than 1 MiB")
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            return self._failed("answer is not JSON")
        keys = self._parse(document)
        if not keys:
            return self._failed("no usable RS256 key in the answer")
        self._install(keys, self.clock())
        logger.info(
            "Fetched %d signing key(s) from %s",
            len(keys),
            self.url,
            extra={"url": self.url, "outcome": "fetched", "keys": len(keys)},
        )
        return document

    @staticmethod
    def _read(response, deadline):
        """The body, at most ``MAX_JWKS_BYTES + 1`` bytes, before the deadline."""
        chunks, size = [], 0
        while size <= MAX_JWKS_BYTES:
            if deadline.remaining() <= 0:
                raise _DeadlinePassed()
            chunk = response.read1(min(_READ_SIZE, MAX_JWKS_BYTES + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if deadline.remaining() <= 0:
            raise _DeadlinePassed()  # the read ended because the deadline cut it
        return b"".join(chunks)

    def _failed(self, reason):
        held = "keeping the keys fetched before" if self._keys else "no keys yet"
        logger.warning(
            "Fetching Clerk's JWKS from %s failed: %s; %s",
            self.url,
            reason,
            held,
            extra={
                "url": self.url,
                "outcome": "failed",
                "reason": reason,
                "keys_held": bool(self._keys),
            },
        )
        return None

    @staticmethod
    def _parse(document):
        entries = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            return {}
        keys = {}
        for entry in entries:
            try:
                key = key_from_jwk(entry)
            except InvalidKey:
                continue  # another algorithm, or malformed: skip it, keep the rest
            kid = entry.get("kid")
            keys[kid if isinstance(kid, str) else None] = key
        return keys

    # -- the optional cache shared by all processes

    def _shared(self):
        from django.core.cache import caches
        from django.core.cache.backends.db import DatabaseCache

        cache = caches[self.shared_cache]
        return _InSavepoint(cache) if isinstance(cache, DatabaseCache) else cache

    def _adopt_shared(self, cache):
        """Use the shared keys if another process fetched them more recently than
        this one did, within the TTL. Returns when they were fetched, if adopted.
        Cache errors propagate."""
        entry = cache.get(self._shared_key)
        if not isinstance(entry, dict):
            return None
        fetched_at = entry.get("fetched_at")
        if not isinstance(fetched_at, (int, float)):
            return None
        if not self.clock() - fetched_at < self.ttl:
            return None
        if self._fetched_at is not None and fetched_at <= self._fetched_at:
            return None  # the same keys this process already has
        keys = self._parse(entry.get("jwks"))
        if not keys:
            return None
        self._install(keys, fetched_at)
        logger.debug(
            "Using the signing keys another process fetched from %s",
            self.url,
            extra={"url": self.url, "outcome": "adopted", "keys": len(keys)},
        )
        return fetched_at

    def _share(self, cache, document, claim):
        """After this process's fetch: the keys for the others, and how the claimed
        fetch ended, so that processes waiting for it stop waiting."""
        try:
            if document is not None:
                cache.set(
                    self._shared_key,
                    {"jwks": document, "fetched_at": self._fetched_at},
                    timeout=max(1, math.ceil(self.ttl)),
                )
            if claim is not None:
                cache.set(
                    self._result_key,
                    {"claim": claim["id"], "ok": document is not None},
                    timeout=self._claim_ttl(),
                )
        except Exception as exc:
            self._cache_unusable(exc)

    def _cache_unusable(self, exc, doing=""):
        """Warn, by exception type only, at most once per
        ``SHARED_CACHE_WARNING_INTERVAL``: a broken cache is met by every process
        once per cooldown, which is no reason for a line each time."""
        self._cache_failures += 1
        now = time.monotonic()
        last = self._cache_warned_at
        if last is not None and 0 <= now - last < SHARED_CACHE_WARNING_INTERVAL:
            return
        more = self._cache_failures - 1
        logger.warning(
            "JWKS shared cache unusable (%s)%s (CLERK_JWKS_CACHE %r%s)",
            type(exc).__name__,
            f"; {doing}" if doing else "",
            self.shared_cache,
            f"; {more} more failure(s) since the last warning" if more else "",
            extra={
                "cache": self.shared_cache,
                "error": type(exc).__name__,
                "failures": more + 1,
            },
        )
        self._cache_warned_at = now
        self._cache_failures = 0
