"""Session-token verification: every rule, the key sources and the caches.

Tokens are minted and served by the Clerk simulator over real HTTP (real RSA keys,
its request counts asserted); time moves through an injected clock.
"""

import base64
import hashlib
import hmac
import json
import sys
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.core.cache.backends.base import BaseCache
from django.core.checks import run_checks

from django_clerk_sync import jwks, tokens
from django_clerk_sync.simulator import ClerkSimulator
from django_clerk_sync.tokens import Reason, TokenRejected

from .token_support import FRONTEND, JWKSServer, clerk_env, fresh_verifiers, sim  # noqa: F401  (fixtures)

JWKS = "/.well-known/jwks.json"


class Clock:
    """A clock tests move by hand (Unix seconds)."""

    def __init__(self, now=None):
        self.now = int(time.time()) if now is None else now

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def verifier(clerk_env, clock):
    """The verifier the middleware would use, on the injected clock."""
    verifier = tokens.get_verifier()
    verifier.clock = clock
    verifier.keys.clock = clock
    return verifier


def b64url(data):
    if not isinstance(data, bytes):
        data = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def rejection(verifier, token):
    with pytest.raises(TokenRejected) as caught:
        verifier.verify(token)
    return caught.value.reason


def other_private_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


# --- a valid token -------------------------------------------------------------------


def test_a_clerk_session_token_verifies_and_exposes_its_claims(sim, verifier, clock):
    token = sim.mint_session_token(
        "user_2abc",
        sid="sess_2xyz",
        iat=int(clock.now),
        claims={
            "o": {"id": "org_2acme", "slg": "acme", "rol": "admin"},
            "sts": "active",
        },
    )

    session = verifier.verify(token)

    assert (session.user_id, session.session_id) == ("user_2abc", "sess_2xyz")
    assert (session.org_id, session.org_slug, session.org_role) == (
        "org_2acme",
        "acme",
        "admin",
    )
    assert session.authorized_party == FRONTEND
    assert session.session_status == "active"
    assert session.claims["iss"] == sim.issuer
    assert session.expires_at == int(clock.now) + 60
    assert "user_2abc" in repr(session) and token not in repr(session)
    with pytest.raises(TypeError):
        session.claims["sub"] = "user_other"  # read-only: shared by cached requests


def test_v1_organization_claims_are_read_too(sim, verifier, clock):
    token = sim.mint_session_token(
        "user_2abc",
        iat=int(clock.now),
        claims={"org_id": "org_1", "org_role": "basic_member"},
    )

    session = verifier.verify(token)

    assert (session.org_id, session.org_role, session.organization) == (
        "org_1",
        "basic_member",
        None,
    )


# --- times and leeway ----------------------------------------------------------------


@pytest.mark.parametrize(
    "times, expected",
    [
        ({"iat": +3}, None),  # iat 3 s in the future: within the 5 s leeway
        ({"iat": -63, "exp": -3}, None),  # expired 3 s ago: within the leeway
        ({"iat": -66, "exp": -6}, Reason.EXPIRED),
        ({"iat": 0, "nbf": +6}, Reason.NOT_YET_VALID),
        ({"iat": +6}, Reason.ISSUED_IN_FUTURE),  # nbf = iat - 10 is not ahead
        ({"iat": -30, "exp": -30}, Reason.EXPIRED),
    ],
    ids=["iat+3s", "exp-3s", "exp-6s", "nbf+6s", "iat+6s", "exp-30s"],
)
def test_leeway_edges(sim, verifier, clock, times, expected):
    now = int(clock.now)
    token = sim.mint_session_token(
        "user_2abc", **{name: now + offset for name, offset in times.items()}
    )

    if expected is None:
        assert verifier.verify(token).user_id == "user_2abc"
    else:
        assert rejection(verifier, token) == expected


def test_leeway_is_a_setting(sim, clerk_env, clock):
    clerk_env.CLERK_JWT_LEEWAY = 0
    verifier = tokens.get_verifier()
    verifier.clock = clock
    now = int(clock.now)

    token = sim.mint_session_token("user_2abc", iat=now - 63, exp=now - 3)

    assert rejection(verifier, token) == Reason.EXPIRED


def test_a_cached_token_is_still_refused_once_expired(sim, verifier, clock):
    token = sim.mint_session_token("user_2abc", iat=int(clock.now))
    verifier.verify(token)
    fetches = sim.request_count(JWKS)

    clock.advance(60 + 5)  # exp + leeway: still good
    assert verifier.verify(token).user_id == "user_2abc"
    clock.advance(1)
    assert rejection(verifier, token) == Reason.EXPIRED
    assert rejection(verifier, token) == Reason.EXPIRED  # also once out of the cache
    assert sim.request_count(JWKS) == fetches


