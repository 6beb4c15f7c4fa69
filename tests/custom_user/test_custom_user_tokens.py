"""Session tokens with an email-as-username user model (``custom_user.EmailUser``)."""

import json

from django.contrib.auth import get_user_model
from django.test import Client

from django_clerk_sync import get_user
from django_clerk_sync.testing import clerk_user, event

from ..token_support import clerk_env, fresh_verifiers, sim  # noqa: F401  (fixtures)


def whoami(token):
    response = Client().get("/whoami/", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200
    return response.json()


def test_first_sight_then_webhook_is_one_user(sim, clerk_env, deliver):
    token = sim.mint_session_token("user_2emailer")

    # No email yet: the login value is the Clerk id, as for a phone-only user.
    assert whoami(token)["user"] == "user_2emailer"

    payload = clerk_user("user_2emailer", email="emma@example.com", first_name="Emma")
    assert deliver(json.loads(event("user.created", payload))).status_code == 200

    assert get_user_model().objects.count() == 1
    assert get_user("user_2emailer").email == "emma@example.com"
    assert whoami(token)["user"] == "emma@example.com"
