"""A stand-in for Clerk on loopback: Backend API, JWKS, session tokens and webhooks.

``ClerkSimulator`` is a small, real HTTP server (the standard library's
``ThreadingHTTPServer`` in a background thread) that answers the way Clerk does,
quirks included, so the backfill command, the session-token middleware, the demo
and your own tests can run against something that speaks HTTP without a network
or a Clerk account::

    from django_clerk_sync.simulator import ClerkSimulator

    with ClerkSimulator(secret_key="sk_test_simulator") as sim:
        sim.add_users(25, seed=0)                   # Clerk-shaped users, a realistic mix
        settings.CLERK_API_URL = sim.url            # "http://127.0.0.1:<port>"
        settings.CLERK_SECRET_KEY = sim.secret_key
        token = sim.mint_session_token(sim.users[0]["id"])   # verifies against sim.jwks_url

What it serves (every body is JSON, every error Clerk-shaped:
``{"errors": [{"message", "long_message", "code", "meta"}], "clerk_trace_id"}``):

==========================  ======================================================
``GET /v1/users``           a bare JSON array of User objects. ``limit`` (1..500,
                            default 10; anything else silently gives 10, as Clerk
                            does), ``offset``, ``order_by`` (``[+-]created_at``,
                            default ``-created_at``: newest first),
                            ``created_at_after`` / ``created_at_before`` (ms,
                            strict), ``starting_after=<user id>`` (cursor; not with
                            ``offset``), ``user_id`` / ``user_id[]``.
``GET /v1/users/count``     ``{"object": "total_count", "total_count": N}``, same
                            filters.
``GET /v1/users/<id>``      the user, or 404.
``GET /v1/jwks``            the public keys (secret key required, never rate-limited).
``GET /.well-known/jwks.json``  the same keys, public: the Frontend API's path.
==========================  ======================================================

``/v1/*`` needs ``Authorization: Bearer <secret_key>`` (401 otherwise) and is
rate-limited (429 with ``Retry-After`` in whole seconds) except ``/v1/jwks``.
Anything else is a 404.

Faults for tests: ``fail_next(n, status)`` (5xx, or a 429 storm), ``delay``
(a slow server), ``available = False`` (connections dropped unanswered).
Every request is recorded in ``requests`` so tests can assert how many were made.

From the command line (prints the URL, the issuer, the keys and the PEM for
``CLERK_JWT_KEY``, then serves until Ctrl-C)::

    python -m django_clerk_sync.simulator --port 8765 --users 25 --rate-limit 100/10

Options: ``--port`` (default 8765; 0 picks a free one), ``--users`` (how many
users to create, default 25), ``--seed``, ``--rate-limit N/SECONDS`` or ``none``,
``--secret-key``, ``--quiet`` (do not log each request).

The simulator is for tests and local development only: it binds to loopback,
keeps everything in memory and has no persistence.
"""

from __future__ import annotations

import argparse
import base64
import bisect
import hmac
import json
import math
import random
import secrets as _secrets
import socket
import sys
import threading
import time
from collections import deque, namedtuple
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .testing import clerk_user, deleted_user, deliver, event

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import (
        RSAPrivateKey,
        RSAPublicKey,
    )

    # An answer: (status, body, extra headers).
    _Answer = tuple[int, bytes, dict[str, str]]

__all__ = ["ClerkSimulator", "RecordedRequest"]

# The ``cat`` header Clerk puts on session tokens (JWT-template tokens carry another).
SESSION_TOKEN_CAT = "cl_B7d4PD111AAA"

DEFAULT_LIMIT = 10
MAX_LIMIT = 500
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