def test_a_token_seen_again_costs_no_fetch_and_no_signature_check(sim, verifier, clock):
    token = sim.mint_session_token("user_2abc", iat=int(clock.now))
    first = verifier.verify(token)

    for _ in range(50):
        assert verifier.verify(token) is first  # the cached claims object

    assert sim.request_count(JWKS) == 1


def test_the_verified_token_cache_is_bounded(sim, clerk_env, clock):
    verifier = tokens.build_verifier(cache_size=8)
    verifier.clock = clock
    for n in range(30):
        verifier.verify(sim.mint_session_token(f"user_{n}", iat=int(clock.now)))

    assert len(verifier._cache) <= 8


# --- the claims ----------------------------------------------------------------------


def test_the_issuer_is_pinned(sim, verifier, clock):
    now = int(clock.now)
    foreign = sim.mint_session_token(
        "user_2abc", iat=now, claims={"iss": "https://evil.clerk.accounts.dev"}
    )
    missing = sim.mint_session_token("user_2abc", iat=now, claims={"iss": None})

    assert rejection(verifier, foreign) == Reason.WRONG_ISSUER
    assert rejection(verifier, missing) == Reason.WRONG_ISSUER


def test_the_issuer_comes_from_the_publishable_key(settings):
    key = "pk_live_" + base64.b64encode(b"clerk.example.com$").decode()
    settings.CLERK_PUBLISHABLE_KEY = key

    verifier = tokens.get_verifier()

    assert verifier.issuer == "https://clerk.example.com"
    assert verifier.keys.url == "https://clerk.example.com/.well-known/jwks.json"
    suffix = base64.urlsafe_b64encode(hashlib.sha1(key.encode()).digest()).decode()[:8]
    assert verifier.cookie_names == (f"__session_{suffix}", "__session")


@pytest.mark.parametrize("claim", ["exp", "iat", "sub", "sid"])
def test_required_claims(sim, verifier, clock, claim):
    token = sim.mint_session_token(
        "user_2abc", iat=int(clock.now), claims={claim: None}
    )

    assert rejection(verifier, token) == Reason.MISSING_CLAIM


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": "9999999999"},
        {"exp": True},
        {"exp": float("inf")},  # serialised as Infinity, which json.loads accepts
        {"exp": float("nan")},
        {"iat": [1]},
        {"nbf": "0"},
        {"sub": 42},
        {"sub": ""},
        {"sub": "user_\x00abc"},
        {"sub": "user_\u00e9"},
        {"sub": "user_" + "x" * 300},
        {"sid": {"id": "sess_1"}},
        # Times beyond any float, or absurd: never an OverflowError.
        {"exp": 10**309},
        {"exp": -(10**309)},
        {"iat": 10**20},
        {"nbf": 10**309},
        {"nbf": float("-inf")},
        # Strings where strings are expected: never a TypeError.
        {"azp": [FRONTEND]},
        {"azp": {"origin": FRONTEND}},
        {"azp": 1},
        {"sts": ["pending"]},
        {"act": "user_2admin"},
        {"o": "org_2acme"},
        {"o": {"id": ["org_2acme"]}},
        {"o": {"id": "org_2acme", "rol": {"admin": True}}},
        {"org_id": 5},
        # Clerk ids: user_ or sess_, then letters and digits.
        {"sub": "admin"},
        {"sub": " user_2abc"},
        {"sub": "user_2abc "},
        {"sub": "user_2abc\n"},
        {"sub": "org_2abc"},
        {"sub": "user_"},
        {"sub": "user_2a-b"},
        {"sid": "x"},
        {"sid": "sess_1 "},
        {"sid": "'; drop"},
        {"sid": "user_2abc"},
    ],
    ids=repr,
)
def test_claims_of_the_wrong_type_or_shape(sim, verifier, clock, claims):
    token = sim.mint_session_token("user_2abc", iat=int(clock.now), claims=claims)

    assert rejection(verifier, token) == Reason.INVALID_CLAIM


def test_claims_are_deeply_read_only_and_not_shared_mutably(sim, verifier, clock):
    token = sim.mint_session_token(
        "user_2abc",
        iat=int(clock.now),
        claims={
            "act": {"sub": "user_2support", "iss": "https://dashboard.clerk.com"},
            "o": {"id": "org_2acme", "rol": "member", "per": "org:read"},
        },
    )
    first = verifier.verify(token)

    for change in (
        lambda: first.actor.__setitem__("sub", "user_2attacker"),
        lambda: first.claims["o"].__setitem__("rol", "admin"),
        lambda: first.organization.update(rol="admin"),
        lambda: first.claims["fva"].append(1),
        lambda: first.claims.pop("sub"),
    ):
        with pytest.raises((TypeError, AttributeError)):
            change()

    again = verifier.verify(token)  # from the verified-token cache
    assert again.actor == {"sub": "user_2support", "iss": "https://dashboard.clerk.com"}
    assert (again.org_role, again.claims["fva"]) == ("member", (0, -1))
    # Still plain JSON to whoever serialises it (DRF responses, logs).
    assert json.loads(json.dumps(again.claims))["o"]["rol"] == "member"
    mutable = dict(again.claims)
    mutable["sub"] = "user_2other"
    assert verifier.verify(token).user_id == "user_2abc"


