"""Odd things that arrive correctly signed, and requests that break off.

Clerk relays what users write (``unsafe_metadata`` comes from the browser), so a
verified payload can still be hostile. None of it may crash the endpoint, be
acknowledged and silently dropped, or be retried for 27 hours when no retry helps.
"""

import json
import logging
import socket
import struct
import time

import pytest
from django.contrib.auth import get_user_model
from django.db.models.signals import post_save
from django.urls import reverse
from django.views.debug import ExceptionReporter

from django_clerk_sync import get_user
from django_clerk_sync.models import ClerkUserLink, WebhookEvent
from django_clerk_sync.signals import clerk_user_synced
from django_clerk_sync.testing import clerk_user, deleted_user, event, signed_headers

from .conftest import SECRET

User = get_user_model()


def raw_event(event_type, data_json):
    """An envelope whose ``data`` is given as raw JSON text (escapes kept as written)."""
    return (
        f'{{"object": "event", "type": "{event_type}", "data": {data_json}}}'
    ).encode()


def test_metadata_nested_too_deep_to_parse_is_a_visible_permanent_failure(deliver):
    deliver(event("user.created", clerk_user("user_deep", first_name="Before")))
    deep = "[" * 100_000 + "]" * 100_000
    user = json.dumps(clerk_user("user_deep", first_name="After", updated_at=2**40))
    body = raw_event(
        "user.updated",
        user.replace('"unsafe_metadata": {}', f'"unsafe_metadata": {deep}'),
    )

    response = deliver(body, svix_id="msg_deep")

    # Not acknowledged as "ignored": it fails, visibly, and Svix is told not to retry.
    assert response.status_code == 409
    assert response.headers["webhook-delivery"] == "abort-message"
    assert "nested too deeply" in response.json()["reason"]
    stored = WebhookEvent.objects.get(svix_id="msg_deep")
    assert stored.status == "failed"
    assert stored.outcome.startswith(
        "permanent: PermanentFailure: the payload is nested"
    )
    assert bytes(stored.body) == body
    assert get_user("user_deep").first_name == "Before"


def test_an_event_nested_too_deep_to_parse_can_be_read_in_the_admin(deliver, client):
    """The 409 asks an operator to look at the stored event: its admin page must
    open (it raised RecursionError, a 500), showing the body as it arrived."""
    deep = "[" * 100_000 + "]" * 100_000
    user = json.dumps(clerk_user("user_deep", first_name="Ada"))
    body = raw_event(
        "user.created",
        user.replace('"unsafe_metadata": {}', f'"unsafe_metadata": {deep}'),
    )
    assert deliver(body, svix_id="msg_deep").status_code == 409
    client.force_login(User.objects.create_superuser("admin", "", "pw"))
    stored = WebhookEvent.objects.get(svix_id="msg_deep")

    page = client.get(
        reverse("admin:django_clerk_sync_webhookevent_change", args=[stored.pk])
    )

    assert page.status_code == 200
    assert b"msg_deep" in page.content
    assert b"&quot;first_name&quot;: &quot;Ada&quot;" in page.content  # the body, shown


def test_a_huge_integer_in_metadata_does_not_make_the_event_unreadable(deliver):
    user = json.dumps(clerk_user("user_bigint", first_name="Ada"))
    body = raw_event(
        "user.created",
        user.replace(
            '"public_metadata": {}', '"public_metadata": {"n": %s}' % ("9" * 5000)
        ),
    )

    response = deliver(body)

    assert response.json() == {"status": "processed", "outcome": "created"}
    assert get_user("user_bigint").first_name == "Ada"


def test_lone_surrogates_are_stored_or_cleaned_never_a_crash(deliver):
    odd_type = deliver(raw_event("\\ud800", '{"id": "user_x"}'), svix_id="msg_odd_type")
    assert odd_type.status_code == 200 and odd_type.json()["status"] == "ignored"
    assert WebhookEvent.objects.get(svix_id="msg_odd_type").event_type == ""

    odd_id = deliver(
        raw_event("user.created", '{"id": "user_\\ud800"}'), svix_id="msg_odd_id"
    )
    assert odd_id.status_code == 200 and odd_id.json()["status"] == "ignored"
    assert ClerkUserLink.objects.count() == 0

    user = json.dumps(clerk_user("user_surrogate", first_name="X"))
    named = deliver(
        raw_event(
            "user.created",
            user.replace('"first_name": "X"', '"first_name": "Zo\\ud800\\u0000e"'),
        )
    )
    assert named.json() == {"status": "processed", "outcome": "created"}
    assert get_user("user_surrogate").first_name == "Zo?e"