RecordedRequest = namedtuple("RecordedRequest", "method path query status")
RecordedRequest.__doc__ = """One request the simulator saw.

``query`` maps each parameter to a string, or to a list of strings when it was
repeated (``user_id[]=a&user_id[]=b``). ``status`` is ``None`` for a request that
was dropped unanswered because ``available`` was ``False``.
"""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_uint(number: int) -> str:
    return _b64url(number.to_bytes((number.bit_length() + 7) // 8, "big"))


def _now_ms() -> int:
    return int(time.time() * 1000)


def _random_id(prefix: str, rng: random.Random | None = None) -> str:
    """Clerk-looking ids: a prefix, a ``2`` and 26 base62 characters (27 in all)."""
    if rng is None:
        return prefix + "2" + "".join(_secrets.choice(BASE62) for _ in range(26))
    return prefix + "2" + "".join(rng.choices(BASE62, k=26))


def _load_private_key(key: Any) -> Any:
    if isinstance(key, (str, bytes)):
        data = key.encode("ascii") if isinstance(key, str) else key
        return serialization.load_pem_private_key(data, password=None)
    return key


def _clerk_error(code: str, message: str, long_message: str, **meta: Any) -> bytes:
    """The error body Clerk's Backend API answers with, as bytes."""
    body = {
        "errors": [
            {
                "message": message,
                "long_message": long_message,
                "code": code,
                "meta": meta,
            }
        ],
        "clerk_trace_id": _secrets.token_hex(16),
    }
    return json.dumps(body).encode("utf-8")


class _ClientError(Exception):
    """A request the simulator answers with a Clerk-shaped 4xx."""

    def __init__(
        self, status: int, code: str, message: str, long_message: str, **meta: Any
    ) -> None:
        super().__init__(long_message)
        self.status = status
        self.body = _clerk_error(code, message, long_message, **meta)


# The error Clerk answers each status with (for 401, 404, 429 and injected faults).
_STATUS_ERRORS = {
    400: ("bad_request", "Bad request", "The request was malformed."),
    401: (
        "authentication_invalid",
        "Invalid authentication",
        "Unable to authenticate the request, you need to supply an active key",
    ),
    403: ("authorization_invalid", "Unauthorized request", "You are not authorized."),
    404: ("resource_not_found", "not found", "Resource not found"),
    429: ("too_many_requests", "Too many requests", "Too many requests, retry later"),
    500: (
        "internal_clerk_error",
        "Oops, an unexpected error occurred",
        "There was an internal error on our servers. We've been notified and are "
        "working on fixing it.",
    ),
    502: ("bad_gateway", "Bad gateway", "Bad gateway, retry later"),
    503: (
        "service_unavailable",
        "Service unavailable",
        "The service is temporarily unavailable, retry later",
    ),
    504: ("gateway_timeout", "Gateway timeout", "Gateway timeout, retry later"),
}


def _error_for_status(status: int) -> bytes:
    code, message, long_message = _STATUS_ERRORS.get(
        status, ("unexpected_error", "Unexpected error", f"HTTP {status}")
    )
    return _clerk_error(code, message, long_message)


class _Server(ThreadingHTTPServer):
    # Request threads are tracked and joined by server_close(), so stop() leaves
    # nothing running (ThreadingHTTPServer's default daemon threads are never joined).
    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True
    # socketserver's default backlog of 5 makes a burst of clients wait a SYN retry (1 s).
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], simulator: ClerkSimulator) -> None:
        self.simulator = simulator
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-answer is not an error worth a traceback.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so stop() never waits on an idle
    # keep-alive connection. The timeout bounds a client that connects and says nothing.
    protocol_version = "HTTP/1.0"
    timeout = 5
    server_version = "ClerkSimulator"
    sys_version = ""
    server: _Server

    def do_GET(self) -> None:
        self.server.simulator._serve(self)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def send_error(
        self, code: int, message: str | None = None, explain: str | None = None
    ) -> None:
        # Malformed request lines, unknown methods: JSON like every other answer.
        try:
            self.close_connection = True
            body = _error_for_status(code)
            self.send_response(code, message)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.simulator.log_requests:
            sys.stderr.write(
                "{} - {}\n".format(time.strftime("%H:%M:%S"), format % args)
            )