def test_claims_nested_deeper_than_python_recurses_are_read_only_too(
    sim, verifier, clock
):
    # Clerk copies what users write (unsafe_metadata) into customised session tokens,
    # so a claim can nest as deep as the parser goes. Freezing it used to recurse
    # (two frames a level for arrays) and raised RecursionError: a 500 in any view
    # reading request.clerk.claims, .actor or .organization.
    depth = 600  # 1,200 characters of brackets: room to spare in a cookie
    arrays, objects = [], {}
    inner_array, inner_object = arrays, objects
    for _ in range(depth - 1):
        inner_array.append([])
        inner_array = inner_array[0]
        inner_object["a"] = {}
        inner_object = inner_object["a"]
    token = sim.mint_session_token(
        "user_2abc",
        iat=int(clock.now),
        claims={"meta": arrays, "act": {"sub": "user_2support", "a": objects}},
    )

    session = verifier.verify(token)

    value, levels = session.claims["meta"], 0
    while value:
        assert type(value) is tuple
        value, levels = value[0], levels + 1
    assert levels == depth - 1
    actor, levels = session.actor, 0
    while actor:
        assert isinstance(actor, tokens.FrozenClaims)
        actor, levels = actor["a"], levels + 1
    assert levels == depth
    with pytest.raises(TypeError):
        session.actor["a"]["a"]["a"] = "changed"


def test_a_foreign_authorized_party_is_refused(sim, verifier, clock):
    token = sim.mint_session_token(
        "user_2abc", iat=int(clock.now), azp="https://evil.example.com"
    )

    assert rejection(verifier, token) == Reason.WRONG_PARTY


def test_any_party_is_accepted_when_none_are_listed(sim, clerk_env, clock):
    clerk_env.CLERK_AUTHORIZED_PARTIES = []
    token = sim.mint_session_token(
        "user_2abc", iat=int(clock.now), azp="https://elsewhere.example.com"
    )

    assert tokens.get_verifier().verify(token).authorized_party == (
        "https://elsewhere.example.com"
    )


def test_a_token_without_azp_is_accepted_by_default(sim, verifier, clock):
    # Clerk omits azp on top-level navigations (the handshake refreshing __session).
    token = sim.mint_session_token("user_2abc", iat=int(clock.now), azp=None)

    assert verifier.verify(token).authorized_party is None


def test_a_token_without_azp_is_refused_when_the_setting_says_so(sim, clerk_env, clock):
    clerk_env.CLERK_ACCEPT_TOKENS_WITHOUT_AZP = False
    token = sim.mint_session_token("user_2abc", iat=int(clock.now), azp=None)

    assert rejection(tokens.get_verifier(), token) == Reason.MISSING_PARTY
    # ...while a listed party is still fine.
    listed = sim.mint_session_token("user_2abc", iat=int(clock.now))
    assert tokens.get_verifier().verify(listed).user_id == "user_2abc"


def test_a_pending_session_is_refused_unless_allowed(sim, clerk_env, clock):
    token = sim.mint_session_token(
        "user_2abc", iat=int(clock.now), claims={"sts": "pending"}
    )

    assert rejection(tokens.get_verifier(), token) == Reason.PENDING_SESSION
    clerk_env.CLERK_ALLOW_PENDING_SESSIONS = True
    assert tokens.get_verifier().verify(token).session_status == "pending"


# --- the header: algorithm and token type ---------------------------------------------


def test_alg_none_is_refused(sim, verifier, clock):
    signed = sim.mint_session_token("user_2abc", iat=int(clock.now))
    header, payload, _ = signed.split(".")
    none_header = b64url({"alg": "none", "kid": sim.kid, "typ": "JWT"})

    assert (
        rejection(verifier, f"{none_header}.{payload}.") == Reason.UNSUPPORTED_ALGORITHM
    )
    assert (
        rejection(verifier, f"{none_header}.{payload}.{_}")
        == Reason.UNSUPPORTED_ALGORITHM
    )


def test_hs256_keyed_with_the_public_key_is_refused(sim, verifier, clock):
    # The classic confusion: an HMAC "signed" with the RSA public key PEM.
    header = b64url({"alg": "HS256", "kid": sim.kid, "typ": "JWT"})
    payload = b64url(
        {
            "sub": "user_2abc",
            "sid": "sess_1",
            "iss": sim.issuer,
            "iat": int(clock.now),
            "exp": int(clock.now) + 60,
        }
    )
    mac = hmac.new(
        sim.public_key_pem.encode(), f"{header}.{payload}".encode(), hashlib.sha256
    ).digest()

    assert rejection(verifier, f"{header}.{payload}.{b64url(mac)}") == (
        Reason.UNSUPPORTED_ALGORITHM
    )
    assert sim.request_count(JWKS) == 0  # refused before any key is looked up


