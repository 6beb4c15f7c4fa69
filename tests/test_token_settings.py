"""Token settings given the wrong type fail closed and are named by a check."""

import hashlib
import math

import pytest
from django.core.checks import run_checks
from django.test import Client

from django_clerk_sync import sync
from django_clerk_sync.testing import clerk_user

from .token_support import clerk_env, fresh_verifiers, sim  # noqa: F401 (fixtures)

CLERK_ID = "user_2settings"


def ids(messages):
    return [m.id for m in messages if m.id.startswith("django_clerk_sync.")]


@pytest.fixture
def linked(db):
    return sync.sync_user(clerk_user(CLERK_ID), source="webhook").user


def whoami(token):
    return Client().get("/whoami/", HTTP_AUTHORIZATION=f"Bearer {token}")


@pytest.mark.parametrize(
    "name", ["CLERK_ACCEPT_TOKENS_WITHOUT_AZP", "CLERK_ALLOW_PENDING_SESSIONS"]
)
def test_a_string_false_is_false_and_named_by_e039(sim, clerk_env, linked, name):
    setattr(clerk_env, name, "False")  # as an environment variable gives it

    assert "django_clerk_sync.E039" in ids(run_checks())
    claims = (
        {"azp": None}
        if name == "CLERK_ACCEPT_TOKENS_WITHOUT_AZP"
        else {"sts": "pending"}
    )
    response = whoami(sim.mint_session_token(CLERK_ID, claims=claims))
    assert response.status_code == 200
    assert response.json()["authenticated"] is False
    assert response.json()["rejection"] in ("missing_party", "pending_session")


@pytest.mark.parametrize("parties", [5, True, {"https://app.example": 1}.keys()])
def test_authorized_parties_of_the_wrong_type_fail_closed(
    sim, clerk_env, linked, parties
):
    clerk_env.CLERK_AUTHORIZED_PARTIES = parties

    assert "django_clerk_sync.E036" in ids(run_checks())
    response = whoami(sim.mint_session_token(CLERK_ID, azp="https://app.example"))
    assert response.status_code == 200  # never a 500
    assert response.json()["authenticated"] is False
    assert response.json()["rejection"] == "wrong_party"
    no_token = Client().get("/whoami/")
    assert no_token.status_code == 200


@pytest.mark.parametrize("timeout", [math.inf, math.nan, "5", -1, 0])
def test_an_unusable_http_timeout_is_e034(settings, timeout):
    settings.CLERK_HTTP_TIMEOUT = timeout
    assert "django_clerk_sync.E034" in ids(run_checks())


# --- Endpoint settings of the wrong type or shape: never a 500 (E040-E045) ----------


@pytest.mark.parametrize("url", [8765, ["x"]])
def test_an_api_url_that_is_not_a_string_is_e040_and_never_a_500(sim, clerk_env, url):
    clerk_env.CLERK_API_URL = url
    clerk_env.CLERK_SECRET_KEY = sim.secret_key
    del clerk_env.CLERK_JWKS_URL  # the keys come from {CLERK_API_URL}/v1/jwks

    assert "django_clerk_sync.E040" in ids(run_checks())
    response = Client().get("/whoami/")  # anonymous: no fetch, nothing to refuse
    assert response.status_code == 200
    assert response.json()["authenticated"] is False


@pytest.mark.parametrize(
    "name, value, check",
    [
        ("CLERK_API_URL", "api.clerk.com", "E040"),  # no scheme
        ("CLERK_JWKS_URL", "not a url", "E041"),
        ("CLERK_JWKS_URL", "file:///etc/passwd", "E041"),  # only http(s) is fetched
    ],
)
def test_a_jwks_url_that_is_not_http_is_a_failed_fetch_logged_once(
    sim, clerk_env, linked, caplog, name, value, check
):
    setattr(clerk_env, name, value)
    if name == "CLERK_API_URL":
        clerk_env.CLERK_SECRET_KEY = sim.secret_key
        del clerk_env.CLERK_JWKS_URL

    assert f"django_clerk_sync.{check}" in ids(run_checks())
    with caplog.at_level("WARNING", logger="django_clerk_sync"):
        for _ in range(3):  # within one cooldown
            response = whoami(sim.mint_session_token(CLERK_ID))
            assert response.status_code == 200
            body = response.json()
            assert (body["authenticated"], body["rejection"]) == (
                False,
                "keys_unavailable",
            )
    failures = [r for r in caplog.records if "JWKS" in r.getMessage()]
    assert len(failures) == 1  # one fetch per cooldown, so one line
    assert "is not an http(s) URL" in failures[0].getMessage()
    assert failures[0].exc_info is None  # a line, not a traceback
    assert sim.secret_key not in caplog.text
    assert sim.request_count() == 0


@pytest.mark.parametrize("issuer", [123, ["x"]])
def test_an_issuer_that_is_not_a_string_is_e042_and_never_a_500(
    sim, clerk_env, linked, issuer
):
    clerk_env.CLERK_JWT_ISSUER = issuer

    assert "django_clerk_sync.E042" in ids(run_checks())
    # The issuer then comes from the publishable key (https://...), which the
    # simulator's http:// tokens do not carry.
    response = whoami(sim.mint_session_token(CLERK_ID))
    assert response.status_code == 200
    assert response.json()["rejection"] == "wrong_issuer"


def test_a_jwks_cache_alias_missing_from_caches_is_e045_and_keys_stay_per_process(
    sim, clerk_env, linked
):
    clerk_env.CLERK_JWKS_CACHE = "nonexistent"

    assert "django_clerk_sync.E045" in ids(run_checks())
    response = whoami(sim.mint_session_token(CLERK_ID))
    assert response.status_code == 200
    assert response.json()["authenticated"] is True


@pytest.mark.parametrize(
    "name, value, check",
    [
        ("CLERK_API_RATE_LIMIT", 100, "E043"),
        ("CLERK_API_RATE_LIMIT", None, "E043"),
        ("CLERK_API_RATE_LIMIT", "100/10", "E043"),
        ("CLERK_API_RATE_LIMIT", (0, 10), "E043"),
        ("CLERK_API_RATE_LIMIT", (-1, 10), "E043"),
        ("CLERK_API_RATE_LIMIT", (0.5, 10), "E043"),
        ("CLERK_API_MAX_RETRIES", None, "E044"),
        ("CLERK_API_MAX_RETRIES", "x", "E044"),
    ],
)
def test_first_sight_fetch_uses_the_defaults_for_unusable_api_settings(
    sim, clerk_env, db, name, value, check
):
    clerk_env.CLERK_SYNC_FIRST_SIGHT = "fetch"
    clerk_env.CLERK_API_URL = sim.url
    clerk_env.CLERK_SECRET_KEY = sim.secret_key
    setattr(clerk_env, name, value)
    clerk_id = (
        "user_2fetch" + hashlib.sha256(repr((name, value)).encode()).hexdigest()[:12]
    )
    sim.add_user(clerk_id, username=clerk_id[-12:])

    if value is not None:  # None reads as unset, so the default, and no check
        assert f"django_clerk_sync.{check}" in ids(run_checks())
    response = whoami(sim.mint_session_token(clerk_id))
    assert response.status_code == 200
    assert response.json()["user"] == clerk_id[-12:]
