from django.contrib.auth import get_user_model

from django_clerk_sync import get_user
from django_clerk_sync.models import WebhookEvent

from .conftest import load_event


def test_created_then_updated(deliver, signals_received):
    r = deliver(load_event("user_created"))
    assert r.status_code == 200, r.content
    user = get_user("user_29w83sxmDNGwOuEthce5gg56FcC")
    assert user.email == "example@example.org"
    r = deliver(load_event("user_updated"))
    assert r.status_code == 200, r.content
    user.refresh_from_db()
    assert (user.email, user.last_name, user.username) == (
        "new-primary@example.org",
        "Renamed",
        "example",
    )
    assert [s[0] for s in signals_received] == ["synced", "synced"]
    assert WebhookEvent.objects.filter(status="processed").count() == 2
    r = deliver(load_event("user_deleted"))
    assert r.json()["outcome"] == "deleted"
    user.refresh_from_db()
    assert not user.is_active
    assert get_user_model().objects.count() == 1
