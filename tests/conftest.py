import json
import os
from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse

from django_clerk_sync.signals import clerk_user_deleted, clerk_user_synced
from django_clerk_sync.testing import post_webhook

FIXTURES = Path(__file__).parent / "fixtures"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

# tests/custom_user runs in its own session with its own AUTH_USER_MODEL.
if os.environ.get("DJANGO_SETTINGS_MODULE") != "tests.custom_user.settings":
    collect_ignore = ["custom_user"]


def load_event(name, **data_changes):
    """A captured Clerk event from tests/fixtures, with ``data`` keys overridden."""
    envelope = json.loads((FIXTURES / f"{name}.json").read_text())
    envelope["data"].update(data_changes)
    return envelope


def to_body(envelope):
    return json.dumps(envelope).encode() if isinstance(envelope, dict) else envelope


@pytest.fixture
def webhook_url():
    return reverse("django_clerk_sync:webhook")


@pytest.fixture
def client():
    # The webhook must work with CSRF checks on, as in production.
    return Client(enforce_csrf_checks=True)


@pytest.fixture
def deliver(client, webhook_url, transactional_db):
    """POST a signed delivery through the test client; return the response.

    Uses ``transactional_db`` so transactions really commit and signals fire
    on commit, as in production.
    """

    def post(envelope, *, svix_id=None, timestamp=None, secret=SECRET, headers=None):
        return post_webhook(
            client,
            envelope,
            secret=secret,
            svix_id=svix_id,
            timestamp=timestamp,
            url=webhook_url,
            headers=headers,
        )

    return post


@pytest.fixture
def signals_received():
    """Every clerk_user_synced / clerk_user_deleted sent during the test."""
    received = []

    def on_synced(sender, **kwargs):
        received.append(("synced", kwargs))

    def on_deleted(sender, **kwargs):
        received.append(("deleted", kwargs))

    clerk_user_synced.connect(on_synced, weak=False)
    clerk_user_deleted.connect(on_deleted, weak=False)
    yield received
    clerk_user_synced.disconnect(on_synced)
    clerk_user_deleted.disconnect(on_deleted)
