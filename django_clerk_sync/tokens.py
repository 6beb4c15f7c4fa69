"""Verify Clerk session tokens: strictly, fast, and without ever raising anything but
:class:`TokenRejected`.

:meth:`SessionTokenVerifier.verify` runs a pipeline of small steps, each a method a
subclass may override (as in djangorestframework-simplejwt)::

    split -> read_header -> check_header -> key_for -> decode_signature
          -> check_signature -> read_claims -> check_claims

``check_claims`` applies every claim rule: required claims and their types, the
pinned issuer, the times with leeway, the authorized party, the session status.

PyJWT is not used per token: most of ``jwt.decode``'s time goes to a per-character
alphabet check of each segment. The segments are checked here with one
``bytes.translate``, decoded with ``binascii``, and the signature verified with
``cryptography`` directly; RS256 is the only algorithm there is code for.

A token that verified is kept in a bounded cache keyed by the exact token string
(per verifier, hence per Clerk instance and settings), together with the key that
verified it: browsers send the same token for ~50 s, and a cached token costs a
dictionary lookup, an ``exp`` check and a check that its key is still current.

``get_verifier()`` returns the verifier for the current settings; it is rebuilt
when Django reports a changed setting (``override_settings``, pytest-django's
``settings`` fixture), and kept otherwise, with its caches.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import math
import re
import string
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from django.core.signals import setting_changed
from django.dispatch import receiver

from . import jwks
from .conf import clerk_settings

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
    from django.http import HttpRequest

logger = logging.getLogger("django_clerk_sync.tokens")

#: The ``cat`` header of Clerk session tokens (JWT templates carry another).
SESSION_TOKEN_CAT = "cl_B7d4PD111AAA"
SESSION_COOKIE = "__session"
#: Larger than any session token Clerk mints (cookies stop at 4 KB).
MAX_TOKEN_LENGTH = 16 * 1024
TOKEN_CACHE_SIZE = 4096


class Reason:
    """The machine-readable reasons a token is refused: ``request.clerk_rejection``."""

    NOT_CONFIGURED = "not_configured"
    MALFORMED = "malformed"
    UNSUPPORTED_ALGORITHM = "unsupported_algorithm"
    NOT_A_SESSION_TOKEN = "not_a_session_token"
    UNKNOWN_KEY = "unknown_key"
    KEYS_UNAVAILABLE = "keys_unavailable"
    BAD_SIGNATURE = "bad_signature"
    MISSING_CLAIM = "missing_claim"
    INVALID_CLAIM = "invalid_claim"
    WRONG_ISSUER = "wrong_issuer"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    ISSUED_IN_FUTURE = "issued_in_future"
    WRONG_PARTY = "wrong_party"
    MISSING_PARTY = "missing_party"
    PENDING_SESSION = "pending_session"
    # The token is valid; the user behind it is not let in (backends.py).
    USER_DELETED = "user_deleted"
    USER_DELETED_LOCALLY = "user_deleted_locally"
    USER_INACTIVE = "user_inactive"
    USER_UNKNOWN = "user_unknown"
    USER_FETCH_FAILED = "user_fetch_failed"
    USER_SYNC_FAILED = "user_sync_failed"


class TokenRejected(Exception):
    """The token does not authenticate anyone. ``reason`` is a :class:`Reason` code;
    ``detail`` a short text for the debug log (never the token or personal data)."""

    def __init__(
        self, reason: str, detail: str = "", *, clerk_id: str | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail
        self.clerk_id = clerk_id


class SessionClaims:
    """The verified claims of a session token: ``request.clerk``.

    ``claims`` is the whole payload, deeply read-only: objects are read-only dicts,
    arrays are tuples (a cached token's claims are shared by every request that
    brings it). The shortcuts cover what views need most; the active organization
    is read from a v2 token's ``o`` claim, or from v1's ``org_*`` claims.
    """

    __slots__ = ("_claims", "_frozen")
    _claims: dict[str, Any]
    _frozen: FrozenClaims | None

    def __init__(self, claims: dict[str, Any]) -> None:
        # Never handed out: the shortcuts read it, ``claims`` hands out a frozen copy.
        self._claims = claims
        self._frozen = claims if type(claims) is FrozenClaims else None

    def __repr__(self) -> str:
        return (
            f"<SessionClaims user_id={self.user_id!r} session_id={self.session_id!r}>"
        )

    @property
    def claims(self) -> FrozenClaims:
        frozen = self._frozen
        if frozen is None:
            # Frozen on first use, once per verified token (cached tokens share it);
            # two threads racing here build equal copies.
            frozen = self._frozen = freeze(self._claims)
        return frozen

    @property
    def user_id(self) -> str:
        """The Clerk user id (``sub``)."""
        return self._claims["sub"]

    @property
    def session_id(self) -> str:
        """The Clerk session id (``sid``)."""
        return self._claims["sid"]

    @property
    def expires_at(self) -> float:
        """``exp``, Unix seconds."""
        return self._claims["exp"]

    @property
    def issued_at(self) -> float:
        return self._claims["iat"]

    @property
    def authorized_party(self) -> str | None:
        """The origin that minted the token (``azp``), or ``None``."""
        return self._claims.get("azp")

    @property
    def session_status(self) -> str | None:
        """``sts`` (``"active"``, ``"pending"``), or ``None`` on older tokens."""
        return self._claims.get("sts")

    @property
    def actor(self) -> FrozenClaims | None:
        """The impersonator (``act`` claim, read-only), or ``None``."""
        return self.claims.get("act") if "act" in self._claims else None

    @property
    def organization(self) -> FrozenClaims | None:
        """The active organization as ``{"id", "slg", "rol", ...}`` (v2), read-only,
        or ``None``."""
        return self.claims.get("o") if "o" in self._claims else None

    def _org(self, v2_key: str, v1_claim: str) -> str | None:
        org = self._claims.get("o")
        if isinstance(org, dict):
            return org.get(v2_key)
        return self._claims.get(v1_claim)

    @property
    def org_id(self) -> str | None:
        return self._org("id", "org_id")

    @property
    def org_slug(self) -> str | None:
        return self._org("slg", "org_slug")

    @property
    def org_role(self) -> str | None:
        return self._org("rol", "org_role")


class FrozenClaims(dict[str, Any]):
    """A ``dict`` that refuses every change (``TypeError``), as the claims of a
    cached token are shared between requests. Still a ``dict``: ``json.dumps``,
    DRF responses and ``isinstance(..., dict)`` work; ``dict(claims)`` is a
    mutable copy."""

    __slots__ = ()

    def _read_only(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("the claims of a verified token are read-only")

    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only

    def __reduce__(self) -> tuple[type[FrozenClaims], tuple[dict[str, Any]]]:
        return (FrozenClaims, (dict(self),))

    def __copy__(self) -> FrozenClaims:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> FrozenClaims:
        return self


def freeze(value: Any) -> Any:
    """``value`` (decoded JSON) deeply read-only: objects become
    :class:`FrozenClaims`, arrays tuples."""
    if type(value) not in _CONTAINERS:
        return value
    # A loop, not recursion: a claim may nest as deep as the JSON parser goes (user
    # metadata in a customised session token), deeper than Python's recursion limit.
    # Parents are listed before their children, so the reversed list freezes the
    # children first.
    containers: list[Any] = []
    pending: list[Any] = [value]
    while pending:
        container = pending.pop()
        containers.append(container)
        items = container.values() if isinstance(container, dict) else container
        pending.extend(item for item in items if type(item) in _CONTAINERS)
    frozen: dict[int, Any] = {}
    for container in reversed(containers):
        copy: FrozenClaims | tuple[Any, ...]
        if isinstance(container, dict):
            copy = FrozenClaims(container)  # a copy made in C; then the containers
            for key, item in container.items():
                if type(item) in _CONTAINERS:
                    dict.__setitem__(copy, key, frozen[id(item)])
        else:
            copy = tuple(
                [
                    frozen[id(item)] if type(item) in _CONTAINERS else item
                    for item in container
                ]
            )
        frozen[id(container)] = copy
    return frozen[id(value)]


_CONTAINERS = frozenset({dict, list, tuple, FrozenClaims})


# --- token locations ---------------------------------------------------------------


def session_cookie_suffix(publishable_key: str) -> str:
    """The suffix of the ``__session_<suffix>`` cookie newer Clerk frontends write:
    the first 8 characters of base64url(SHA-1(publishable key))."""
    digest = hashlib.sha1(publishable_key.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")[:8]


def token_from_request(
    request: HttpRequest, cookie_names: Iterable[str] | None = None
) -> tuple[str | None, str | None]:
    """``(token, where)`` for a Django request, or ``(None, None)``.

    ``Authorization: Bearer`` comes first; other schemes are ignored. Then the
    cookies in ``cookie_names`` (default: the current verifier's, the suffixed
    ``__session_<suffix>`` of this publishable key before ``__session``). Clerk's
    handshake and ``__client_uat`` cookies are never read.
    """
    header = request.META.get("HTTP_AUTHORIZATION")
    if header:
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() == "bearer":
            return value.strip(), "header"
    if cookie_names is None:
        cookie_names = get_verifier().cookie_names
    cookies = request.COOKIES
    for name in cookie_names:
        value = cookies.get(name)
        if value:
            return value, "cookie"
    return None, None


# --- the verifier --------------------------------------------------------------------


def _base64url_to_standard_table() -> bytes:
    """A ``bytes.translate`` table: base64url to standard base64, the dots kept,
    every other byte to ``!`` (so one pass both translates and finds strays)."""
    table = bytearray(b"!" * 256)
    for char in (string.ascii_letters + string.digits + ".").encode("ascii"):
        table[char] = char
    table[ord("-")], table[ord("_")] = ord("+"), ord("/")
    return bytes(table)


_TO_STANDARD_B64 = _base64url_to_standard_table()
if sys.version_info >= (3, 11):

    def decode_base64(segment: bytes) -> bytes:
        """Bytes from a split() segment (standard alphabet, unpadded)."""
        # strict_mode is a third faster; the alphabet was checked by split().
        return binascii.a2b_base64(
            segment + _PADDING[len(segment) % 4], strict_mode=True
        )

else:  # pragma: no cover - Python 3.10

    def decode_base64(segment: bytes) -> bytes:
        """Bytes from a split() segment (standard alphabet, unpadded)."""
        return binascii.a2b_base64(segment + _PADDING[len(segment) % 4])


_PADDING = (b"", b"===", b"==", b"=")  # by len % 4; "===" is never valid: an error
# The C scanner every JSONDecoder has; typeshed does not declare it.
_SCAN: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
_UNSEEN = object()
MAX_CHECKED_HEADERS = 64
_PKCS1v15 = padding.PKCS1v15()
_SHA256 = hashes.SHA256()


#: Times beyond year 9999 (either way) are not Clerk's; 10**309 would overflow a float.
MAX_TIME = 253402300799
# Clerk ids: a prefix, then ASCII letters and digits (at most 255 characters).
_USER_ID = re.compile(r"user_[A-Za-z0-9]{1,250}")
_SESSION_ID = re.compile(r"sess_[A-Za-z0-9]{1,250}")


def _is_time(value: Any) -> bool:
    kind = type(value)  # bool is not a time
    return (kind is int or (kind is float and math.isfinite(value))) and (
        -MAX_TIME <= value <= MAX_TIME
    )


def _org_claims_are_strings(claims: dict[str, Any]) -> bool:
    """``o`` (v2) is an object whose ``id``, ``slg``, ``rol`` are strings if present;
    v1's ``org_id``, ``org_slug``, ``org_role`` are strings if present."""
    org = claims.get("o")
    if org is not None:
        if type(org) is not dict:
            return False
        for name in ("id", "slg", "rol"):
            value = org.get(name)
            if value is not None and type(value) is not str:
                return False
    if "org_id" in claims or "org_slug" in claims or "org_role" in claims:
        for name in ("org_id", "org_slug", "org_role"):
            value = claims.get(name)
            if value is not None and type(value) is not str:
                return False
    return True


