"""The admin shows the event log and the links, and never writes them."""

import json

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from django_clerk_sync import get_user
from django_clerk_sync.models import ClerkUserLink

from .conftest import load_event

CLERK_ID = "user_29w83sxmDNGwOuEthce5gg56FcC"  # in tests/fixtures/user_created.json


@pytest.fixture
def admin_client_csrf(client):
    admin = get_user_model().objects.create_superuser("admin", "", "pw")
    client.force_login(admin)
    return client


def test_event_log_lists_filters_and_shows_the_payload(deliver, admin_client_csrf):
    deliver(load_event("user_created"), svix_id="msg_admin_1")
    deliver(load_event("session_created"), svix_id="msg_admin_2")

    changelist = reverse("admin:django_clerk_sync_webhookevent_changelist")
    page = admin_client_csrf.get(changelist, {"status__exact": "ignored"})
    assert page.status_code == 200
    assert b"msg_admin_2" in page.content and b"msg_admin_1" not in page.content

    page = admin_client_csrf.get(changelist, {"q": "user_29w83sxmDNGwOuEthce5gg56FcC"})
    assert b"msg_admin_1" in page.content and b"msg_admin_2" not in page.content

    from django_clerk_sync.models import WebhookEvent

    event = WebhookEvent.objects.get(svix_id="msg_admin_1")
    detail = admin_client_csrf.get(
        reverse("admin:django_clerk_sync_webhookevent_change", args=[event.pk])
    )
    assert detail.status_code == 200
    # The payload is pretty-printed and escaped, not shown as raw bytes.
    assert b"&quot;type&quot;: &quot;user.created&quot;" in detail.content
    assert b'name="_save"' not in detail.content  # read-only


def test_a_deeply_nested_payload_is_shown_as_sent_not_indented(
    deliver, admin_client_csrf
):
    # Indenting costs the square of the depth: 5,000 levels (which Python 3.13's
    # parser accepts) made the page take minutes. 300 parses on every Python.
    from django_clerk_sync.models import WebhookEvent

    envelope = load_event("user_created")
    envelope["data"]["public_metadata"] = {"deep": "[" * 300 + "]" * 300}
    envelope["data"]["unsafe_metadata"] = json.loads("[" * 300 + "]" * 300)
    deliver(envelope, svix_id="msg_admin_deep")
    event = WebhookEvent.objects.get(svix_id="msg_admin_deep")

    detail = admin_client_csrf.get(
        reverse("admin:django_clerk_sync_webhookevent_change", args=[event.pk])
    )

    assert detail.status_code == 200
    assert event.body_text.replace('"', "&quot;").encode() in detail.content
    assert b"&quot;type&quot;: &quot;user.created&quot;" in detail.content
    assert b"\n  &quot;data&quot;" not in detail.content  # not indented


def test_a_payload_that_would_indent_to_megabytes_is_shown_as_sent(
    deliver, admin_client_csrf
):
    # 20,000 values 50 levels down: a 40 kB body, 2 MB once indented.
    from django_clerk_sync.models import WebhookEvent

    envelope = load_event("user_created")
    envelope["data"]["unsafe_metadata"] = {
        "n": json.loads("[" * 50 + ",".join(["0"] * 20_000) + "]" * 50)
    }
    deliver(envelope, svix_id="msg_admin_wide")
    event = WebhookEvent.objects.get(svix_id="msg_admin_wide")

    detail = admin_client_csrf.get(
        reverse("admin:django_clerk_sync_webhookevent_change", args=[event.pk])
    )

    assert detail.status_code == 200
    assert len(detail.content) < 4 * len(event.body_text) + 200_000
    assert b"0, 0, 0" in detail.content  # as sent, not one value per line


def test_a_payload_with_a_lone_surrogate_opens(deliver, admin_client_csrf):
    from django_clerk_sync.models import WebhookEvent

    envelope = load_event("user_created")
    body = json.dumps(envelope).replace(
        '"first_name": ', '"first_name": "\\ud800x", "x": ', 1
    )
    deliver(body.encode(), svix_id="msg_admin_surrogate")
    event = WebhookEvent.objects.get(svix_id="msg_admin_surrogate")

    detail = admin_client_csrf.get(
        reverse("admin:django_clerk_sync_webhookevent_change", args=[event.pk])
    )

    assert detail.status_code == 200
    assert b"\\ud800x" in detail.content


def test_admin_cannot_add_or_delete_events(deliver, admin_client_csrf):
    deliver(load_event("user_created"))
    add = admin_client_csrf.get(reverse("admin:django_clerk_sync_webhookevent_add"))
    assert add.status_code == 403
    links = admin_client_csrf.get(
        reverse("admin:django_clerk_sync_clerkuserlink_changelist")
    )
    assert links.status_code == 200
    assert b"user_29w83sxmDNGwOuEthce5gg56FcC" in links.content


def test_the_user_admin_page_shows_the_clerk_link_read_only(deliver, admin_client_csrf):
    deliver(load_event("user_created"))
    user = get_user(CLERK_ID)
    link = ClerkUserLink.objects.get(clerk_id=CLERK_ID)

    page = admin_client_csrf.get(reverse("admin:auth_user_change", args=[user.pk]))

    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="clerk_link-group"' in html
    assert f'<div class="readonly">{CLERK_ID}</div>' in html
    assert 'name="clerk_link-0-clerk_id"' not in html  # shown, not editable
    link_page = reverse("admin:django_clerk_sync_clerkuserlink_change", args=[link.pk])
    assert link_page in html


def test_search_matches_whole_ids_exactly_so_the_indexes_answer_it(
    deliver, admin_client_csrf
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    deliver(load_event("user_created"), svix_id="msg_Admin_Case")
    changelist = reverse("admin:django_clerk_sync_webhookevent_changelist")

    with CaptureQueriesContext(connection) as queries:
        found = admin_client_csrf.get(changelist, {"q": " msg_Admin_Case "})
    assert b"msg_Admin_Case" in found.content
    searches = [q["sql"] for q in queries if '"svix_id" =' in q["sql"]]
    assert searches and not any("UPPER" in sql or "LIKE" in sql for sql in searches)

    # Ids are case-sensitive, and only whole ids match.
    for term in ("msg_admin_case", "msg_Admin", CLERK_ID.lower()):
        page = admin_client_csrf.get(changelist, {"q": term})
        assert b"msg_Admin_Case" not in page.content, term

    links = reverse("admin:django_clerk_sync_clerkuserlink_changelist")
    assert CLERK_ID.encode() in admin_client_csrf.get(links, {"q": CLERK_ID}).content
    assert b"0 results" in admin_client_csrf.get(links, {"q": CLERK_ID[:10]}).content
