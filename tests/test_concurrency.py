"""Concurrent deliveries over real HTTP: one effect, one signal, no 500.

These need a database that lets several connections write at once, so they run on
PostgreSQL (``make test-postgres``) and skip on SQLite.
"""

from concurrent.futures import ThreadPoolExecutor

import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from django_clerk_sync.models import ClerkUserLink, WebhookEvent
from django_clerk_sync.testing import clerk_user, deliver, event

from .conftest import SECRET

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="needs concurrent writers: run with CLERK_SYNC_TEST_DB=postgres (make test-postgres)",
)


@pytest.fixture
def endpoint(live_server):
    return live_server.url + "/api/webhooks/clerk/"


def test_same_svix_id_from_20_concurrent_requests_has_one_effect(
    endpoint, signals_received
):
    body = event("user.created", clerk_user("user_race", email="race@example.com"))

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(
            pool.map(lambda _: deliver(endpoint, SECRET, body, svix_id="msg_race"), range(20))
        )

    assert sorted({status for status, _, _ in answers}) == [200]
    assert get_user_model().objects.count() == 1
    assert WebhookEvent.objects.get(svix_id="msg_race").status == "processed"
    assert len(signals_received) == 1


def test_create_and_updates_racing_for_one_clerk_id_end_on_the_newest(
    endpoint, signals_received
):
    versions = [
        ("user.created", clerk_user("user_race2", first_name="v0", updated_at=1_000)),
        *[
            ("user.updated", clerk_user("user_race2", first_name=f"v{n}", updated_at=1_000 + n))
            for n in range(1, 12)
        ],
    ]

    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(
            pool.map(lambda v: deliver(endpoint, SECRET, event(*v)), reversed(versions))
        )

    assert {status for status, _, _ in answers} == {200}
    users = get_user_model().objects.all()
    assert [u.first_name for u in users] == ["v11"]
    assert ClerkUserLink.objects.get(clerk_id="user_race2").clerk_updated_at == 1_011
    # Exactly one creation, whatever order the requests were served in.
    assert [kw["created"] for kind, kw in signals_received].count(True) == 1


def test_two_users_racing_for_one_username_are_retried_not_aborted(
    endpoint, signals_received
):
    """Both syncs see "ada" free, then both insert it: the loser's IntegrityError is
    a race (500, so Svix retries and a free username is chosen), not a permanent
    conflict (409 + abort-message)."""
    import threading

    from django.db.models.signals import pre_save

    User = get_user_model()
    both_checked = threading.Barrier(2, timeout=10)

    def hold_until_both_have_checked(sender, instance, **kwargs):
        if instance.username == "ada" and instance.pk is None:
            both_checked.wait()

    bodies = {
        clerk_id: event("user.created", clerk_user(clerk_id, username="ada"))
        for clerk_id in ("user_ada_1", "user_ada_2")
    }
    pre_save.connect(hold_until_both_have_checked, sender=User)
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            answers = dict(
                zip(
                    bodies,
                    pool.map(
                        lambda item: deliver(endpoint, SECRET, item[1], svix_id=f"msg_{item[0]}"),
                        bodies.items(),
                    ),
                )
            )
    finally:
        pre_save.disconnect(hold_until_both_have_checked, sender=User)

    statuses = sorted(status for status, _, _ in answers.values())
    assert statuses == [200, 500]
    loser = next(cid for cid, (status, _, _) in answers.items() if status == 500)
    assert "webhook-delivery" not in {k.lower() for k in answers[loser][1]}

    status, _, _ = deliver(endpoint, SECRET, bodies[loser], svix_id=f"msg_{loser}")
    assert status == 200
    assert sorted(User.objects.values_list("username", flat=True)) == ["ada", loser]