@pytest.mark.parametrize("alg", ["RS512", "PS256", "ES256", "rs256", None])
def test_other_algorithms_are_refused(sim, verifier, clock, alg):
    token = sim.mint_session_token(
        "user_2abc", iat=int(clock.now), headers={"alg": alg}
    )

    assert rejection(verifier, token) == Reason.UNSUPPORTED_ALGORITHM


def test_jwt_template_and_machine_tokens_are_refused(sim, verifier, clock):
    template = sim.mint_session_token(
        "user_2abc", iat=int(clock.now), headers={"cat": "cl_B7d4PD222AAA"}
    )

    assert rejection(verifier, template) == Reason.NOT_A_SESSION_TOKEN


def test_a_session_token_from_before_the_cat_header_is_accepted(sim, verifier, clock):
    token = sim.mint_session_token(
        "user_2abc", iat=int(clock.now), headers={"cat": None}
    )

    assert verifier.verify(token).user_id == "user_2abc"


def test_critical_header_extensions_are_refused(sim, verifier, clock):
    token = sim.mint_session_token(
        "user_2abc", iat=int(clock.now), headers={"crit": ["exp"]}
    )

    assert rejection(verifier, token) == Reason.MALFORMED


# --- signatures and keys -------------------------------------------------------------


def test_a_token_signed_by_an_unrelated_key_is_refused(sim, verifier, clock):
    verifier.verify(sim.mint_session_token("user_2abc", iat=int(clock.now)))
    clock.advance(10)  # the first fetch is older than the cooldown
    forged = sim.mint_session_token(
        "user_2abc", iat=int(clock.now), key=other_private_key()
    )

    assert rejection(verifier, forged) == Reason.BAD_SIGNATURE
    # The kid is known, so the failure may be a rotation: one refetch, no more.
    assert sim.request_count(JWKS) == 2
    for _ in range(20):
        assert rejection(verifier, forged) == Reason.BAD_SIGNATURE
    assert sim.request_count(JWKS) == 2


def test_a_jwks_with_only_another_kid_refetches_once_then_refuses(sim, verifier, clock):
    verifier.verify(sim.mint_session_token("user_2abc", iat=int(clock.now)))
    clock.advance(10)  # the first fetch is older than the cooldown
    token = sim.mint_session_token(
        "user_2abc", iat=int(clock.now), headers={"kid": "ins_2someoneelse"}
    )

    assert rejection(verifier, token) == Reason.UNKNOWN_KEY
    assert sim.request_count(JWKS) == 2
    for _ in range(50):
        assert rejection(verifier, token) == Reason.UNKNOWN_KEY
    assert sim.request_count(JWKS) == 2  # no storm


def test_right_after_a_fetch_an_unknown_kid_causes_no_other(sim, verifier, clock):
    verifier.verify(sim.mint_session_token("user_2abc", iat=int(clock.now)))
    token = sim.mint_session_token(
        "user_2abc", iat=int(clock.now), headers={"kid": "ins_2someoneelse"}
    )

    assert rejection(verifier, token) == Reason.UNKNOWN_KEY
    assert sim.request_count(JWKS) == 1  # keys fetched just now are current


def test_fifty_forged_kids_cause_at_most_one_refetch_per_cooldown(sim, verifier, clock):
    verifier.verify(sim.mint_session_token("user_2abc", iat=int(clock.now)))
    clock.advance(10)  # the first fetch is older than the cooldown
    forged = [
        sim.mint_session_token(
            "user_2abc", iat=int(clock.now), headers={"kid": f"ins_{n}"}
        )
        for n in range(50)
    ]

    assert {rejection(verifier, token) for token in forged} == {Reason.UNKNOWN_KEY}
    assert sim.request_count(JWKS) == 2

    clock.advance(10)  # CLERK_JWKS_REFETCH_COOLDOWN
    assert {rejection(verifier, token) for token in forged} == {Reason.UNKNOWN_KEY}
    assert sim.request_count(JWKS) == 3


