"""``django_clerk_sync.contrib.drf.ClerkAuthentication`` (Django REST Framework is an
optional extra: ``pip install django-clerk-sync[drf]``)."""

import time

import pytest

pytest.importorskip(
    "rest_framework", reason="djangorestframework is not installed (the [drf] extra)"
)

from django.test import Client  # noqa: E402

from django_clerk_sync import sync  # noqa: E402
from django_clerk_sync.testing import clerk_user  # noqa: E402

from .token_support import (
    clerk_env,
    fresh_verifiers,
    sim,
)  # noqa: E402,F401  (fixtures)

CLERK_ID = "user_2drf"
URL = "/drf/whoami/"


@pytest.fixture
def api_env(clerk_env):
    """DRF alone: the middleware is not installed."""
    clerk_env.MIDDLEWARE = [
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
    ]
    return clerk_env


@pytest.fixture
def linked(db):
    return sync.sync_user(clerk_user(CLERK_ID, username="drf"), source="webhook").user


def get(token=None, **extra):
    if token is not None:
        extra["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return Client().get(URL, **extra)


def test_a_valid_token_authenticates(sim, api_env, linked):
    response = get(sim.mint_session_token(CLERK_ID, sid="sess_2drf"))

    assert response.status_code == 200
    assert response.json() == {
        "user": "drf",
        "clerk_user_id": CLERK_ID,
        "session_id": "sess_2drf",
    }


def test_the_session_cookie_works_too(sim, api_env, linked):
    client = Client()
    client.cookies["__session"] = sim.mint_session_token(CLERK_ID)

    assert client.get(URL).json()["user"] == "drf"


def test_an_expired_token_is_401_with_the_reason(sim, api_env, linked):
    now = int(time.time())
    response = get(sim.mint_session_token(CLERK_ID, iat=now - 90, exp=now - 30))

    assert response.status_code == 401
    assert response.json() == {"detail": "The token has expired.", "code": "expired"}
    assert response["WWW-Authenticate"] == (
        'Bearer realm="api", error="invalid_token", error_description="expired"'
    )


@pytest.mark.parametrize(
    "token, reason",
    [("garbage", "malformed"), ("a.b.c", "malformed")],
)
def test_garbage_is_401_never_500(sim, api_env, db, token, reason):
    response = get(token)

    assert (response.status_code, response.json()["code"]) == (401, reason)


def test_a_deleted_user_is_401(sim, api_env, linked):
    sync.delete_user(CLERK_ID, source="webhook")

    response = get(sim.mint_session_token(CLERK_ID))

    assert (response.status_code, response.json()["code"]) == (401, "user_deleted")


def test_no_token_is_401_with_a_bearer_challenge(sim, api_env, db):
    response = get()

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


def test_with_the_middleware_the_token_is_checked_once(
    sim, clerk_env, linked, django_assert_num_queries
):
    token = sim.mint_session_token(CLERK_ID)

    with django_assert_num_queries(1):  # the middleware's lookup; DRF reuses it
        assert get(token).json()["user"] == "drf"

    response = get(sim.mint_session_token(CLERK_ID, azp="https://evil.example.com"))
    assert (response.status_code, response.json()["code"]) == (401, "wrong_party")


def test_a_cookie_token_on_an_unsafe_method_needs_a_csrf_token(sim, api_env, linked):
    """The browser sends __session by itself, also on another site's forged form:
    like DRF's SessionAuthentication, a cookie token is CSRF-checked."""
    client = Client(enforce_csrf_checks=True)
    client.cookies["__session"] = sim.mint_session_token(CLERK_ID)

    forged = client.post(URL, HTTP_ORIGIN="https://evil.example")
    assert forged.status_code == 403
    assert "CSRF" in forged.json()["detail"]

    page = client.get(URL)  # a safe method: no check
    assert page.status_code == 200
    client.cookies["csrftoken"] = "a" * 32
    genuine = client.post(URL, HTTP_X_CSRFTOKEN="a" * 32)
    assert genuine.status_code == 200


def test_a_bearer_token_needs_no_csrf_token(sim, api_env, linked):
    client = Client(enforce_csrf_checks=True)
    token = sim.mint_session_token(CLERK_ID)
    response = client.post(
        URL, HTTP_AUTHORIZATION=f"Bearer {token}", HTTP_ORIGIN="https://app.example"
    )
    assert response.status_code == 200


def test_with_the_middleware_a_cookie_token_is_csrf_checked_too(sim, clerk_env, linked):
    client = Client(enforce_csrf_checks=True)
    client.cookies["__session"] = sim.mint_session_token(CLERK_ID)
    assert client.post(URL).status_code == 403


@pytest.mark.parametrize("with_middleware", [False, True])
def test_a_stale_session_cookie_falls_through_to_a_session_login(
    sim, clerk_env, linked, with_middleware
):
    """ClerkAuthentication listed first, SessionAuthentication next: an expired
    __session cookie does not shut out the Django session login beside it."""
    from django.contrib.auth import get_user_model
    from django.test import override_settings
    from rest_framework.authentication import SessionAuthentication

    from django_clerk_sync.contrib.drf import ClerkAuthentication

    if not with_middleware:
        clerk_env.MIDDLEWARE = [
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
        ]
    staff = get_user_model().objects.create_user("staff", password="x")
    client = Client()
    client.force_login(staff)
    now = int(time.time())
    client.cookies["__session"] = sim.mint_session_token(
        CLERK_ID, iat=now - 90, exp=now - 30
    )
    from tests.token_urls import DRFWhoAmI

    DRFWhoAmI.authentication_classes = [ClerkAuthentication, SessionAuthentication]
    try:
        response = client.get(URL)
    finally:
        DRFWhoAmI.authentication_classes = [ClerkAuthentication]
    assert response.status_code == 200, response.content
    assert response.json()["user"] == "staff"