@pytest.mark.parametrize("updated_at", ["1e400", str(2**63), "-5", "true", '"soon"'])
def test_an_unusable_updated_at_is_treated_as_absent(deliver, updated_at):
    user = json.dumps(clerk_user("user_time", first_name="Ada", updated_at=123))
    response = deliver(
        raw_event(
            "user.created",
            user.replace('"updated_at": 123', f'"updated_at": {updated_at}'),
        )
    )

    assert response.json() == {"status": "processed", "outcome": "created"}
    assert ClerkUserLink.objects.get(clerk_id="user_time").clerk_updated_at is None


def test_a_mapped_value_the_field_cannot_hold_leaves_that_field_alone(
    deliver, settings, caplog
):
    settings.CLERK_SYNC_FIELD_MAP = {
        "first_name": "first_name",
        "is_staff": "public_metadata.staff",
        "last_login": "public_metadata.seen",
    }
    payload = clerk_user(
        "user_types",
        first_name="Ada",
        public_metadata={
            "staff": "yes, ada@example.com",
            "seen": "2024-05-01T10:00:00Z",
        },
    )

    with caplog.at_level(logging.WARNING, logger="django_clerk_sync"):
        first = deliver(event("user.created", payload))
    again = deliver(event("user.updated", payload))

    assert first.json() == {"status": "processed", "outcome": "created"}
    user = get_user("user_types")
    assert (user.first_name, user.is_staff) == ("Ada", False)
    assert user.last_login.isoformat() == "2024-05-01T10:00:00+00:00"
    # The same ISO time converts to the same value: nothing changed the second time.
    assert again.json() == {"status": "processed", "outcome": "unchanged"}
    assert "'is_staff' is unusable (not a valid BooleanField)" in caplog.text
    assert "ada@example.com" not in caplog.text


def test_an_email_too_long_for_the_field_is_refused_not_cut(deliver, caplog):
    long_email = "a" * 245 + "@corp.com.evil.io"  # cut to 254 it would end @corp.com

    with caplog.at_level(logging.WARNING, logger="django_clerk_sync"):
        response = deliver(
            event("user.created", clerk_user("user_long", email=long_email))
        )

    assert response.json() == {"status": "processed", "outcome": "created"}
    assert get_user("user_long").email == ""
    assert "'email' is unusable" in caplog.text and "corp.com" not in caplog.text


def test_a_retried_created_signal_is_not_sent_for_a_user_deleted_since(
    deliver, signals_received
):
    failures = []

    def fails_once(sender, **kwargs):
        if not failures:
            failures.append(True)
            raise RuntimeError("mail server down")

    created = event("user.created", clerk_user("user_gone", email="g@example.com"))
    clerk_user_synced.connect(fails_once, weak=False)
    try:
        assert deliver(created, svix_id="msg_gone").status_code == 500
    finally:
        clerk_user_synced.disconnect(fails_once)
    assert deliver(event("user.deleted", deleted_user("user_gone"))).status_code == 200
    signals_received.clear()

    retry = deliver(created, svix_id="msg_gone")

    assert retry.status_code == 200
    assert signals_received == []
    assert WebhookEvent.objects.get(svix_id="msg_gone").status == "processed"


def test_a_svix_id_with_control_characters_is_refused(deliver):
    body = event("user.created", clerk_user("user_ctl"))
    response = deliver(body, svix_id="msg_\x01bad")
    assert response.status_code == 400
    assert "control characters" in response.json()["reason"]
    assert WebhookEvent.objects.count() == 0


def test_a_body_that_breaks_off_is_a_400_not_a_server_error(live_server, caplog):
    """Anyone can open a request and reset it mid-body: no 500, no error report."""
    host, port = live_server.thread.host, live_server.thread.port
    with caplog.at_level(logging.WARNING):
        sock = socket.create_connection((host, port))
        sock.sendall(
            b"POST /api/webhooks/clerk/ HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n0123456789"
        )
        time.sleep(0.2)  # the server is now waiting for the rest of the body
        # Close with a reset (linger 0), as a client that gives up does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        deadline = time.monotonic() + 5
        while "could not be read" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)

    assert "the body could not be read" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert WebhookEvent.objects.count() == 0


def test_error_reports_hide_the_signing_secrets(client, webhook_url, transactional_db):
    """An unexpected crash after verification reaches Django's error report (admin
    emails, DEBUG pages) with the view's locals: the secrets must be masked."""

    def storage_breaks(sender, **kwargs):
        raise RuntimeError("storage broke")

    body = event("user.created", clerk_user("user_report"))
    post_save.connect(storage_breaks, sender=WebhookEvent, weak=False)
    try:
        with pytest.raises(RuntimeError) as caught:
            client.post(
                webhook_url,
                body,
                content_type="application/json",
                headers=signed_headers(SECRET, body),
            )
    finally:
        post_save.disconnect(storage_breaks, sender=WebhookEvent)

    report = ExceptionReporter(None, caught.type, caught.value, caught.tb)
    html = report.get_traceback_html()  # the page and the admin email show locals
    assert "clerk_webhook" in html and "<td>secrets</td>" in html
    assert SECRET.removeprefix("whsec_") not in html