def test_a_refused_kid_is_accepted_once_the_jwks_publishes_it(sim, clerk_env, clock):
    published = {"keys": sim.jwks_keys()}
    with JWKSServer(json.dumps(published).encode()) as server:
        clerk_env.CLERK_JWKS_URL = server.url
        verifier = tokens.get_verifier()
        verifier.clock = verifier.keys.clock = clock
        token = sim.mint_session_token(
            "user_2abc", iat=int(clock.now), headers={"kid": "ins_2next"}
        )
        assert rejection(verifier, token) == Reason.UNKNOWN_KEY
        assert server.requests == 1

        # Clerk publishes the kid; within the cooldown it is still refused unfetched.
        server.document = json.dumps({"keys": sim.jwks_keys(sim.kid, "ins_2next")})
        server.document = server.document.encode()
        clock.advance(9)
        assert rejection(verifier, token) == Reason.UNKNOWN_KEY
        assert server.requests == 1

        clock.advance(1)  # CLERK_JWKS_REFETCH_COOLDOWN: the next fetch finds it
        assert verifier.verify(token).user_id == "user_2abc"
        assert server.requests == 2


def test_a_key_rotated_under_the_same_kid_is_fetched_on_the_signature_failure(
    sim, verifier, clock
):
    before = sim.mint_session_token("user_2abc", iat=int(clock.now))
    verifier.verify(before)
    clock.advance(10)  # the first fetch is older than the cooldown
    sim.rotate_key(keep_kid=True)
    after = sim.mint_session_token("user_2abc", iat=int(clock.now))

    assert verifier.verify(after).user_id == "user_2abc"
    assert sim.request_count(JWKS) == 2
    # The old key is gone from the JWKS: a token it signed is no longer served
    # from the cache.
    assert rejection(verifier, before) == Reason.BAD_SIGNATURE
    assert sim.request_count(JWKS) == 2


def test_a_key_rotated_to_a_new_kid_is_fetched_as_an_unknown_kid(sim, verifier, clock):
    verifier.verify(sim.mint_session_token("user_2abc", iat=int(clock.now)))
    clock.advance(10)  # the first fetch is older than the cooldown
    sim.rotate_key(keep_kid=False)

    token = sim.mint_session_token("user_2abc", iat=int(clock.now))

    assert verifier.verify(token).user_id == "user_2abc"
    assert sim.request_count(JWKS) == 2


def test_keys_are_fetched_again_after_the_ttl(sim, verifier, clock):
    verifier.verify(sim.mint_session_token("user_2abc", iat=int(clock.now)))
    clock.advance(299)
    verifier.verify(sim.mint_session_token("user_2abc", iat=int(clock.now)))
    assert sim.request_count(JWKS) == 1

    clock.advance(2)  # CLERK_JWKS_CACHE_TTL is 300 s
    verifier.verify(sim.mint_session_token("user_2abc", iat=int(clock.now)))

    assert verifier.keys.settle(timeout=10)  # the refresh runs in the background
    assert sim.request_count(JWKS) == 2


def test_past_the_ttl_held_keys_are_served_while_one_refresh_runs(sim, verifier, clock):
    verifier.verify(sim.mint_session_token("user_2abc", iat=int(clock.now)))
    clock.advance(301)  # past CLERK_JWKS_CACHE_TTL; the held key is still right
    sim.delay = 1.0  # and Clerk's JWKS endpoint is slow

    for n in range(8):
        session = verifier.verify(
            sim.mint_session_token(f"user_{n}", iat=int(clock.now))
        )
        assert session.user_id == f"user_{n}"
    # The simulator counts a request once answered: none of the eight waited for it.
    assert sim.request_count(JWKS) == 1

    assert verifier.keys.settle(timeout=10)
    sim.delay = 0
    assert sim.request_count(JWKS) == 2  # one refresh for all eight
    verifier.verify(sim.mint_session_token("user_2abc", iat=int(clock.now)))
    assert sim.request_count(JWKS) == 2  # and the keys are fresh again


def test_a_server_down_after_a_good_fetch_keeps_the_cached_keys(sim, verifier, clock):
    verifier.verify(sim.mint_session_token("user_2abc", iat=int(clock.now)))
    sim.available = False

    # Fresh tokens keep verifying...
    assert verifier.verify(sim.mint_session_token("user_2", iat=int(clock.now)))
    assert sim.request_count(JWKS) == 1
    # ...past the TTL too: the refresh fails and the last good keys stay (one
    # attempt per cooldown).
    clock.advance(400)
    for n in range(5):
        assert verifier.verify(sim.mint_session_token(f"user_{n}", iat=int(clock.now)))
    assert verifier.keys.settle(timeout=10)
    assert sim.request_count(JWKS) == 2
    clock.advance(10)
    sim.available = True
    assert verifier.verify(sim.mint_session_token("user_2abc", iat=int(clock.now)))
    assert verifier.keys.settle(timeout=10)
    assert sim.request_count(JWKS) == 3


def test_a_server_errors_after_a_good_fetch_keeps_the_cached_keys(sim, verifier, clock):
    verifier.verify(sim.mint_session_token("user_2abc", iat=int(clock.now)))
    clock.advance(301)
    sim.fail_next(1, status=503, path_prefix=JWKS)

    assert verifier.verify(sim.mint_session_token("user_2", iat=int(clock.now)))
    assert verifier.keys.settle(timeout=10)
    assert sim.request_count(JWKS) == 2
    assert verifier.verify(sim.mint_session_token("user_3", iat=int(clock.now)))


