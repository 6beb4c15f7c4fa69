"""``manage.py clerk_send_webhook`` against the webhook view on a real loopback server."""

import io
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.urls import path, reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.generic import RedirectView

from django_clerk_sync import get_user
from django_clerk_sync.models import WebhookEvent
from tests.urls import urlpatterns as test_urlpatterns

from .conftest import FIXTURES, SECRET

REPO_ROOT = Path(__file__).resolve().parent.parent
OTHER_SECRET = "whsec_" + "QUJD" * 8  # valid, 24 bytes, not the endpoint's

# ROOT_URLCONF for the redirect test: an old webhook URL that now redirects.
urlpatterns = [
    path("old-webhook/", csrf_exempt(RedirectView.as_view(url="/api/webhooks/clerk/"))),
    *test_urlpatterns,
]


@pytest.fixture
def url(live_server, transactional_db):
    """The webhook URL on a live server; the command's requests really commit."""
    return live_server.url + reverse("django_clerk_sync:webhook")


def send(url, command_line="", **options):
    """Run the command as ``manage.py clerk_send_webhook URL <command_line>`` would."""
    out = io.StringIO()
    call_command(
        "clerk_send_webhook",
        url,
        *shlex.split(command_line),
        stdout=out,
        no_color=True,
        **options,
    )
    return out.getvalue()


def unused_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_create_update_duplicate_stale_delete(url, signals_received):
    out = send(
        url,
        "user.created --clerk-id user_ada --email ada@example.com --first-name Ada "
        "--updated-at 2026-01-01T00:00:00Z",
    )
    assert "HTTP 200 OK" in out
    assert '{"status": "processed", "outcome": "created"}' in out
    user = get_user("user_ada")
    assert (user.email, user.first_name) == ("ada@example.com", "Ada")

    # --updated-at in Clerk's unit, Unix milliseconds: 2026-01-01T00:01:00Z.
    update = (
        "user.updated --clerk-id user_ada --email ada@new.example --first-name Ada "
        "--last-name Lovelace --updated-at 1767225660000 --svix-id msg_ada_update"
    )
    out = send(url, update)
    assert "svix-id msg_ada_update" in out
    assert '"outcome": "updated"' in out
    out = send(url, update)  # a Svix retry: same svix-id
    assert '{"status": "processed", "duplicate": true, "outcome": "updated"}' in out

    out = send(
        url,
        "user.updated --clerk-id user_ada --last-name Stale "
        "--updated-at 2026-01-01T00:00:30+00:00",
    )
    assert '"outcome": "stale"' in out
    user.refresh_from_db()
    assert (user.email, user.last_name) == ("ada@new.example", "Lovelace")

    out = send(url, "user.deleted --clerk-id user_ada")
    assert '"outcome": "deleted"' in out
    user.refresh_from_db()
    assert not user.is_active
    assert [s[0] for s in signals_received] == ["synced", "synced", "deleted"]
    assert list(
        WebhookEvent.objects.order_by("pk").values_list("event_type", "outcome")
    ) == [
        ("user.created", "created"),
        ("user.updated", "updated"),
        ("user.updated", "stale"),
        ("user.deleted", "deleted"),
    ]


def test_phone_only_user_and_generated_ids(url):
    out = send(url, "user.created --phone +15555550100 --first-name Zoë")
    event = WebhookEvent.objects.get()
    assert f"Sending user.created for {event.clerk_id} " in out
    assert f"svix-id {event.svix_id}" in out
    assert event.clerk_id.startswith("user_") and event.svix_id.startswith("msg_")
    user = get_user(event.clerk_id)
    assert (user.email, user.first_name, user.username) == ("", "Zoë", event.clerk_id)


def test_body_file_is_sent_byte_for_byte(url):
    captured = FIXTURES / "user_created.json"
    out = send(url, body_file=str(captured))
    size = captured.stat().st_size
    assert f"Sending user.created from {captured} ({size} bytes)" in out
    assert '"outcome": "created"' in out
    assert bytes(WebhookEvent.objects.get().body) == captured.read_bytes()


def test_body_file_from_standard_input(url, monkeypatch):
    body = (FIXTURES / "session_created.json").read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(body)))
    out = send(url, "--body-file -")
    assert "Sending session.created from standard input" in out
    assert '"status": "ignored"' in out


def test_wrong_secret_is_reported_not_raised(url):
    out = send(url, f"user.deleted --clerk-id user_x --secret {OTHER_SECRET}")
    assert "HTTP 400 Bad Request" in out
    assert "no signature matches CLERK_WEBHOOK_SECRET" in out
    assert "another signing secret" in out  # the hint
    assert OTHER_SECRET not in out and SECRET not in out
    assert not WebhookEvent.objects.exists()


