import pytest
from django.contrib.auth import get_user_model

from django_clerk_sync import get_user
from django_clerk_sync.models import WebhookEvent

from .conftest import load_event


# clerk_webhook: the package's pytest plugin (django_clerk_sync/pytest_plugin.py).
@pytest.mark.django_db(transaction=True)
def test_created_then_updated(clerk_webhook, signals_received):
    r = clerk_webhook(load_event("user_created"))
    assert r.status_code == 200, r.content
    user = get_user("user_29w83sxmDNGwOuEthce5gg56FcC")
    assert user.email == "example@example.org"
    r = clerk_webhook(load_event("user_updated"))
    assert r.status_code == 200, r.content
    user.refresh_from_db()
    assert (user.email, user.last_name, user.username) == (
        "new-primary@example.org",
        "Renamed",
        "example",
    )
    assert [s[0] for s in signals_received] == ["synced", "synced"]
    assert WebhookEvent.objects.filter(status="processed").count() == 2
    r = clerk_webhook(load_event("user_deleted"))
    assert r.json()["outcome"] == "deleted"
    user.refresh_from_db()
    assert not user.is_active
    assert get_user_model().objects.count() == 1