class ClerkSimulator:
    """A fake Clerk instance on ``127.0.0.1``: see the module docstring.

    ``secret_key``: the Backend API key it accepts. ``rate_limit``: ``(requests,
    seconds)`` allowed on ``/v1/*`` in any sliding window, or ``None``.
    ``instance_id``: the instance id, which is also the signing key's ``kid``, as at
    Clerk. ``port``: 0 picks a free port. ``private_key``: an RSA private key to
    start with (default: a fresh RSA-2048 key).
    """

    def __init__(
        self,
        secret_key: str = "sk_test_simulator",
        rate_limit: tuple[int, float] | None = (100, 10.0),
        instance_id: str = "ins_2simulator000000000000000",
        *,
        port: int = 0,
        private_key: RSAPrivateKey | str | bytes | None = None,
    ) -> None:
        self.secret_key = secret_key
        self.rate_limit = rate_limit
        self.instance_id = instance_id
        self.delay = 0.0
        self.available = True
        self.log_requests = False

        self._port = port
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

        # Users are stored as JSON bytes: responses are joined without re-encoding
        # (fast enough for 100,000 users), and callers never hold a live reference.
        # sorted (created_at, id): the created_at ordering
        self._keys: list[tuple[int, str]] = []
        self._json: dict[str, bytes] = {}  # id -> serialised user
        # id -> (created_at, id), so a cursor survives a delete
        self._deleted_keys: dict[str, tuple[int, str]] = {}
        self._clock = 0  # last created_at handed out by default, strictly increasing
        self._serial = 0  # makes generated emails, usernames and phones unique

        self._requests: list[RecordedRequest] = []
        self._faults: list[
            list[Any]
        ] = []  # [remaining, status, path_prefix, retry_after]
        # monotonic times of rate-limited requests let through
        self._accepted: deque[float] = deque()

        self._kid = instance_id
        self._rotations = 0
        self.private_key: RSAPrivateKey = _load_private_key(
            private_key
        ) or rsa.generate_private_key(public_exponent=65537, key_size=2048)

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> ClerkSimulator:
        """Bind ``127.0.0.1`` (a free port unless one was given) and serve in a thread."""
        if self._server is not None:
            raise RuntimeError("This ClerkSimulator is already running.")
        self._stopping.clear()
        self._server = _Server(("127.0.0.1", self._port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"ClerkSimulator:{self._server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the socket and join every thread. Safe to call twice."""
        server, thread = self._server, self._thread
        if server is None or thread is None:  # both are set, or neither
            return
        self._stopping.set()  # cuts short any response waiting on ``delay``
        server.shutdown()
        server.server_close()  # joins the request threads
        thread.join()
        self._server = self._thread = None

    def __enter__(self) -> ClerkSimulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(
                "The ClerkSimulator is not running: call start() or use `with sim:`."
            )
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """The Backend API base: ``CLERK_API_URL = sim.url``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def issuer(self) -> str:
        """The ``iss`` of minted tokens. Clerk's is its Frontend API URL; here the
        same server plays that part."""
        return self.url

    @property
    def jwks_url(self) -> str:
        """The public JWKS, at the Frontend API path."""
        return self.issuer + "/.well-known/jwks.json"

    @property
    def publishable_key(self) -> str:
        # Clerk's encoding: the prefix, then standard base64 (padded) of "<host>$".
        host = self.issuer.split("://", 1)[1]
        return "pk_test_" + base64.b64encode(f"{host}$".encode("ascii")).decode("ascii")

    # ---------------------------------------------------------------- users

    def add_user(
        self, clerk_id: str | dict[str, Any] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """Store a user and return it (a copy).

        ``kwargs`` are those of ``testing.clerk_user`` (``email=``, ``phone=``,
        ``username=``, ``created_at=``, any other User key...). ``clerk_id`` may also
        be a whole User dict, for example a captured payload's ``data``.
        """
        with self._lock:
            if isinstance(clerk_id, dict):
                user = dict(clerk_id, **kwargs)
            else:
                if kwargs.get("created_at") is None:
                    kwargs["created_at"] = self._next_created_at()
                user = clerk_user(clerk_id, **kwargs)
            self._store_new(user)
            return json.loads(self._json[user["id"]])

    def add_users(
        self, n: int, *, seed: int = 0, **kwargs: Any
    ) -> list[dict[str, Any]]:
        """Add ``n`` users with the mix a real instance has, and return them.

        About half have one email; others several emails (the primary is not always
        the first), a phone and no email, or only a username. Usernames are set or
        ``null``, names may be missing or non-ASCII, some ``image_url`` are empty and
        some ``private_metadata`` is ``null``. The same ``seed`` gives the same users
        (ids, emails, names); ``created_at`` comes from the simulator's clock unless
        ``created_at=`` is given, then it is the first user's and each next one is
        1 ms later. Other ``kwargs`` override keys of every user.
        """
        rng = random.Random(seed)
        start = kwargs.pop("created_at", None)
        with self._lock:
            added = []
            for index in range(n):
                created_at = start + index if start is not None else None
                user = self._generated_user(rng, created_at)
                user.update(kwargs)
                self._store_new(user)  # stores a serialised copy
                added.append(user)
            return added

    def update_user(self, clerk_id: str, **changes: Any) -> dict[str, Any]:
        """Change keys of a stored user and bump its ``updated_at`` (unless given).

        ``email=`` is a shortcut that changes the primary email address.
        """
        with self._lock:
            user = self._get(clerk_id)
            if user is None:
                raise KeyError(f"The simulator has no user {clerk_id!r}.")
            if "email" in changes:
                self._set_primary_email(user, changes.pop("email"))
            user.update(changes)
            if "updated_at" not in changes:
                user["updated_at"] = max(_now_ms(), (user.get("updated_at") or 0) + 1)
            self._json[clerk_id] = self._dumps(user)
            return user

    def delete_user(self, clerk_id: str) -> dict[str, Any]:
        """Remove a user; returns the ``data`` of the matching ``user.deleted``."""
        with self._lock:
            if clerk_id not in self._json:
                raise KeyError(f"The simulator has no user {clerk_id!r}.")
            user = json.loads(self._json.pop(clerk_id))
            key = (user["created_at"], clerk_id)
            self._keys.pop(bisect.bisect_left(self._keys, key))
            self._deleted_keys[clerk_id] = key
            return deleted_user(clerk_id)

    def get_user(self, clerk_id: str) -> dict[str, Any] | None:
        """The stored user (a copy), or ``None``."""
        with self._lock:
            return self._get(clerk_id)

    @property
    def users(self) -> list[dict[str, Any]]:
        """Every current user (copies), oldest first."""
        with self._lock:
            return [json.loads(self._json[clerk_id]) for _, clerk_id in self._keys]

    def _get(self, clerk_id: str) -> dict[str, Any] | None:
        data = self._json.get(clerk_id)
        return json.loads(data) if data is not None else None

    def _next_created_at(self) -> int:
        # Strictly increasing even within one millisecond, so the order is deterministic.
        self._clock = max(_now_ms(), self._clock + 1)
        return self._clock

    @staticmethod
    def _dumps(user: dict[str, Any]) -> bytes:
        return json.dumps(user, ensure_ascii=False, separators=(",", ":")).encode(
            "utf-8"
        )

    def _store_new(self, user: dict[str, Any]) -> None:
        clerk_id, created_at = user.get("id"), user.get("created_at")
        if not isinstance(clerk_id, str) or not isinstance(created_at, int):
            raise ValueError("A user needs a string 'id' and an integer 'created_at'.")
        if clerk_id in self._json:
            raise ValueError(f"The simulator already has a user {clerk_id!r}.")
        self._clock = max(self._clock, created_at)
        bisect.insort(self._keys, (created_at, clerk_id))
        self._deleted_keys.pop(clerk_id, None)
        self._json[clerk_id] = self._dumps(user)

    def _set_primary_email(self, user: dict[str, Any], address: str | None) -> None:
        emails = user.setdefault("email_addresses", [])
        primary = next(
            (e for e in emails if e.get("id") == user.get("primary_email_address_id")),
            None,
        )
        if primary is None:
            suffix = user["id"].removeprefix("user_")
            primary = clerk_user(user["id"], email=address)["email_addresses"][0]
            primary["id"] = f"idn_e{suffix}{len(emails)}"
            emails.append(primary)
            user["primary_email_address_id"] = primary["id"]
        primary["email_address"] = address

    _FIRST = [
        "Ada",
        "Grace",
        "Linus",
        "Zoë",
        "José",
        "Łukasz",
        "Chloé",
        "Amara",
        "Hiroshi",
        "Fatima",
        "Noah",
        "Ingrid",
        "Mateo",
        "Priya",
        "Søren",
        "Wei",
    ]
    _LAST = [
        "Lovelace",
        "Hopper",
        "Ångström",
        "García",
        "Nowak",
        "Okafor",
        "Tanaka",
        "Haddad",
        "Müller",
        "Rossi",
        "Kowalski",
        "Nguyễn",
        "O'Brien",
        "Smith",
    ]

    def _generated_user(
        self, rng: random.Random, created_at: int | None
    ) -> dict[str, Any]:
        self._serial += 1
        number = self._serial
        clerk_id = _random_id("user_", rng)
        while clerk_id in self._json or clerk_id in self._deleted_keys:
            clerk_id = _random_id("user_", rng)
        first, last = rng.choice(self._FIRST), rng.choice(self._LAST)
        slug = first.encode("ascii", "ignore").decode().lower() or "user"
        kind = rng.random()
        emails_wanted = 0
        phone = None
        username = f"{slug}{number}" if rng.random() < 0.3 else None
        if kind < 0.50:  # one email
            emails_wanted = 1
        elif kind < 0.65:  # several emails
            emails_wanted = rng.choice([2, 3])
        elif kind < 0.80:  # phone only: Clerk users may have no email at all
            phone = f"+1555{number:07d}"
        elif kind < 0.92:  # email and phone
            emails_wanted, phone = 1, f"+1555{number:07d}"
        else:  # username only
            username = f"{slug}{number}"
        user = clerk_user(
            clerk_id,
            email=f"{slug}.{number}@example.com" if emails_wanted else None,
            first_name=first if rng.random() < 0.85 else None,
            last_name=last if rng.random() < 0.75 else None,
            username=username,
            phone=phone,
            created_at=created_at
            if created_at is not None
            else self._next_created_at(),
            email_verified=rng.random() < 0.9,
        )
        if emails_wanted > 1:
            template = user["email_addresses"][0]
            user["email_addresses"] = [
                dict(
                    template,
                    id=_random_id("idn_", rng),
                    email_address=f"{slug}.{number}.{i}@example.{'org' if i else 'com'}",
                )
                for i in range(emails_wanted)
            ]
            # The primary is the one whose id matches, not necessarily index 0.
            user["primary_email_address_id"] = rng.choice(user["email_addresses"])["id"]
        if phone is not None and not emails_wanted:
            user["password_enabled"] = False
        image = rng.random()
        if image < 0.2:
            user["has_image"] = True
            user["image_url"] = f"https://img.clerk.com/{_random_id('img_', rng)}"
        elif image < 0.3:
            user["image_url"] = ""  # Clerk sends an empty string, not null
        if rng.random() < 0.2:
            user["public_metadata"] = {"plan": rng.choice(["free", "pro", "team"])}
        if rng.random() < 0.1:
            user["private_metadata"] = None
        if rng.random() < 0.1:
            user["external_id"] = f"legacy-{number}"
        if rng.random() < 0.5:
            user["last_sign_in_at"] = user["created_at"] + rng.randrange(1, 10**8)
        return user

    # ---------------------------------------------------------------- keys and tokens

    @property
    def kid(self) -> str:
        """The current key's ``kid``: the instance id, as at Clerk, unless rotated away."""
        return self._kid

    @property
    def public_key(self) -> RSAPublicKey:
        return self.private_key.public_key()

    @property
    def public_key_pem(self) -> str:
        """What the dashboard shows as "JWKS Public Key" (a networkless ``CLERK_JWT_KEY``)."""
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    def rotate_key(self, keep_kid: bool = True) -> str:
        """Switch to a new RSA-2048 key; the JWKS serves only the new one.

        Clerk's ``kid`` is the instance id, so a rotated key can keep it
        (``keep_kid=True``): verifiers must refetch on a signature failure, not only
        on an unknown ``kid``. Returns the new ``kid``.
        """
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        with self._lock:
            self.private_key = key
            if not keep_kid:
                self._rotations += 1
                self._kid = f"{self.instance_id}_{self._rotations}"
            return self._kid

    def jwks_keys(self, *kids: str) -> list[dict[str, str]]:
        """The current public key as JWKs, once per ``kid`` (default: the current one)."""
        numbers = self.public_key.public_numbers()
        return [
            {
                "use": "sig",
                "kty": "RSA",
                "kid": kid,
                "alg": "RS256",
                "n": _b64url_uint(numbers.n),
                "e": _b64url_uint(numbers.e),
            }
            for kid in (kids or (self._kid,))
        ]

    def mint_session_token(
        self,
        sub: str,
        *,
        sid: str | None = None,
        lifetime: float = 60,
        iat: float | None = None,
        nbf: float | None = None,
        exp: float | None = None,
        azp: str | None = "http://localhost:3000",
        claims: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
        key: RSAPrivateKey | str | bytes | None = None,
    ) -> str:
        """A session token shaped like Clerk's v2 tokens, signed RS256.

        Defaults follow Clerk: 60 s lifetime, ``nbf = iat - 10``, the ``cat`` of
        session tokens, ``kid`` = the instance id. ``azp=None`` leaves ``azp`` out, as
        on a top-level navigation. ``claims`` and ``headers`` add or override entries
        (a ``None`` value removes one); ``key`` signs with another private key (an
        object or PEM) while keeping the header.
        """
        with self._lock:  # the kid and the key of one rotation, never a mix
            kid, current_key = self._kid, self.private_key
        iat = int(time.time()) if iat is None else iat
        payload: dict[str, Any] = {
            "azp": azp,
            "exp": iat + lifetime if exp is None else exp,
            "fva": [0, -1],
            "iat": iat,
            "iss": self.issuer,
            "jti": _secrets.token_hex(10),
            "nbf": iat - 10 if nbf is None else nbf,
            "sid": sid or _random_id("sess_"),
            "sub": sub,
            "v": 2,
        }
        if azp is None:
            del payload["azp"]
        header: dict[str, Any] = {
            "alg": "RS256",
            "cat": SESSION_TOKEN_CAT,
            "kid": kid,
            "typ": "JWT",
        }
        for target, overrides in ((payload, claims), (header, headers)):
            for name, value in (overrides or {}).items():
                if value is None:
                    target.pop(name, None)
                else:
                    target[name] = value
        signing_input = (
            _b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + _b64url(json.dumps(payload, separators=(",", ":")).encode())
        )
        # Signed by hand, not with jwt.encode, so a header override (even "alg") is
        # written exactly as given while the signature stays RS256.
        signer = _load_private_key(key) if key is not None else current_key
        signature = signer.sign(
            signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256()
        )
        return signing_input + "." + _b64url(signature)

    # ---------------------------------------------------------------- webhooks

    def deliver_webhook(
        self,
        url: str,
        secret: str,
        event_type: str,
        data: str | dict[str, Any],
        *,
        svix_id: str | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """Sign and POST a Clerk event to ``url``, as Svix would.

        ``data`` is the event's ``data``; a Clerk id instead means the stored user
        (for ``user.deleted``: the tombstone payload). Returns ``(status, headers, body)``.
        """
        if isinstance(data, str):
            if event_type == "user.deleted":
                data = deleted_user(data)
            else:
                stored = self.get_user(data)
                if stored is None:
                    raise KeyError(f"The simulator has no user {data!r}.")
                data = stored
        body = event(event_type, data, instance_id=self.instance_id)
        return deliver(url, secret, body, svix_id=svix_id)

    # ---------------------------------------------------------------- faults and records

    def fail_next(
        self,
        n: int,
        status: int = 500,
        path_prefix: str = "/v1/",
        *,
        retry_after: float | None = None,
    ) -> None:
        """Answer the next ``n`` requests under ``path_prefix`` with ``status``.

        Comes before authentication and rate limiting, like a failing proxy. A 429
        carries ``Retry-After`` (``retry_after`` seconds, default 1).
        """
        if status == 429 and retry_after is None:
            retry_after = 1
        with self._lock:
            self._faults.append([n, status, path_prefix, retry_after])

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request seen: ``RecordedRequest(method, path, query, status)``."""
        with self._lock:
            return list(self._requests)

    def request_count(self, path_prefix: str = "") -> int:
        with self._lock:
            return sum(1 for r in self._requests if r.path.startswith(path_prefix))

    def reset_counts(self) -> None:
        """Forget the recorded requests (the rate-limit window is kept)."""
        with self._lock:
            self._requests.clear()

    def reset_rate_limit(self) -> None:
        """Start a fresh rate-limit window."""
        with self._lock:
            self._accepted.clear()

    # ---------------------------------------------------------------- serving

    def _serve(self, handler: _Handler) -> None:
        raw_path, _, query_string = handler.path.partition("?")
        query_string = query_string.partition("#")[0]
        path = unquote(raw_path.partition("#")[0], errors="replace")
        params: dict[str, list[str]]
        try:
            params = parse_qs(query_string, keep_blank_values=True, errors="replace")
        except ValueError:
            params = {}
        query = {k: v[0] if len(v) == 1 else v for k, v in params.items()}

        if not self.available:
            # "Down": close without a status line; clients see a dropped connection.
            self._record(handler.command, path, query, None)
            handler.close_connection = True
            try:
                handler.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return

        if self.delay:
            self._stopping.wait(self.delay)

        try:
            status, body, headers = self._route(handler, path, params)
        except _ClientError as error:
            status, body, headers = error.status, error.body, {}
        except Exception:  # never a crashed handler: a Clerk-shaped 500 instead
            status, body, headers = 500, _error_for_status(500), {}

        self._record(handler.command, path, query, status)
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(body)
        except OSError:
            pass  # the client went away

    def _record(
        self, method: str, path: str, query: dict[str, Any], status: int | None
    ) -> None:
        with self._lock:
            self._requests.append(RecordedRequest(method, path, query, status))

    def _take_fault(self, path: str) -> tuple[int, Any] | None:
        with self._lock:
            for fault in self._faults:
                if fault[0] > 0 and path.startswith(fault[2]):
                    fault[0] -= 1
                    self._faults = [f for f in self._faults if f[0] > 0]
                    return fault[1], fault[3]
        return None

    def _route(
        self, handler: _Handler, path: str, params: dict[str, list[str]]
    ) -> _Answer:
        fault = self._take_fault(path)
        if fault is not None:
            status, retry_after = fault
            headers = (
                {"Retry-After": str(retry_after)} if retry_after is not None else {}
            )
            return status, _error_for_status(status), headers

        if handler.command != "GET":
            return self._not_found()
        if (
            path == "/.well-known/jwks.json"
        ):  # public Frontend API path: no key, no limit
            return self._jwks()
        if not path.startswith("/v1/"):
            return self._not_found()

        self._authenticate(handler)
        if path != "/v1/jwks":  # Clerk does not rate-limit its JWKS endpoint
            retry_after = self._rate_limited()
            if retry_after is not None:
                return 429, _error_for_status(429), {"Retry-After": str(retry_after)}

        if path == "/v1/jwks":
            return self._jwks()
        if path == "/v1/users":
            return self._list_users(params)
        if path == "/v1/users/count":
            return self._count_users(params)
        clerk_id = path.removeprefix("/v1/users/")
        if clerk_id != path and clerk_id and "/" not in clerk_id:
            with self._lock:
                user = self._json.get(clerk_id)
            if user is None:
                raise _ClientError(
                    404,
                    "resource_not_found",
                    "not found",
                    f"No user was found with id {clerk_id}",
                )
            return 200, user, {}
        return self._not_found()

    def _not_found(self) -> _Answer:
        return 404, _error_for_status(404), {}

    def _authenticate(self, handler: _Handler) -> None:
        scheme, _, key = (handler.headers.get("Authorization") or "").partition(" ")
        expected = self.secret_key.encode("utf-8")
        given = key.strip().encode("latin-1", "replace")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given, expected):
            raise _ClientError(401, *_STATUS_ERRORS[401])

    def _rate_limited(self) -> int | None:
        """``None`` when the request may go on, else the ``Retry-After`` seconds."""
        limit = self.rate_limit
        if not limit:
            return None
        count, window = limit
        now = time.monotonic()
        with self._lock:
            while self._accepted and self._accepted[0] <= now - window:
                self._accepted.popleft()
            if len(self._accepted) < count:
                self._accepted.append(now)
                return None
            # Whole seconds, rounded up, and never 0: a client sleeping that long
            # finds the window open again.
            return max(1, math.ceil(self._accepted[0] + window - now))

    def _jwks(self) -> _Answer:
        with self._lock:
            keys = self.jwks_keys()
        return 200, json.dumps({"keys": keys}).encode("utf-8"), {}

    # -- /v1/users

    def _selection(
        self, params: dict[str, list[str]], *, for_listing: bool
    ) -> tuple[list[tuple[int, str]], Any]:
        """The ids the filters select, in the requested order, as the listing pages them."""

        def integer(name: str) -> int | None:
            value = params.get(name, [None])[-1]
            if value is None:
                return None
            try:
                return int(value)
            except ValueError:
                raise _ClientError(
                    400,
                    "form_param_format_invalid",
                    "is invalid",
                    f"{name} must be an integer",
                    param_name=name,
                ) from None

        order_by = params.get("order_by", ["-created_at"])[-1]
        if order_by not in ("-created_at", "+created_at", "created_at"):
            raise _ClientError(
                400,
                "form_param_value_invalid",
                "is invalid",
                "The simulator supports order_by=-created_at, +created_at and "
                "created_at only",
                param_name="order_by",
            )
        descending = order_by == "-created_at"
        after, before = integer("created_at_after"), integer("created_at_before")
        user_ids = set(params.get("user_id", []) + params.get("user_id[]", []))

        with self._lock:
            keys = self._keys
            lo = 0 if after is None else bisect.bisect_left(keys, (after + 1,))
            hi = len(keys) if before is None else bisect.bisect_left(keys, (before,))
            window = keys[lo : max(lo, hi)]
            if user_ids:
                window = [k for k in window if k[1] in user_ids]
            if not for_listing:
                return window, None

            # Clerk's quirk: a missing, non-integer or out-of-range limit gives 10.
            try:
                limit = int(params.get("limit", [DEFAULT_LIMIT])[-1])
            except ValueError:
                limit = DEFAULT_LIMIT
            if not 1 <= limit <= MAX_LIMIT:
                limit = DEFAULT_LIMIT

            cursor = params.get("starting_after", [None])[-1]
            if cursor is not None:
                if "offset" in params:
                    raise _ClientError(
                        400,
                        "form_param_value_invalid",
                        "is invalid",
                        "starting_after cannot be used together with offset",
                        param_name="starting_after",
                    )
                cursor_key = self._cursor_key(cursor)
                if descending:
                    end = bisect.bisect_left(window, cursor_key)
                    page = window[max(0, end - limit) : end][::-1]
                else:
                    start = bisect.bisect_right(window, cursor_key)
                    page = window[start : start + limit]
            else:
                offset = integer("offset") or 0
                if offset < 0:
                    raise _ClientError(
                        400,
                        "form_param_value_invalid",
                        "is invalid",
                        "offset must be 0 or greater",
                        param_name="offset",
                    )
                if descending:
                    end = max(0, len(window) - offset)
                    page = window[max(0, end - limit) : end][::-1]
                else:
                    page = window[offset : offset + limit]
            return page, b"[" + b",".join(self._json[k[1]] for k in page) + b"]"

    def _cursor_key(self, clerk_id: str) -> tuple[int, str]:
        data = self._json.get(clerk_id)
        if data is not None:
            return (json.loads(data)["created_at"], clerk_id)
        # A user deleted since the previous page still marks a place in the order.
        if clerk_id in self._deleted_keys:
            return self._deleted_keys[clerk_id]
        raise _ClientError(
            400,
            "form_param_value_invalid",
            "is invalid",
            f"starting_after: no user was found with id {clerk_id}",
            param_name="starting_after",
        )

    def _list_users(self, params: dict[str, list[str]]) -> _Answer:
        _, body = self._selection(params, for_listing=True)
        return 200, body, {}

    def _count_users(self, params: dict[str, list[str]]) -> _Answer:
        window, _ = self._selection(params, for_listing=False)
        body = json.dumps({"object": "total_count", "total_count": len(window)})
        return 200, body.encode("utf-8"), {}


# -------------------------------------------------------------------- command line


def _parse_rate_limit(text: str) -> tuple[int, float] | None:
    if text.lower() in ("none", "off", "0"):
        return None
    try:
        count, seconds = text.split("/")
        return int(count), float(seconds)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--rate-limit takes REQUESTS/SECONDS (like 100/10) or none, not {text!r}"
        ) from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m django_clerk_sync.simulator",
        description="Serve a fake Clerk instance on 127.0.0.1 until Ctrl-C.",
    )
    parser.add_argument(
        "--port", type=int, default=8765, help="0 picks a free port (default: 8765)"
    )
    parser.add_argument(
        "--users", type=int, default=25, help="users to create (default: 25)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="the same seed gives the same users (default: 0)",
    )
    parser.add_argument(
        "--rate-limit",
        type=_parse_rate_limit,
        default=(100, 10.0),
        help="REQUESTS/SECONDS on /v1/*, or none (default: 100/10)",
    )
    parser.add_argument(
        "--secret-key",
        default="sk_test_simulator",
        help="the Bearer key /v1/* accepts (default: sk_test_simulator)",
    )
    parser.add_argument(
        "--token-lifetime",
        type=float,
        default=3600,
        help="seconds the printed session token stays valid (default: 3600)",
    )
    parser.add_argument("--quiet", action="store_true", help="do not log each request")
    args = parser.parse_args(argv)

    sim = ClerkSimulator(
        secret_key=args.secret_key, rate_limit=args.rate_limit, port=args.port
    )
    sim.log_requests = not args.quiet
    users = sim.add_users(args.users, seed=args.seed)
    with sim:
        limit = (
            f"{args.rate_limit[0]} requests / {args.rate_limit[1]:g} s"
            if args.rate_limit
            else "none"
        )
        # Ctrl-C may come as soon as the key's last line is out, mid-print.
        try:
            print(f"Clerk simulator with {args.users} users, serving until Ctrl-C")
            print(f"  CLERK_API_URL         = {sim.url}")
            print(f"  CLERK_JWT_ISSUER      = {sim.issuer}")
            print(f"  JWKS                  = {sim.jwks_url}")
            print(f"  CLERK_SECRET_KEY      = {sim.secret_key}")
            print(f"  CLERK_PUBLISHABLE_KEY = {sim.publishable_key}")
            print(f"  rate limit            = {limit}")
            if users:
                # For trying the middleware from curl or a browser: the project
                # trusts it once CLERK_JWT_ISSUER and CLERK_AUTHORIZED_PARTIES
                # (http://localhost:3000) are set as above.
                token = sim.mint_session_token(
                    users[0]["id"], lifetime=args.token_lifetime
                )
                print(
                    f"  a session token for {users[0]['id']} (azp "
                    f"http://localhost:3000, valid {args.token_lifetime:g} s):"
                )
                print(f"    {token}")
            print("  CLERK_JWT_KEY (the JWKS public key):")
            print(sim.public_key_pem, flush=True)
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("Stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
