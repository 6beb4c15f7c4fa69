"""Session tokens with an email-as-username user model (``custom_user.EmailUser``)."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from django_clerk_sync import get_user
from django_clerk_sync.testing import auth_header, clerk_user, event

from ..token_support import fresh_verifiers, token_views  # noqa: F401  (fixtures)


def whoami(token):
    response = Client().get("/whoami/", headers=auth_header(token))
    assert response.status_code == 200
    return response.json()


# clerk_keys, clerk_webhook: the package's pytest plugin.
@pytest.mark.django_db(transaction=True)
def test_first_sight_then_webhook_is_one_user(token_views, clerk_keys, clerk_webhook):
    token = clerk_keys.token("user_2emailer")

    # No email yet: the login value is the Clerk id, as for a phone-only user.
    assert whoami(token)["user"] == "user_2emailer"

    payload = clerk_user("user_2emailer", email="emma@example.com", first_name="Emma")
    assert clerk_webhook(event("user.created", payload)).status_code == 200

    assert get_user_model().objects.count() == 1
    assert get_user("user_2emailer").email == "emma@example.com"
    assert whoami(token)["user"] == "emma@example.com"