def test_redirects_are_not_followed(live_server, transactional_db):
    with override_settings(ROOT_URLCONF=__name__):
        out = send(live_server.url + "/old-webhook/", "user.created")
    assert "HTTP 302 Found" in out
    assert "Svix does not follow redirects" in out
    assert not WebhookEvent.objects.exists()


def test_the_secret_is_never_printed(url):
    out = send(url, "user.created --email ada@example.com")
    out += send(url, "user.created", secret=SECRET)
    assert SECRET not in out
    assert SECRET.removeprefix("whsec_") not in out


@pytest.mark.parametrize(
    "url, command_line, message",
    [
        ("not a url", "user.created", "bad URL 'not a url': give an http:// or https://"),
        ("ftp://127.0.0.1/x", "user.created", "bad URL 'ftp://127.0.0.1/x'"),
        ("http://", "user.created", "bad URL 'http://'"),
        ("http://127.0.0.1:99999/", "user.created", "bad URL 'http://127.0.0.1:99999/'"),
        ("http://127.0.0.1/", "", "give an EVENT_TYPE"),
        ("http://127.0.0.1/", "user.updated", "user.updated needs --clerk-id"),
        ("http://127.0.0.1/", "user.deleted", "user.deleted needs --clerk-id"),
        (
            "http://127.0.0.1/",
            "user.deleted --clerk-id user_1 --email a@example.com",
            "user.deleted carries only the id: leave out --email",
        ),
        (
            "http://127.0.0.1/",
            "user.created --updated-at yesterday",
            "bad --updated-at 'yesterday'",
        ),
        (
            "http://127.0.0.1/",
            "user.created --body-file x.json",
            "--body-file is sent as it is: leave out user.created",
        ),
        (
            "http://127.0.0.1/",
            f"user.created --secret '\"{SECRET}\"'",
            "the signing secret (--secret) is wrapped in quotes",
        ),
        ("http://127.0.0.1/", "user.created --secret v1,abc", "looks like a signature"),
    ],
)  # fmt: skip
def test_bad_input_fails_with_one_line(url, command_line, message):
    with pytest.raises(CommandError) as error:
        send(url, command_line)
    text = str(error.value)
    assert message in text
    assert "\n" not in text
    assert SECRET.removeprefix("whsec_") not in text


def test_connection_refused():
    url = f"http://127.0.0.1:{unused_port()}/api/webhooks/clerk/"
    with pytest.raises(CommandError) as error:
        send(url, "user.created")
    assert str(error.value) == f"could not connect to {url}: Connection refused"


@override_settings(CLERK_WEBHOOK_SECRET=None)
def test_no_secret_configured():
    with pytest.raises(CommandError) as error:
        send("http://127.0.0.1/", "user.created")
    assert str(error.value) == (
        "no signing secret: set CLERK_WEBHOOK_SECRET in the settings or pass "
        "--secret whsec_..."
    )


@pytest.mark.parametrize(
    "name, reason",
    [("missing.json", "No such file or directory"), (".", "Is a directory")],
)
def test_unreadable_body_file(tmp_path, name, reason):
    target = tmp_path / name
    with pytest.raises(CommandError) as error:
        send("http://127.0.0.1/", body_file=str(target))
    assert str(error.value) == f"cannot read --body-file {target}: {reason}"


def test_command_line_prints_one_line_and_exits_1():
    url = f"http://127.0.0.1:{unused_port()}/api/webhooks/clerk/"
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="tests.settings")
    env["PYTHONPATH"] = str(REPO_ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "django", "clerk_send_webhook", url, "user.created"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    error = f"CommandError: could not connect to {url}: Connection refused\n"
    assert result.stderr == error
    assert SECRET not in result.stdout + result.stderr


def test_same_content_under_a_new_svix_id_changes_nothing(url):
    send(url, "user.created --clerk-id user_same --updated-at 1000")
    out = send(url, "user.created --clerk-id user_same --updated-at 1000")
    assert '"outcome": "unchanged"' in out
    assert get_user_model().objects.count() == 1


def test_a_wrong_path_gets_a_hint_about_the_url(live_server, transactional_db):
    output = send(live_server.url + "/webhooks/clerk/", "user.created")
    assert "HTTP 404 Not Found" in output
    assert "/api/webhooks/clerk/" in output and "include(" in output
    assert WebhookEvent.objects.count() == 0