def test_no_keys_at_all_is_keys_unavailable_and_retried_after_the_cooldown(
    sim, verifier, clock
):
    sim.available = False
    token = sim.mint_session_token("user_2abc", iat=int(clock.now))

    assert rejection(verifier, token) == Reason.KEYS_UNAVAILABLE
    for _ in range(10):
        assert rejection(verifier, token) == Reason.KEYS_UNAVAILABLE
    assert sim.request_count(JWKS) == 1

    sim.available = True
    clock.advance(10)
    assert verifier.verify(token).user_id == "user_2abc"
    assert sim.request_count(JWKS) == 2


def test_a_slow_server_times_out_after_clerk_http_timeout(sim, clerk_env):
    clerk_env.CLERK_HTTP_TIMEOUT = 0.2
    sim.delay = 3
    token = sim.mint_session_token("user_2abc")

    # Had it waited, the answer (3 s later) would have verified the token.
    assert rejection(tokens.get_verifier(), token) == Reason.KEYS_UNAVAILABLE
    sim.delay = 0


def test_a_jwks_answer_dripped_slowly_is_cut_off_at_clerk_http_timeout(sim, clerk_env):
    document = json.dumps({"keys": sim.jwks_keys()}).encode()
    # Ten pieces 0.5 s apart: every read is quicker than the timeout, the whole
    # answer takes 5 s.
    with JWKSServer(document, drip=0.5) as server:
        clerk_env.CLERK_JWKS_URL = server.url
        clerk_env.CLERK_HTTP_TIMEOUT = 1
        token = sim.mint_session_token("user_2abc")

        started = time.monotonic()
        assert rejection(tokens.get_verifier(), token) == Reason.KEYS_UNAVAILABLE
        assert time.monotonic() - started < 2.5
        assert server.requests == 1


def test_unusable_jwks_answers_are_failed_fetches(sim, verifier, clock):
    sim.fail_next(1, status=404, path_prefix=JWKS)

    assert rejection(verifier, sim.mint_session_token("user_2abc")) == (
        Reason.KEYS_UNAVAILABLE
    )


def test_the_backend_api_jwks_is_fetched_with_the_secret_key(sim, clerk_env):
    del clerk_env.CLERK_JWKS_URL
    clerk_env.CLERK_API_URL = sim.url
    clerk_env.CLERK_SECRET_KEY = sim.secret_key

    verifier = tokens.get_verifier()
    assert verifier.keys.url == f"{sim.url}/v1/jwks"
    assert verifier.verify(sim.mint_session_token("user_2abc")).user_id == "user_2abc"
    assert (sim.request_count("/v1/jwks"), sim.request_count(JWKS)) == (1, 0)


def test_a_wrong_secret_key_means_no_keys(sim, clerk_env, caplog):
    del clerk_env.CLERK_JWKS_URL
    clerk_env.CLERK_API_URL = sim.url
    clerk_env.CLERK_SECRET_KEY = "sk_test_wrong"

    token = sim.mint_session_token("user_2abc")

    assert rejection(tokens.get_verifier(), token) == Reason.KEYS_UNAVAILABLE
    assert [r.status for r in sim.requests] == [401]
    assert "HTTP 401 (check CLERK_SECRET_KEY)" in caplog.text
    assert "sk_test_wrong" not in caplog.text


def test_the_secret_key_is_never_sent_to_another_jwks_url(sim, clerk_env):
    clerk_env.CLERK_API_URL = "https://api.clerk.com"
    clerk_env.CLERK_SECRET_KEY = sim.secret_key  # CLERK_JWKS_URL still the public one

    assert tokens.get_verifier().keys.headers == {}


def test_two_instances_never_share_keys(clerk_env):
    # Both simulators have the same instance id, hence the same kid, as two Clerk
    # instances served by one process would look to a cache keyed by kid alone.
    with ClerkSimulator(rate_limit=None) as one, ClerkSimulator(rate_limit=None) as two:
        assert one.kid == two.kid
        clerk_env.CLERK_JWT_ISSUER, clerk_env.CLERK_JWKS_URL = one.issuer, one.jwks_url
        first = tokens.get_verifier()
        assert first.verify(one.mint_session_token("user_2abc"))

        clerk_env.CLERK_JWT_ISSUER, clerk_env.CLERK_JWKS_URL = two.issuer, two.jwks_url
        second = tokens.get_verifier()
        assert second is not first
        assert second.verify(two.mint_session_token("user_2abc"))

        # A token of the second instance claiming the first one's issuer is
        # refused by the first, whose keys were not touched.
        crossed = two.mint_session_token("user_2abc", claims={"iss": one.issuer})
        clerk_env.CLERK_JWT_ISSUER, clerk_env.CLERK_JWKS_URL = one.issuer, one.jwks_url
        assert tokens.get_verifier() is first  # same settings: same verifier and keys
        assert rejection(first, crossed) == Reason.BAD_SIGNATURE
        assert (one.request_count(JWKS), two.request_count(JWKS)) == (1, 1)


