"""ClerkAuthenticationMiddleware through HTTP: Django's test clients (WSGI and ASGI),
a real database, and the Clerk simulator serving keys (and users) over loopback.

Query counts and the simulator's request counts are asserted; timings never are.
"""

import asyncio
import json

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.core.checks import run_checks
from django.test import AsyncClient, Client

from django_clerk_sync import get_user, sync, tokens
from django_clerk_sync.models import ClerkUserLink
from django_clerk_sync.testing import clerk_user, event

from .test_tokens import HOSTILE, Clock
from .token_support import (  # noqa: F401  (fixtures)
    FRONTEND,
    MIDDLEWARE_WITH_CLERK,
    clerk_env,
    fresh_verifiers,
    sim,
)

JWKS = "/.well-known/jwks.json"
CLERK_ID = "user_2linked"


@pytest.fixture
def client():
    return Client()


@pytest.fixture
def linked(db):
    """A Clerk user already synced by a webhook."""
    return sync.sync_user(
        clerk_user(CLERK_ID, email="ada@example.com", username="ada", first_name="Ada"),
        source="webhook",
    ).user


def whoami(client, token=None, *, path="/whoami/", **extra):
    if token is not None:
        extra["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    response = client.get(path, **extra)
    assert response.status_code == 200, response.content
    return response.json()


def suffixed_cookie(sim):
    return f"__session_{tokens.session_cookie_suffix(sim.publishable_key)}"


# --- where the token comes from -----------------------------------------------------


def test_a_bearer_token_makes_request_user_the_linked_user(
    sim, clerk_env, client, linked
):
    token = sim.mint_session_token(
        CLERK_ID, sid="sess_2abc", claims={"o": {"id": "org_2acme", "rol": "admin"}}
    )

    body = whoami(client, token)

    assert body == {
        "authenticated": True,
        "user": "ada",
        "clerk_user_id": CLERK_ID,
        "session_id": "sess_2abc",
        "org_id": "org_2acme",
        "rejection": None,
    }


def test_the_session_cookie(sim, clerk_env, client, linked):
    client.cookies["__session"] = sim.mint_session_token(CLERK_ID)

    assert whoami(client)["user"] == "ada"


def test_the_suffixed_session_cookie_of_this_publishable_key(
    sim, clerk_env, client, linked
):
    client.cookies[suffixed_cookie(sim)] = sim.mint_session_token(CLERK_ID)

    assert whoami(client)["user"] == "ada"


def test_the_suffixed_cookie_wins_over_the_plain_one(sim, clerk_env, client, linked):
    # On localhost, the plain __session may belong to another Clerk app.
    client.cookies["__session"] = "another.apps.token"
    client.cookies[suffixed_cookie(sim)] = sim.mint_session_token(CLERK_ID)

    assert whoami(client)["user"] == "ada"


def test_the_bearer_header_wins_over_the_cookie(sim, clerk_env, client, linked):
    client.cookies["__session"] = "garbage"
    assert whoami(client, sim.mint_session_token(CLERK_ID))["user"] == "ada"

    client.cookies["__session"] = sim.mint_session_token(CLERK_ID)
    assert whoami(client, "garbage")["rejection"] == "malformed"


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "Bearer "])
def test_the_bearer_scheme_is_case_insensitive(sim, clerk_env, client, linked, scheme):
    token = sim.mint_session_token(CLERK_ID)

    assert whoami(client, HTTP_AUTHORIZATION=f"{scheme} {token}")["user"] == "ada"


def test_other_authorization_schemes_are_ignored(sim, clerk_env, client, linked):
    basic = {"HTTP_AUTHORIZATION": "Basic dXNlcjpwYXNz"}
    assert whoami(client, **basic) == {
        "authenticated": False,
        "user": None,
        "clerk_user_id": None,
        "session_id": None,
        "org_id": None,
        "rejection": None,
    }

    client.cookies["__session"] = sim.mint_session_token(CLERK_ID)
    assert whoami(client, **basic)["user"] == "ada"


@pytest.mark.parametrize("cookie", ["__clerk_handshake", "__client_uat", "__session_x"])
def test_handshake_and_other_cookies_are_never_read(
    sim, clerk_env, client, linked, cookie
):
    client.cookies[cookie] = sim.mint_session_token(CLERK_ID)

    body = whoami(client)

    assert (body["authenticated"], body["rejection"]) == (False, None)