class KeySource(Protocol):
    """What a verifier needs of its keys: :class:`~django_clerk_sync.jwks.StaticKey`
    and :class:`~django_clerk_sync.jwks.RemoteKeys` are the two there are."""

    description: str

    def key_for(self, kid: str | None, *, network: bool = True) -> RSAPublicKey: ...

    def current(self, kid: str | None) -> RSAPublicKey | None: ...

    def key_after_bad_signature(
        self, kid: str | None, failed_key: RSAPublicKey, *, network: bool = True
    ) -> RSAPublicKey | None: ...


class SessionTokenVerifier:
    """Verifies Clerk session tokens for one Clerk instance and one set of rules.

    ``keys`` is a key source from :mod:`django_clerk_sync.jwks` (or ``None`` when
    none is configured); ``clock`` returns Unix seconds and may be replaced in tests.
    """

    # Set by backends.py on first use: its guard for first-sight fetches.
    _first_sight_fetches: Any

    def __init__(
        self,
        *,
        keys: KeySource | None,
        issuer: str | None,
        authorized_parties: Iterable[str] = (),
        accept_without_azp: bool = True,
        allow_pending: bool = False,
        leeway: float = 5.0,
        cookie_names: Iterable[str] = (SESSION_COOKIE,),
        clock: Callable[[], float] = time.time,
        cache_size: int = TOKEN_CACHE_SIZE,
        not_configured: str | None = None,
    ) -> None:
        # None only together with ``not_configured``, and then verify() refuses every
        # token before a key is needed: the steps may take the keys as present.
        self.keys: KeySource = keys  # type: ignore[assignment]
        self.issuer = issuer
        self.authorized_parties = frozenset(authorized_parties)
        self.accept_without_azp = accept_without_azp
        self.allow_pending = allow_pending
        self.leeway = leeway
        self.cookie_names = tuple(cookie_names)
        self.clock = clock
        self.cache_size = cache_size
        self.not_configured = not_configured or (
            None if keys is not None and issuer else "no issuer or key source"
        )
        # token -> (SessionClaims, kid, key, exp + leeway)
        self._cache: dict[
            str, tuple[SessionClaims, str | None, RSAPublicKey, float]
        ] = {}
        self._checked_headers: dict[
            bytes, Any
        ] = {}  # header segment -> its kid, once check_header passed
        self._cache_lock = threading.Lock()

    # -- entry points

    def verify(self, token: str, *, network: bool = True) -> SessionClaims:
        """The :class:`SessionClaims` of a valid token; raises :class:`TokenRejected`,
        or :class:`jwks.NeedsNetwork` when ``network=False`` and keys must be fetched.
        """
        if type(token) is not str or len(token) > MAX_TOKEN_LENGTH:
            raise TokenRejected(Reason.MALFORMED, "not a string, or too long")
        entry = self._cache.get(token)
        if entry is not None:
            session, kid, key, deadline = entry
            if self.clock() > deadline:
                self._cache.pop(token, None)
                raise TokenRejected(Reason.EXPIRED, "expired", clerk_id=session.user_id)
            if self.keys.current(kid) is key:
                return session
            self._cache.pop(token, None)  # the key changed: verify afresh
        if self.not_configured:
            raise TokenRejected(Reason.NOT_CONFIGURED, self.not_configured)
        signing_input, header_segment, payload_segment, signature_segment = self.split(
            token
        )
        # Every token of an instance has the same header: it is read and checked once.
        kid = self._checked_headers.get(header_segment, _UNSEEN)
        if kid is _UNSEEN:
            header = self.read_header(header_segment)
            self.check_header(header)
            kid = header.get("kid")
            if len(self._checked_headers) < MAX_CHECKED_HEADERS:
                self._checked_headers[header_segment] = kid
        key = self.key_for(kid, network=network)
        signature = self.decode_signature(signature_segment)
        key = self.check_signature(key, kid, signing_input, signature, network=network)
        claims = self.read_claims(payload_segment)
        session = self.check_claims(claims, self.clock())
        self._remember(token, session, kid, key)
        return session

    # -- the steps

    def split(self, token: str) -> tuple[bytes, bytes, bytes, bytes]:
        """``(signing input, header, payload, signature)`` as bytes.

        The token must be three base64url segments (no padding, nothing else),
        the first two non-empty. The signing input is the token's own bytes; the
        three segments come back translated to the standard base64 alphabet,
        ready for :func:`decode_base64`.
        """
        try:
            raw = token.encode("ascii")
        except UnicodeEncodeError:
            raise TokenRejected(Reason.MALFORMED, "non-ASCII characters")
        # One pass: base64url to standard base64, anything else to "!".
        standard = raw.translate(_TO_STANDARD_B64)
        segments = standard.split(b".")
        if len(segments) != 3 or b"!" in standard:
            raise TokenRejected(Reason.MALFORMED, "not three base64url segments")
        header, payload, signature = segments
        # An empty signature is left to decode_signature, after the header check
        # has said "unsupported_algorithm" to an alg "none" token.
        if not (header and payload):
            raise TokenRejected(Reason.MALFORMED, "an empty segment")
        return raw[: len(header) + 1 + len(payload)], header, payload, signature

    def _json_segment(self, segment: bytes, what: str) -> dict[str, Any]:
        try:
            text = decode_base64(segment).decode("utf-8")
            # The decoder's scanner, without json.loads' encoding detection and
            # wrappers: a third of its time.
            value, end = _SCAN(text, 0)
        except (ValueError, RecursionError, StopIteration):  # binascii.Error too
            raise TokenRejected(Reason.MALFORMED, f"the {what} is not base64url JSON")
        if type(value) is not dict or end != len(text):
            raise TokenRejected(Reason.MALFORMED, f"the {what} is not a JSON object")
        return value

    def read_header(self, segment: bytes) -> dict[str, Any]:
        return self._json_segment(segment, "header")

    def check_header(self, header: dict[str, Any]) -> None:
        if header.get("alg") != "RS256":
            raise TokenRejected(Reason.UNSUPPORTED_ALGORITHM, "alg is not RS256")
        if "crit" in header:
            raise TokenRejected(Reason.MALFORMED, "critical header extensions")
        cat = header.get("cat")
        # Tokens from before Clerk added ``cat`` have none; anything else is a
        # JWT-template or machine token.
        if cat is not None and cat != SESSION_TOKEN_CAT:
            raise TokenRejected(
                Reason.NOT_A_SESSION_TOKEN, "cat is not a session token's"
            )
        kid = header.get("kid")
        if kid is not None and type(kid) is not str:
            raise TokenRejected(Reason.MALFORMED, "kid is not a string")

    def key_for(self, kid: str | None, *, network: bool = True) -> RSAPublicKey:
        try:
            return self.keys.key_for(kid, network=network)
        except jwks.KeyNotFound as missing:
            raise TokenRejected(
                missing.reason, f"no key for this kid from {self.keys.description}"
            )

    def decode_signature(self, segment: bytes) -> bytes:
        try:
            signature = decode_base64(segment)
        except ValueError:
            signature = b""
        if not signature:
            raise TokenRejected(Reason.MALFORMED, "the signature is not base64url")
        return signature

    def check_signature(
        self,
        key: RSAPublicKey,
        kid: str | None,
        signing_input: bytes,
        signature: bytes,
        *,
        network: bool = True,
    ) -> RSAPublicKey:
        """Return the key that verified the signature; one refetch for a key rotated
        under the same ``kid``."""
        try:
            key.verify(signature, signing_input, _PKCS1v15, _SHA256)
            return key
        except InvalidSignature:
            pass
        newer = self.keys.key_after_bad_signature(kid, key, network=network)
        if newer is not None:
            try:
                newer.verify(signature, signing_input, _PKCS1v15, _SHA256)
                return newer
            except InvalidSignature:
                pass
        raise TokenRejected(Reason.BAD_SIGNATURE, "signature does not verify")

    def read_claims(self, segment: bytes) -> dict[str, Any]:
        return self._json_segment(segment, "payload")

    def check_claims(self, claims: dict[str, Any], now: float) -> SessionClaims:
        """Every claim rule, in this order: required claims and their types, the
        issuer, the times (with leeway), the authorized party, the session status.
        Returns the :class:`SessionClaims`. (One method, not five: this runs on
        every new token, and each call costs.)"""
        try:
            exp, iat, sub, sid = (
                claims["exp"],
                claims["iat"],
                claims["sub"],
                claims["sid"],
            )
        except KeyError as missing:
            raise TokenRejected(Reason.MISSING_CLAIM, f"no {missing.args[0]}")
        # Inline int range checks first: _is_time's call costs as much as the test.
        if not (
            (type(exp) is int and -MAX_TIME <= exp <= MAX_TIME or _is_time(exp))
            and (type(iat) is int and -MAX_TIME <= iat <= MAX_TIME or _is_time(iat))
        ):
            raise TokenRejected(
                Reason.INVALID_CLAIM, "exp or iat is not a time in seconds"
            )
        # Clerk ids: user_ and sess_ then letters and digits (sync.clean_clerk_id's
        # rules are looser; a token names exactly a user and a session).
        if not (
            type(sub) is str
            and type(sid) is str
            and _USER_ID.fullmatch(sub)
            and _SESSION_ID.fullmatch(sid)
        ):
            raise TokenRejected(Reason.INVALID_CLAIM, "sub or sid is not a Clerk id")
        nbf = claims.get("nbf")
        azp = claims.get("azp")
        sts = claims.get("sts")
        act = claims.get("act")
        if not (
            (
                nbf is None
                or (type(nbf) is int and -MAX_TIME <= nbf <= MAX_TIME)
                or _is_time(nbf)
            )
            and (azp is None or type(azp) is str)
            and (sts is None or type(sts) is str)
            and (act is None or type(act) is dict)
            and _org_claims_are_strings(claims)
        ):
            raise TokenRejected(
                Reason.INVALID_CLAIM,
                "nbf, azp, sts, act or an organization claim has the wrong type",
                clerk_id=sub,
            )
        if claims.get("iss") != self.issuer:
            raise TokenRejected(
                Reason.WRONG_ISSUER, "iss is not CLERK_JWT_ISSUER", clerk_id=sub
            )
        leeway = self.leeway
        if now > exp + leeway:
            raise TokenRejected(
                Reason.EXPIRED, f"expired {int(now - exp)} s ago", clerk_id=sub
            )
        if nbf is not None and now + leeway < nbf:
            raise TokenRejected(Reason.NOT_YET_VALID, "nbf is ahead", clerk_id=sub)
        if now + leeway < iat:
            raise TokenRejected(Reason.ISSUED_IN_FUTURE, "iat is ahead", clerk_id=sub)
        if azp is None:
            # Clerk leaves azp out of tokens minted without an Origin (navigations).
            if not self.accept_without_azp:
                raise TokenRejected(
                    Reason.MISSING_PARTY,
                    "no azp (CLERK_ACCEPT_TOKENS_WITHOUT_AZP is False)",
                    clerk_id=sub,
                )
        elif self.authorized_parties and azp not in self.authorized_parties:
            raise TokenRejected(
                Reason.WRONG_PARTY, "azp not in CLERK_AUTHORIZED_PARTIES", clerk_id=sub
            )
        if not self.allow_pending and sts == "pending":
            raise TokenRejected(
                Reason.PENDING_SESSION,
                "session is pending (CLERK_ALLOW_PENDING_SESSIONS is False)",
                clerk_id=sub,
            )
        return SessionClaims(claims)

    # -- the verified-token cache

    def _remember(
        self, token: str, session: SessionClaims, kid: str | None, key: RSAPublicKey
    ) -> None:
        if len(self._cache) >= self.cache_size:
            with self._cache_lock:
                self._evict()
        # One dict assignment: atomic, so readers need no lock.
        self._cache[token] = (session, kid, key, session.expires_at + self.leeway)

    def _evict(self) -> None:
        """Make room in bulk (popping a dict's first entry one at a time gets slow):
        drop the expired entries, then the oldest half if still too full."""
        cache = self._cache
        if len(cache) < self.cache_size:
            return  # another thread made room
        now = self.clock()
        kept = [(t, e) for t, e in list(cache.items()) if e[3] >= now]
        if len(kept) > self.cache_size // 2:
            kept = kept[len(kept) - self.cache_size // 2 :]
        self._cache = dict(kept)

    def forget_tokens(self) -> None:
        """Empty the verified-token cache."""
        with self._cache_lock:
            self._cache.clear()


# --- the verifier for the current settings -------------------------------------------

_lock = threading.Lock()
_current: SessionTokenVerifier | None = None
_by_config: dict[str, SessionTokenVerifier] = {}


def build_verifier(**overrides: Any) -> SessionTokenVerifier:
    """A new verifier from the current settings (``overrides`` replace arguments)."""
    from django.conf import settings

    problem = None
    keys: KeySource | None = None
    pem = clerk_settings.JWT_KEY
    try:
        timeout = float(clerk_settings.HTTP_TIMEOUT)
    except (TypeError, ValueError):
        timeout = 5.0  # system check E034 names the mistake
    if not timeout > 0:
        timeout = 5.0
    if pem:
        try:
            keys = jwks.StaticKey(jwks.load_pem_public_key(pem))
        except jwks.InvalidKey as exc:
            problem = f"CLERK_JWT_KEY {exc}"
    elif clerk_settings.JWKS_URL:
        url = clerk_settings.JWKS_URL
        headers: dict[str, str] = {}
        secret = clerk_settings.SECRET_KEY
        if (
            secret
            and isinstance(secret, str)
            and url == f"{clerk_settings.API_URL}/v1/jwks"
        ):
            headers["Authorization"] = f"Bearer {secret}"
        keys = jwks.RemoteKeys(
            url,
            headers=headers,
            timeout=timeout,
            ttl=clerk_settings.JWKS_CACHE_TTL,
            cooldown=clerk_settings.JWKS_REFETCH_COOLDOWN,
            shared_cache=clerk_settings.JWKS_CACHE,
        )
    issuer = clerk_settings.JWT_ISSUER
    if problem is None and not issuer:
        problem = "neither CLERK_PUBLISHABLE_KEY nor CLERK_JWT_ISSUER is set"
    cookie_names = [SESSION_COOKIE]
    publishable_key = clerk_settings.PUBLISHABLE_KEY
    if publishable_key:
        cookie_names.insert(
            0, f"{SESSION_COOKIE}_{session_cookie_suffix(publishable_key)}"
        )
    arguments: dict[str, Any] = dict(
        keys=keys,
        issuer=issuer,
        authorized_parties=clerk_settings.AUTHORIZED_PARTIES,
        accept_without_azp=clerk_settings.ACCEPT_TOKENS_WITHOUT_AZP,
        allow_pending=clerk_settings.ALLOW_PENDING_SESSIONS,
        leeway=clerk_settings.JWT_LEEWAY,
        cookie_names=cookie_names,
        not_configured=problem,
    )
    arguments.update(overrides)
    if problem and settings.configured:
        logger.warning(
            "Clerk session tokens are all rejected: %s",
            problem,
            extra={"reason": Reason.NOT_CONFIGURED, "detail": problem},
        )
    return SessionTokenVerifier(**arguments)


#: The settings a verifier is built from: a change to any of them builds another.
VERIFIER_SETTINGS = (
    "CLERK_PUBLISHABLE_KEY",
    "CLERK_SECRET_KEY",
    "CLERK_JWT_KEY",
    "CLERK_JWT_ISSUER",
    "CLERK_JWKS_URL",
    "CLERK_API_URL",
    "CLERK_AUTHORIZED_PARTIES",
    "CLERK_ACCEPT_TOKENS_WITHOUT_AZP",
    "CLERK_ALLOW_PENDING_SESSIONS",
    "CLERK_JWT_LEEWAY",
    "CLERK_JWKS_CACHE_TTL",
    "CLERK_JWKS_REFETCH_COOLDOWN",
    "CLERK_JWKS_CACHE",
    "CLERK_HTTP_TIMEOUT",
)


def _config_identity() -> str:
    from django.conf import settings

    return repr(tuple(getattr(settings, name, None) for name in VERIFIER_SETTINGS))


def get_verifier() -> SessionTokenVerifier:
    """The verifier for the current settings (one per distinct configuration, so
    two Clerk instances never share keys or cached tokens)."""
    global _current
    verifier = _current
    if verifier is None:
        with _lock:
            identity = _config_identity()
            verifier = _by_config.get(identity)
            if verifier is None:
                if len(_by_config) >= 16:
                    _by_config.clear()
                verifier = _by_config[identity] = build_verifier()
            _current = verifier
    return verifier


@receiver(setting_changed)
def _settings_changed(setting: str, **kwargs: Any) -> None:
    global _current
    if setting.startswith("CLERK_") or setting == "CACHES":
        _current = None


def reset_verifiers() -> None:
    """Forget every verifier, with their keys and cached tokens (for tests)."""
    global _current
    with _lock:
        _current = None
        _by_config.clear()