def test_settings_changes_reach_the_verifier(sim, clerk_env):
    first = tokens.get_verifier()
    clerk_env.CLERK_JWT_LEEWAY = 1

    assert tokens.get_verifier() is not first
    assert tokens.get_verifier().leeway == 1


# --- the optional cross-process cache ------------------------------------------------


class BrokenCache(BaseCache):
    """A cache backend whose server is down."""

    def __init__(self, location, params):
        super().__init__(params)

    def get(self, key, default=None, version=None):
        raise ConnectionError("cache server down")

    def set(self, key, value, timeout=None, version=None):
        raise ConnectionError("cache server down")


def test_keys_fetched_by_one_process_are_used_by_the_next(sim, clerk_env):
    clerk_env.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "clerk": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "clerk-jwks",
        },
    }
    clerk_env.CLERK_JWKS_CACHE = "clerk"
    token = sim.mint_session_token("user_2abc")
    tokens.get_verifier().verify(token)

    for _ in range(3):
        tokens.reset_verifiers()  # another worker process, same shared cache
        assert tokens.get_verifier().verify(token).user_id == "user_2abc"

    assert sim.request_count(JWKS) == 1


def test_a_cache_backend_that_errors_falls_back_to_fetching(sim, clerk_env, caplog):
    clerk_env.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "clerk": {"BACKEND": "tests.test_tokens.BrokenCache"},
    }
    clerk_env.CLERK_JWKS_CACHE = "clerk"

    assert tokens.get_verifier().verify(sim.mint_session_token("user_2abc"))
    assert sim.request_count(JWKS) == 1
    assert "JWKS shared cache unusable (ConnectionError)" in caplog.text


# --- networkless: CLERK_JWT_KEY ------------------------------------------------------


def test_a_pem_key_verifies_without_any_request(sim, clerk_env):
    clerk_env.CLERK_JWT_KEY = sim.public_key_pem

    assert tokens.get_verifier().verify(sim.mint_session_token("user_2abc"))
    assert sim.request_count() == 0


def test_a_pem_key_pasted_with_literal_backslash_n(sim, clerk_env):
    clerk_env.CLERK_JWT_KEY = sim.public_key_pem.strip().replace("\n", "\\n")

    assert tokens.get_verifier().verify(sim.mint_session_token("user_2abc"))
    assert run_checks_ids() == set()


def test_a_pem_key_refuses_tokens_of_another_key(sim, clerk_env):
    clerk_env.CLERK_JWT_KEY = sim.public_key_pem
    token = sim.mint_session_token("user_2abc", key=other_private_key())

    assert rejection(tokens.get_verifier(), token) == Reason.BAD_SIGNATURE
    assert sim.request_count() == 0


def pem_of(key):
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def run_checks_ids():
    return {m.id for m in run_checks() if m.id.startswith("django_clerk_sync.E03")}


@pytest.mark.parametrize(
    "make_pem, problem",
    [
        (
            lambda: pem_of(ec.generate_private_key(ec.SECP256R1()).public_key()),
            "not an RSA",
        ),
        (
            lambda: (
                other_private_key()
                .private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
                .decode()
            ),
            "is a private key",
        ),
        (lambda: "not a key at all", "is not a PEM public key"),
        (
            lambda: pem_of(
                rsa.generate_private_key(
                    public_exponent=65537, key_size=1024
                ).public_key()
            ),
            "1024-bit",
        ),
    ],
    ids=["ec", "private", "garbage", "rsa1024"],
)
def test_a_pem_that_is_not_an_rsa_public_key_is_a_check_error_and_rejects_all(
    sim, clerk_env, make_pem, problem
):
    clerk_env.CLERK_JWT_KEY = make_pem()

    errors = [m for m in run_checks() if m.id == "django_clerk_sync.E030"]
    assert len(errors) == 1 and problem in errors[0].msg
    assert "CLERK_JWT_KEY" in errors[0].msg
    assert rejection(tokens.get_verifier(), sim.mint_session_token("user_2abc")) == (
        Reason.NOT_CONFIGURED
    )


def test_without_an_issuer_every_token_is_not_configured(sim, settings):
    settings.CLERK_JWKS_URL = sim.jwks_url

    assert rejection(tokens.get_verifier(), sim.mint_session_token("user_2abc")) == (
        Reason.NOT_CONFIGURED
    )
    assert sim.request_count(JWKS) == 0


# --- hostile bytes -------------------------------------------------------------------


def deep(n):
    return b"[" * n + b"]" * n