def test_no_token_is_no_change_and_no_query(
    sim, clerk_env, client, linked, django_assert_num_queries
):
    with django_assert_num_queries(0):
        body = whoami(client)

    assert (body["authenticated"], body["rejection"]) == (False, None)
    assert sim.request_count() == 0


def test_an_empty_bearer_token_is_malformed(sim, clerk_env, client, db):
    assert whoami(client, HTTP_AUTHORIZATION="Bearer")["rejection"] == "malformed"
    assert whoami(client, HTTP_AUTHORIZATION="Bearer   ")["rejection"] == "malformed"


# --- rejections ---------------------------------------------------------------------


def test_a_cookie_token_expired_30_seconds_ago(sim, clerk_env, client, linked):
    import time

    now = int(time.time())
    client.cookies["__session"] = sim.mint_session_token(
        CLERK_ID, iat=now - 90, exp=now - 30
    )

    body = whoami(client)

    assert (body["authenticated"], body["rejection"]) == (False, "expired")


def test_a_foreign_authorized_party(sim, clerk_env, client, linked):
    token = sim.mint_session_token(CLERK_ID, azp="https://evil.example.com")

    assert whoami(client, token)["rejection"] == "wrong_party"


def test_a_missing_azp_in_both_modes(sim, clerk_env, client, linked):
    token = sim.mint_session_token(CLERK_ID, azp=None)
    assert whoami(client, token)["user"] == "ada"

    clerk_env.CLERK_ACCEPT_TOKENS_WITHOUT_AZP = False
    assert whoami(client, token)["rejection"] == "missing_party"


def test_a_rejection_is_logged_at_debug_without_the_token(
    sim, clerk_env, client, caplog
):
    token = sim.mint_session_token(CLERK_ID, azp="https://evil.example.com")

    with caplog.at_level("DEBUG", logger="django_clerk_sync"):
        whoami(client, token)

    assert "Clerk session token rejected: wrong_party" in caplog.text
    assert CLERK_ID in caplog.text
    assert token not in caplog.text
    assert token.split(".")[1] not in caplog.text


