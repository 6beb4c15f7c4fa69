"""A test key pair standing in for a Clerk instance's signing key, and the settings
that make the middleware trust it."""

from __future__ import annotations

import base64
import functools
import json
import secrets as _secrets
import threading
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
    from django.test.utils import override_settings

#: The frontend origin test tokens name as ``azp`` (the simulator's default too).
TEST_ORIGIN = "http://localhost:3000"

# The ``cat`` header of Clerk session tokens (tokens.SESSION_TOKEN_CAT; not imported,
# tokens.py reads Django settings).
_SESSION_TOKEN_CAT = "cl_B7d4PD111AAA"


_key_lock = threading.Lock()
_process_key: RSAPrivateKey | None = None


def _test_private_key() -> RSAPrivateKey:
    """One RSA-2048 key for the whole process: generating one takes tens of ms."""
    global _process_key
    with _key_lock:
        if _process_key is None:
            from cryptography.hazmat.primitives.asymmetric import rsa

            _process_key = rsa.generate_private_key(
                public_exponent=65537, key_size=2048
            )
        return _process_key


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _sign_rs256(
    private_key: RSAPrivateKey, header: Mapping[str, Any], payload: Mapping[str, Any]
) -> str:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    signing_input = (
        _b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + _b64url(json.dumps(payload, separators=(",", ":")).encode())
    )
    signature = private_key.sign(
        signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256()
    )
    return signing_input + "." + _b64url(signature)


def _reset_verifiers() -> None:
    from .. import tokens

    # Let background JWKS refreshes finish first, so none outlives its server.
    for verifier in list(tokens._by_config.values()):
        settle = getattr(verifier.keys, "settle", None)
        if settle is not None:
            settle(timeout=10)
    tokens.reset_verifiers()


@functools.cache
def _fresh_verifier_override() -> type[override_settings]:
    from django.test.utils import override_settings

    class FreshVerifierOverride(override_settings):
        """``override_settings`` that also forgets every verifier (keys, cached
        tokens) on entry and exit, so no key outlives the block."""

        def enable(self) -> None:
            super().enable()
            _reset_verifiers()

        def disable(self) -> None:
            super().disable()
            _reset_verifiers()

    return FreshVerifierOverride


_UNSET: Any = object()


class TestKeys:
    """A test RSA key pair standing in for a Clerk instance's signing key.

    ``token()`` mints session tokens shaped like Clerk's (v2); ``settings()``
    makes the middleware trust them, networkless, through ``CLERK_JWT_KEY``.
    ``private_key``: default one RSA-2048 key generated once per process.
    """

    __test__ = False  # not a test class, whatever pytest's name patterns say

    def __init__(
        self,
        private_key: RSAPrivateKey | None = None,
        *,
        issuer: str = "https://clerk.example.com",
        kid: str = "ins_2testkeys000000000000000",
        authorized_parties: Iterable[str] = (TEST_ORIGIN,),
    ) -> None:
        self.private_key = private_key or _test_private_key()
        self.issuer = issuer
        self.kid = kid
        self.authorized_parties = list(authorized_parties)

    def __repr__(self) -> str:
        return f"<TestKeys issuer={self.issuer!r} kid={self.kid!r}>"

    @property
    def public_key_pem(self) -> str:
        """The public key as PEM: the value of ``CLERK_JWT_KEY``."""
        from cryptography.hazmat.primitives import serialization

        return (
            self.private_key.public_key()
            .public_bytes(
                serialization.Encoding.PEM,
                serialization.PublicFormat.SubjectPublicKeyInfo,
            )
            .decode("ascii")
        )

    def token(
        self,
        sub: str,
        *,
        session_id: str | None = None,
        azp: str | None = _UNSET,
        expires_in: int = 60,
        headers: Mapping[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        """A session token for Clerk user ``sub``, signed RS256 by this key.

        As Clerk mints them: header ``alg``, ``cat`` (a session token's), ``kid``,
        ``typ``; claims ``azp``, ``exp`` (``iat + expires_in``), ``fva``, ``iat``
        (now), ``iss``, ``jti``, ``nbf`` (``iat - 10``), ``sid`` (``session_id``,
        default a fresh ``sess_...``), ``sts`` (``"active"``), ``sub``, ``v`` (2).
        ``azp`` defaults to the first authorized party; ``azp=None`` leaves it
        out, as Clerk does on top-level navigations. ``claims`` add or replace
        claims (``iat=``, ``exp=``, ``sts="pending"``, ``o={...}``, ``act={...}``)
        and ``headers`` header entries; a ``None`` value removes one.
        """
        if azp is _UNSET:
            azp = self.authorized_parties[0] if self.authorized_parties else None
        iat = claims.pop("iat", None)
        iat = int(time.time()) if iat is None else iat
        payload: dict[str, Any] = {
            "azp": azp,
            "exp": iat + expires_in,
            "fva": [0, -1],
            "iat": iat,
            "iss": self.issuer,
            "jti": _secrets.token_hex(10),
            "nbf": iat - 10,
            "sid": session_id or "sess_2" + _secrets.token_hex(13),
            "sts": "active",
            "sub": sub,
            "v": 2,
        }
        header: dict[str, Any] = {
            "alg": "RS256",
            "cat": _SESSION_TOKEN_CAT,
            "kid": self.kid,
            "typ": "JWT",
        }
        payload.update(claims)
        header.update(headers or {})
        payload = {name: value for name, value in payload.items() if value is not None}
        header = {name: value for name, value in header.items() if value is not None}
        return _sign_rs256(self.private_key, header, payload)

    def setting_values(self, **extra: Any) -> dict[str, Any]:
        """The settings that make the middleware trust this key, as a dict:
        ``CLERK_JWT_KEY`` (the public key, networkless), ``CLERK_JWT_ISSUER``,
        ``CLERK_AUTHORIZED_PARTIES``, then ``extra``."""
        values: dict[str, Any] = {
            "CLERK_JWT_KEY": self.public_key_pem,
            "CLERK_JWT_ISSUER": self.issuer,
            "CLERK_AUTHORIZED_PARTIES": list(self.authorized_parties),
        }
        values.update(extra)
        return values

    def settings(self, **extra: Any) -> override_settings:
        """:meth:`setting_values` as ``override_settings``: a context manager, or a
        decorator of test functions and ``TestCase`` classes. The middleware's
        verifier is rebuilt whenever a ``CLERK_`` setting changes; as a context
        manager or function decorator, every cached key and token is also
        forgotten on entry and exit."""
        return _fresh_verifier_override()(**self.setting_values(**extra))


def auth_header(token: str) -> dict[str, str]:
    """``{"Authorization": "Bearer <token>"}``, for the test client's ``headers=``."""
    return {"Authorization": f"Bearer {token}"}
