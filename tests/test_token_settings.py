"""Token settings given the wrong type fail closed and are named by a check."""

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


@pytest.mark.parametrize("name", ["CLERK_ACCEPT_TOKENS_WITHOUT_AZP", "CLERK_ALLOW_PENDING_SESSIONS"])
def test_a_string_false_is_false_and_named_by_e039(sim, clerk_env, linked, name):
    setattr(clerk_env, name, "False")  # as an environment variable gives it

    assert "django_clerk_sync.E039" in ids(run_checks())
    claims = {"azp": None} if name == "CLERK_ACCEPT_TOKENS_WITHOUT_AZP" else {"sts": "pending"}
    response = whoami(sim.mint_session_token(CLERK_ID, claims=claims))
    assert response.status_code == 200
    assert response.json()["authenticated"] is False
    assert response.json()["rejection"] in ("missing_party", "pending_session")


@pytest.mark.parametrize("parties", [5, True, {"https://app.example": 1}.keys()])
def test_authorized_parties_of_the_wrong_type_fail_closed(sim, clerk_env, linked, parties):
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