HOSTILE = {
    "empty": "",
    "one dot": ".",
    "two dots": "..",
    "two segments": "eyJhbGciOiJSUzI1NiJ9.e30",
    "four segments": "a.b.c.d",
    "spaces": "eyJ hbGc.e30.e30",
    "padding": "eyJhbGciOiJSUzI1NiJ9=.e30=.sig=",
    "standard base64": "eyJhbGciOiJSUzI1NiJ9+/.e30.e30",
    "non-ASCII": "eyJhbGciOiJSUzI1NiJ9.é.e30",
    "NUL": "eyJhbGciOiJSUzI1NiJ9.\x00.e30",
    "emoji": "\U0001f600.\U0001f600.\U0001f600",
    "huge": "a" * 100_000 + ".b.c",
    "just under the limit": "a" * (16 * 1024 - 4) + ".b.c",
    "length 1 mod 4": "a.b.c",
    "header not JSON": b64url(b"\xff\xfe garbage") + ".e30.AAAA",
    "header a list": b64url([1, 2]) + ".e30.AAAA",
    "header a string": b64url("RS256") + ".e30.AAAA",
    "header trailing data": b64url(b'{"alg":"RS256"} x') + ".e30.AAAA",
    "header deeply nested": b64url(b'{"alg":' + deep(5000) + b"}") + ".e30.AAAA",
    "header non-ASCII kid": b64url({"alg": "RS256", "kid": "ключ"}) + ".e30.AAAA",
    "header kid a number": b64url({"alg": "RS256", "kid": 7}) + ".e30.AAAA",
    "header invalid UTF-8": b64url(b'{"alg":"RS256","kid":"\xc3\x28"}') + ".e30.AAAA",
    "signature empty": b64url({"alg": "RS256"}) + ".e30.",
    "signature garbage": b64url({"alg": "RS256"}) + ".e30.AAAA",
}


@pytest.mark.parametrize("token", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_bytes_are_rejected_with_a_reason_never_an_exception(
    sim, verifier, token
):
    reason = rejection(verifier, token)

    assert reason in vars(Reason).values()


@pytest.mark.parametrize("value", [None, 42, b"a.b.c", ["a", "b", "c"]], ids=repr)
def test_things_that_are_not_strings(verifier, value):
    assert rejection(verifier, value) == Reason.MALFORMED


@pytest.mark.parametrize(
    "payload",
    [b"[1]", b'"x"', b'{"a":' + deep(5000) + b"}", b"\xff\xfe", b'{"sub": 1} trailing'],
    ids=["list", "string", "deeply nested", "not UTF-8", "trailing data"],
)
def test_a_signed_payload_that_is_not_a_json_object(sim, verifier, payload):
    # Signed with the instance's own key: only the claim parsing stands in the way.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    header = b64url({"alg": "RS256", "cat": "cl_B7d4PD111AAA", "kid": sim.kid})
    signing_input = f"{header}.{b64url(payload)}"
    signature = sim.private_key.sign(
        signing_input.encode(), padding.PKCS1v15(), hashes.SHA256()
    )
    token = f"{signing_input}.{b64url(signature)}"
    assert len(token) <= tokens.MAX_TOKEN_LENGTH

    reason = rejection(verifier, token)
    if payload.startswith(b'{"a":[') and reason == Reason.MISSING_CLAIM:
        # Python 3.13's parser reads 5,000 levels (3.10-3.12 refuse them): then it
        # is a JSON object without "sub", refused for that.
        assert sys.version_info >= (3, 13)
        return
    assert reason == Reason.MALFORMED


def test_a_forged_header_without_a_kid_is_an_unknown_key(sim, verifier):
    token = sim.mint_session_token("user_2abc", headers={"kid": None})

    assert rejection(verifier, token) == Reason.UNKNOWN_KEY


def test_a_jwks_entry_that_is_not_rs256_is_skipped():
    keys = jwks.RemoteKeys._parse(
        {
            "keys": [
                {"kty": "EC", "kid": "a", "crv": "P-256", "x": "x", "y": "y"},
                {"kty": "RSA", "kid": "b", "n": "!!", "e": "AQAB"},
                {"kty": "RSA", "kid": "c", "alg": "RS512", "n": "AQAB", "e": "AQAB"},
                "not an object",
            ]
        }
    )

    assert keys == {}


def test_a_pem_given_as_bytes_is_a_check_error_and_rejects_all(sim, clerk_env):
    clerk_env.CLERK_JWT_KEY = sim.public_key_pem.encode()

    errors = [m.msg for m in run_checks() if m.id == "django_clerk_sync.E030"]
    assert errors == ["CLERK_JWT_KEY is not a string (bytes)."]
    assert rejection(tokens.get_verifier(), sim.mint_session_token("user_2abc")) == (
        Reason.NOT_CONFIGURED
    )
    assert sim.request_count() == 0