@pytest.mark.parametrize("token", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_tokens_are_never_a_500(sim, clerk_env, client, db, token):
    # What a WSGI server hands over: the header's UTF-8 bytes read as latin-1.
    token = token.encode("utf-8").decode("latin-1")
    header = whoami(client, HTTP_AUTHORIZATION=f"Bearer {token}")
    client.cookies["__session"] = token.replace("\x00", "")
    cookie = whoami(client)

    assert header["authenticated"] is False and header["rejection"]
    assert cookie["authenticated"] is False


@pytest.mark.parametrize(
    "sub, claims",
    [
        (CLERK_ID, {"exp": 10**309}),
        (CLERK_ID, {"azp": [FRONTEND]}),
        (CLERK_ID, {"azp": {"x": 1}}),
        ("admin", {}),
        (" " + CLERK_ID, {}),
        ("org_2abc", {}),
        (CLERK_ID, {"sid": "admin"}),
    ],
    ids=repr,
)
def test_signed_tokens_with_odd_claims_are_invalid_claim_never_a_500(
    sim, clerk_env, client, linked, sub, claims
):
    body = whoami(client, sim.mint_session_token(sub, claims=claims))

    assert (body["authenticated"], body["rejection"]) == (False, "invalid_claim")
    assert get_user_model().objects.count() == 1  # no user made from an odd sub


def test_non_latin1_bytes_in_the_authorization_header(sim, clerk_env, db):
    # A WSGI server hands headers over as latin-1 text, whatever the bytes were.
    raw = "Bearer \u00ff\u00fe" + bytes(range(128, 256)).decode("latin-1")

    body = whoami(Client(), HTTP_AUTHORIZATION=raw)

    assert body["rejection"] == "malformed"


def test_a_rejected_token_leaves_a_django_session_login_alone(
    sim, clerk_env, client, db
):
    # A stale __session cookie must not log staff out of the Django admin.
    staff = get_user_model().objects.create_user("staff", password="x")
    client.force_login(staff)
    client.cookies["__session"] = sim.mint_session_token(CLERK_ID, iat=0, exp=60)

    body = whoami(client)

    assert (body["user"], body["rejection"]) == ("staff", "expired")


def test_a_valid_token_wins_over_a_django_session_login(sim, clerk_env, client, linked):
    staff = get_user_model().objects.create_user("staff", password="x")
    client.force_login(staff)

    assert whoami(client, sim.mint_session_token(CLERK_ID))["user"] == "ada"


# --- the user behind the token --------------------------------------------------------


def test_a_linked_user_costs_one_query_and_keys_are_fetched_once(
    sim, clerk_env, client, linked, django_assert_num_queries
):
    token = sim.mint_session_token(CLERK_ID)
    for _ in range(3):
        with django_assert_num_queries(1):
            assert whoami(client, token)["user"] == "ada"
    for _ in range(20):  # browsers get a new token every ~50 s
        with django_assert_num_queries(1):
            assert whoami(client, sim.mint_session_token(CLERK_ID))["user"] == "ada"

    assert sim.request_count() == 1


def test_a_rejected_token_costs_no_query(
    sim, clerk_env, client, linked, django_assert_num_queries
):
    with django_assert_num_queries(0):
        body = whoami(client, sim.mint_session_token(CLERK_ID, azp="https://x.example"))

    assert body["rejection"] == "wrong_party"


def test_a_user_not_yet_synced_is_created_then_the_webhook_fills_it_in(
    sim, clerk_env, client, deliver, signals_received
):
    token = sim.mint_session_token("user_2new")

    body = whoami(client, token)

    assert (body["authenticated"], body["user"], body["rejection"]) == (
        True,
        "user_2new",  # no username yet: derived from the Clerk id
        None,
    )
    user = get_user("user_2new")
    assert (user.email, user.has_usable_password()) == ("", False)
    assert [(kind, kw["created"], kw["source"]) for kind, kw in signals_received] == [
        ("synced", True, "middleware")
    ]

    # The user.created webhook, eventually: the same Django user, filled in.
    payload = clerk_user(
        "user_2new", email="grace@example.com", username="grace", first_name="Grace"
    )
    response = deliver(json.loads(event("user.created", payload)))

    assert response.status_code == 200
    assert get_user_model().objects.count() == 1
    assert ClerkUserLink.objects.count() == 1
    user.refresh_from_db()
    assert (user.email, user.username, user.first_name) == (
        "grace@example.com",
        "grace",
        "Grace",
    )
    assert whoami(client, token)["user"] == "grace"


def test_the_webhook_first_then_the_token_is_one_user_too(
    sim, clerk_env, client, deliver
):
    payload = clerk_user("user_2hook", email="ada@example.com", username="ada")
    assert deliver(json.loads(event("user.created", payload))).status_code == 200

    assert whoami(client, sim.mint_session_token("user_2hook"))["user"] == "ada"
    assert get_user_model().objects.count() == 1


def test_first_sight_off_leaves_the_request_anonymous(
    sim, clerk_env, client, db, django_assert_num_queries
):
    clerk_env.CLERK_SYNC_FIRST_SIGHT = "off"

    with django_assert_num_queries(1):
        body = whoami(client, sim.mint_session_token("user_2new"))

    assert (body["authenticated"], body["rejection"]) == (False, "user_unknown")
    assert not ClerkUserLink.objects.exists()


@pytest.fixture
def fetch_mode(sim, clerk_env):
    clerk_env.CLERK_SYNC_FIRST_SIGHT = "fetch"
    clerk_env.CLERK_API_URL = sim.url
    clerk_env.CLERK_SECRET_KEY = sim.secret_key
    return clerk_env


def test_first_sight_fetch_creates_the_full_user(sim, fetch_mode, client, db):
    sim.add_user(
        "user_2fetched", email="lin@example.com", username="lin", first_name="Lin"
    )
    sim.reset_counts()

    body = whoami(client, sim.mint_session_token("user_2fetched"))

    assert body["user"] == "lin"
    assert get_user("user_2fetched").email == "lin@example.com"
    assert sim.request_count("/v1/users/") == 1
    # Seen again: the link is there, nothing is fetched.
    whoami(client, sim.mint_session_token("user_2fetched"))
    assert sim.request_count("/v1/users/") == 1


def test_first_sight_fetch_of_a_user_clerk_does_not_know(sim, fetch_mode, client, db):
    body = whoami(client, sim.mint_session_token("user_2ghost"))

    assert body["rejection"] == "user_unknown"
    assert not ClerkUserLink.objects.exists()


def test_first_sight_fetch_asks_clerk_once_per_cooldown_for_a_user_it_lacks(
    sim, fetch_mode, client, db
):
    # Deleted in Clerk while its token lives on; the user.deleted webhook is late.
    sim.add_user("user_2leaving")
    token = sim.mint_session_token("user_2leaving")
    sim.delete_user("user_2leaving")
    sim.reset_counts()
    clock = Clock()
    tokens.get_verifier().clock = clock

    for _ in range(20):
        assert whoami(client, token)["rejection"] == "user_unknown"
    assert sim.request_count("/v1/users/") == 1

    clock.advance(10)  # CLERK_JWKS_REFETCH_COOLDOWN: Clerk is asked again
    assert whoami(client, token)["rejection"] == "user_unknown"
    assert sim.request_count("/v1/users/") == 2
    # Another id is not held back by the first.
    assert whoami(client, sim.mint_session_token("user_2other"))["rejection"] == (
        "user_unknown"
    )
    assert sim.request_count("/v1/users/") == 3


def test_first_sight_fetch_failing_is_not_retried_in_the_request(
    sim, fetch_mode, client, db
):
    sim.add_user("user_2flaky", email="x@example.com")
    sim.reset_counts()
    sim.fail_next(1, status=503, path_prefix="/v1/users/")

    body = whoami(client, sim.mint_session_token("user_2flaky"))

    assert body["rejection"] == "user_fetch_failed"
    assert sim.request_count("/v1/users/") == 1
    assert not ClerkUserLink.objects.exists()


def test_a_first_sight_that_cannot_be_saved_is_anonymous_not_a_500(
    sim, clerk_env, client, db
):
    # A field map that writes a NOT NULL field from data the token does not have.
    clerk_env.CLERK_SYNC_FIELD_MAP = {"date_joined": "created_at"}

    body = whoami(client, sim.mint_session_token("user_2new"))

    assert (body["authenticated"], body["rejection"]) == (False, "user_sync_failed")
    assert not get_user_model().objects.exists()


def _role_of(clerk_user):
    return clerk_user["public_metadata"]["role"]  # KeyError: the metadata has none


@pytest.mark.parametrize(
    "field_map",
    [
        {"first_name": _role_of},  # a source that raises
        {"nonexistent_field": "first_name"},  # E011 names it; the request still works
        {"first_name": 3},  # E010
        "email",  # not a dict
    ],
    ids=["raising-source", "unknown-field", "bad-source", "not-a-dict"],
)
def test_a_broken_field_map_makes_first_sight_anonymous_not_a_500(
    sim, clerk_env, client, db, field_map
):
    clerk_env.CLERK_SYNC_FIELD_MAP = field_map

    body = whoami(client, sim.mint_session_token("user_2mapped"))

    assert (body["authenticated"], body["rejection"]) == (False, "user_sync_failed")
    assert not ClerkUserLink.objects.exists()


def test_a_raising_clerk_user_synced_receiver_does_not_fail_the_request(
    sim, clerk_env, client, transactional_db, caplog
):
    from django_clerk_sync.signals import clerk_user_synced

    def broken(sender, **kwargs):
        raise RuntimeError("receiver bug")

    clerk_user_synced.connect(broken, weak=False)
    try:
        body = whoami(client, sim.mint_session_token("user_2new"))
    finally:
        clerk_user_synced.disconnect(broken)

    assert body["user"] == "user_2new"  # the user was committed before the signal
    assert "a clerk_user_synced receiver raised" in caplog.text


def test_a_deleted_user_is_anonymous_and_never_resurrected(
    sim, clerk_env, client, linked
):
    sync.delete_user(CLERK_ID, source="webhook")

    body = whoami(client, sim.mint_session_token(CLERK_ID))

    assert (body["authenticated"], body["rejection"]) == (False, "user_deleted")
    assert get_user_model().objects.get().is_active is False
    assert ClerkUserLink.objects.get().is_tombstone


def test_a_deleted_user_never_seen_before_is_not_created(sim, clerk_env, client, db):
    sync.delete_user("user_2gone", source="webhook")

    assert (
        whoami(client, sim.mint_session_token("user_2gone"))["rejection"]
        == "user_deleted"
    )
    assert not get_user_model().objects.exists()


def test_a_deleted_user_whose_row_was_removed(sim, clerk_env, client, linked, settings):
    settings.CLERK_SYNC_ON_DELETE = "delete"
    sync.delete_user(CLERK_ID, source="webhook")

    assert (
        whoami(client, sim.mint_session_token(CLERK_ID))["rejection"] == "user_deleted"
    )
    assert not get_user_model().objects.exists()


@pytest.mark.parametrize("mode", ["create", "fetch"])
def test_a_user_deleted_locally_is_not_recreated_by_a_token(
    sim, clerk_env, client, deliver, mode
):
    clerk_env.CLERK_SYNC_FIRST_SIGHT = mode
    clerk_env.CLERK_API_URL = sim.url
    clerk_env.CLERK_SECRET_KEY = sim.secret_key
    clerk_id = f"user_2banned{mode}"
    sim.add_user(clerk_id, username="banned")
    assert whoami(client, sim.mint_session_token(clerk_id))["authenticated"]

    get_user(clerk_id).delete()  # the operator removes the account locally

    body = whoami(client, sim.mint_session_token(clerk_id))
    assert (body["authenticated"], body["rejection"]) == (False, "user_deleted_locally")
    assert not get_user_model().objects.exists()
    assert ClerkUserLink.objects.get(clerk_id=clerk_id).user is None

    # A webhook from Clerk is the sync path: it brings the user back.
    payload = clerk_user(clerk_id, email="b@example.com", username="banned")
    assert deliver(json.loads(event("user.updated", payload))).status_code == 200
    assert whoami(client, sim.mint_session_token(clerk_id))["user"] == "banned"


def test_deletion_reaches_a_token_already_cached(sim, clerk_env, client, linked):
    token = sim.mint_session_token(CLERK_ID)
    assert whoami(client, token)["user"] == "ada"

    sync.delete_user(CLERK_ID, source="webhook")

    assert whoami(client, token)["rejection"] == "user_deleted"


def test_an_inactive_django_user_is_anonymous(sim, clerk_env, client, linked):
    token = sim.mint_session_token(CLERK_ID)
    assert whoami(client, token)["user"] == "ada"
    linked.is_active = False
    linked.save()

    assert whoami(client, token)["rejection"] == "user_inactive"


# --- configuration -------------------------------------------------------------------


def test_without_authentication_middleware_request_user_is_still_set(
    sim, clerk_env, linked
):
    clerk_env.MIDDLEWARE = [
        "django_clerk_sync.middleware.ClerkAuthenticationMiddleware"
    ]
    client = Client()

    assert whoami(client)["authenticated"] is False
    assert whoami(client, sim.mint_session_token(CLERK_ID))["user"] == "ada"


def test_not_configured_rejects_every_token(sim, clerk_env, client, db):
    del clerk_env.CLERK_JWT_ISSUER
    del clerk_env.CLERK_PUBLISHABLE_KEY

    assert (
        whoami(client, sim.mint_session_token(CLERK_ID))["rejection"]
        == "not_configured"
    )


def clerk_check_ids():
    return sorted(
        m.id
        for m in run_checks()
        if m.id.startswith("django_clerk_sync.") and m.id[-3:-1] == "03"
    )


def test_the_check_passes_a_complete_configuration(clerk_env):
    assert clerk_check_ids() == []


def test_w030_no_authorized_parties(clerk_env):
    clerk_env.CLERK_AUTHORIZED_PARTIES = []

    assert clerk_check_ids() == ["django_clerk_sync.W030"]


def test_e032_no_issuer(clerk_env):
    del clerk_env.CLERK_JWT_ISSUER
    del clerk_env.CLERK_PUBLISHABLE_KEY

    assert clerk_check_ids() == ["django_clerk_sync.E032"]


def test_e033_middleware_before_authentication_middleware(clerk_env):
    order = list(MIDDLEWARE_WITH_CLERK)
    order.remove("django_clerk_sync.middleware.ClerkAuthenticationMiddleware")
    order.insert(2, "django_clerk_sync.middleware.ClerkAuthenticationMiddleware")
    clerk_env.MIDDLEWARE = order

    messages = [m for m in run_checks() if m.id == "django_clerk_sync.E033"]
    assert len(messages) == 1
    assert "after 'django.contrib.auth.middleware.AuthenticationMiddleware'" in (
        messages[0].hint
    )


@pytest.mark.parametrize(
    "name, value, check_id",
    [
        ("CLERK_PUBLISHABLE_KEY", "pk_test_notbase64!", "E031"),
        ("CLERK_PUBLISHABLE_KEY", "sk_test_abc", "E031"),
        ("CLERK_JWT_LEEWAY", "5", "E034"),
        ("CLERK_JWT_LEEWAY", -1, "E034"),
        ("CLERK_HTTP_TIMEOUT", 0, "E034"),
        ("CLERK_JWKS_CACHE_TTL", None, "E034"),
        ("CLERK_JWKS_REFETCH_COOLDOWN", True, "E034"),
        ("CLERK_SYNC_FIRST_SIGHT", "always", "E035"),
        ("CLERK_AUTHORIZED_PARTIES", [42], "E036"),
        ("CLERK_AUTHORIZED_PARTIES", ["app.example.com"], "E036"),
        ("CLERK_AUTHORIZED_PARTIES", ["https://app.example.com/dashboard"], "E036"),
        ("CLERK_SYNC_FIRST_SIGHT", "fetch", "E037"),
        ("CLERK_JWT_LEEWAY", 120, "W031"),
    ],
)
def test_setting_checks(clerk_env, name, value, check_id):
    setattr(clerk_env, name, value)

    messages = [m for m in run_checks() if m.id == f"django_clerk_sync.{check_id}"]

    assert len(messages) == 1
    assert name in messages[0].msg


def test_checks_stay_quiet_when_tokens_are_not_used(settings):
    # The base test settings use webhooks only.
    assert clerk_check_ids() == []


# --- ASGI ---------------------------------------------------------------------------


def ahoami(token=None):
    async def get():
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return await AsyncClient().get("/awhoami/", headers=headers)

    response = async_to_sync(get)()
    assert response.status_code == 200, response.content
    return response.json()


def test_async_a_bearer_token(sim, clerk_env, linked):
    body = ahoami(sim.mint_session_token(CLERK_ID))

    assert (body["user"], body["clerk_user_id"]) == ("ada", CLERK_ID)


def test_async_rejections_and_no_token(sim, clerk_env, linked):
    assert (
        ahoami(sim.mint_session_token(CLERK_ID, azp="https://x.example"))["rejection"]
        == "wrong_party"
    )
    assert ahoami()["rejection"] is None
    assert ahoami("\u00e9t\u00e9")["rejection"] == "malformed"


def test_async_first_sight_creates_through_the_sync_path(sim, clerk_env, db):
    assert ahoami(sim.mint_session_token("user_2async"))["user"] == "user_2async"
    assert get_user("user_2async") is not None


def test_async_first_sight_fetch(sim, fetch_mode, db):
    sim.add_user("user_2afetch", email="k@example.com", username="kay")

    assert ahoami(sim.mint_session_token("user_2afetch"))["user"] == "kay"


def test_async_odd_claims_are_invalid_claim(sim, clerk_env, linked):
    token = sim.mint_session_token(CLERK_ID, claims={"exp": 10**309})

    assert ahoami(token)["rejection"] == "invalid_claim"


def test_async_deleted_user(sim, clerk_env, linked):
    sync.delete_user(CLERK_ID, source="webhook")

    assert ahoami(sim.mint_session_token(CLERK_ID))["rejection"] == "user_deleted"


def _while_clerk_is_slow(sim, token, path_prefix):
    """One ASGI request while Clerk takes 1 s to answer, and beside it a coroutine
    that wakes after 50 ms and looks whether Clerk has answered yet.

    The simulator records a request once it has answered. If the middleware waited
    on the event loop, the coroutine could only wake after that answer; if the wait
    happens in a thread, it wakes while the request is still in flight.
    """
    sim.delay = 1.0
    seen_while_in_flight = []

    async def request():
        return await AsyncClient().get(
            "/awhoami/", headers={"Authorization": f"Bearer {token}"}
        )

    async def look():
        await asyncio.sleep(0.05)
        seen_while_in_flight.append(sim.request_count(path_prefix))

    async def both():
        response, _ = await asyncio.gather(request(), look())
        return response

    try:
        response = async_to_sync(both)()
    finally:
        sim.delay = 0
    return response.json(), seen_while_in_flight[0]


def test_async_fetching_keys_never_blocks_the_event_loop(sim, clerk_env, linked):
    body, answered = _while_clerk_is_slow(sim, sim.mint_session_token(CLERK_ID), JWKS)

    assert body["user"] == "ada"
    assert answered == 0  # the loop ran while the JWKS request was in flight
    assert sim.request_count(JWKS) == 1


def test_async_fetching_a_user_never_blocks_the_event_loop(sim, fetch_mode, db):
    sim.add_user("user_2slow", username="slow")
    tokens.get_verifier().verify(sim.mint_session_token("user_2slow"))  # keys in hand

    body, answered = _while_clerk_is_slow(
        sim, sim.mint_session_token("user_2slow"), "/v1/users/"
    )

    assert body["user"] == "slow"
    assert answered == 0
    assert sim.request_count("/v1/users/") == 1


def test_async_request_auser_is_the_clerk_user(sim, clerk_env, linked):
    # The async view reads ``await request.auser()``, as Django 5+ views do.
    assert ahoami(sim.mint_session_token(CLERK_ID))["user"] == "ada"
