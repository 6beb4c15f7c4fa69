"""Operating it: replay, prune, status, and the admin's reprocess action."""

import io
import json
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from django_clerk_sync import get_user
from django_clerk_sync.models import WebhookEvent
from django_clerk_sync.signals import clerk_user_synced
from django_clerk_sync.testing import clerk_user, event

from .conftest import load_event


def run(command, *args, **options):
    out, err = io.StringIO(), io.StringIO()
    call_command(command, *args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def failed_event(deliver):
    """A user.created whose receiver failed: stored as failed, signal pending."""
    calls = []

    def flaky(sender, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("mail server down")

    clerk_user_synced.connect(flaky, weak=False)
    response = deliver(load_event("user_created"), svix_id="msg_failed")
    assert response.status_code == 500
    yield WebhookEvent.objects.get(svix_id="msg_failed")
    clerk_user_synced.disconnect(flaky)


def test_replay_failed_events(failed_event, signals_received):
    out, _ = run("clerk_replay_events", "--failed")

    assert "msg_failed: processed (created)" in out
    assert "1 event(s) processed, 0 failed again" in out
    failed_event.refresh_from_db()
    assert failed_event.status == "processed"
    # Replaying again finds nothing to do.
    out, _ = run("clerk_replay_events", "--failed")
    assert "0 event(s) processed" in out


def test_replay_by_id_is_idempotent_and_dry_run_does_nothing(deliver, failed_event):
    deliver(event("user.created", clerk_user("user_other")), svix_id="msg_ok")

    dry, _ = run("clerk_replay_events", "--ids", "msg_failed", "msg_ok", "--dry-run")
    assert "would process msg_failed (user.created, failed)" in dry
    assert "msg_ok: already processed (created)" in dry
    assert "would process msg_ok" not in dry
    assert dry.splitlines()[-1] == "1 event(s) would be processed"
    failed_event.refresh_from_db()
    assert failed_event.status == "failed"

    out, _ = run("clerk_replay_events", "--ids", "msg_failed", "msg_ok")
    assert "msg_ok: already processed (created)" in out
    assert "msg_failed: processed (created)" in out


def test_replay_filters_and_refuses_unknown_ids(failed_event):
    out, _ = run("clerk_replay_events", "--failed", "--type", "user.deleted")
    assert "0 event(s) processed" in out
    tomorrow = (timezone.now() + timedelta(days=1)).date().isoformat()
    out, _ = run("clerk_replay_events", "--failed", "--since", tomorrow)
    assert "0 event(s) processed" in out
    with pytest.raises(CommandError, match="no stored event with svix-id msg_nope"):
        run("clerk_replay_events", "--ids", "msg_nope")
    with pytest.raises(CommandError, match="say which events"):
        run("clerk_replay_events")


def test_replay_reports_an_event_that_fails_again(deliver, settings):
    def broken(clerk_user):
        raise RuntimeError("still broken")

    settings.CLERK_SYNC_FIELD_MAP = {"first_name": broken}
    deliver(load_event("user_created"), svix_id="msg_broken")

    with pytest.raises(CommandError, match="1 event\\(s\\) failed again"):
        run("clerk_replay_events", "--failed")
    assert WebhookEvent.objects.get(svix_id="msg_broken").attempts == 2


def test_prune_keeps_failed_events_unless_told(deliver, failed_event):
    deliver(event("user.created", clerk_user("user_old")), svix_id="msg_old")
    WebhookEvent.objects.update(received_at=timezone.now() - timedelta(days=40))

    out, _ = run("clerk_prune_events", "--older-than", "30d", "--dry-run")
    assert "1 event(s)" in out and "would be deleted" in out
    run("clerk_prune_events", "--older-than", "30d")
    assert list(WebhookEvent.objects.values_list("svix_id", flat=True)) == [
        "msg_failed"
    ]
    run("clerk_prune_events", "--older-than", "30d", "--include-failed")
    assert WebhookEvent.objects.count() == 0
    assert get_user("user_old") is not None  # pruning the log never touches users


@pytest.mark.parametrize("age", ["30", "thirty days", "-1d", "", "9" * 5000 + "d"])
def test_prune_refuses_an_unclear_age(age, db):
    with pytest.raises(CommandError, match="--older-than"):
        run("clerk_prune_events", "--older-than", age)


def test_status_for_people_and_probes(deliver, failed_event):
    deliver(event("user.created", clerk_user("user_live")))
    deliver(load_event("user_deleted"))

    out = io.StringIO()
    with pytest.raises(CommandError, match="1 failed event\\(s\\) pending"):
        call_command("clerk_sync_status", "--json", stdout=out)
    status = json.loads(out.getvalue())
    assert status["linked_users"] == 1 and status["tombstones"] == 1
    assert status["events"] == {
        "received": 0,
        "processed": 2,
        "ignored": 0,
        "failed": 1,
    }
    assert status["oldest_failed_event_received_at"] is not None

    run("clerk_replay_events", "--failed")
    text, _ = run("clerk_sync_status")  # healthy again: exits 0
    assert "linked users:  1" in text and "failed 0" in text


def test_admin_reprocess_action(failed_event, client):
    admin = get_user_model().objects.create_superuser("admin", "", "pw")
    client.force_login(admin)
    changelist = reverse("admin:django_clerk_sync_webhookevent_changelist")

    page = client.get(changelist)
    assert b"Reprocess selected events" in page.content
    csrf = page.cookies["csrftoken"].value
    response = client.post(
        changelist,
        {
            "action": "reprocess",
            "_selected_action": [failed_event.pk],
            "csrfmiddlewaretoken": csrf,
        },
        follow=True,
    )

    assert b"1 event(s) processed, 0 failed again." in response.content
    failed_event.refresh_from_db()
    assert failed_event.status == "processed"


@pytest.mark.parametrize(
    "args",
    [
        ["clerk_backfill", "--since"],
        ["clerk_replay_events", "--failed", "--since"],
    ],
)
def test_a_time_of_thousands_of_digits_is_a_one_line_error(args, db):
    # int() itself refuses past 4,300 digits, with a ValueError, not a CommandError.
    with pytest.raises(CommandError, match="bad --since .*too large"):
        run(*args, "9" * 5000)
