"""The management commands follow Django's conventions: ``--verbosity`` (0 errors
only, 1 the summary, 2 per-item detail, 3 debug), ``--no-color`` / ``--force-color``,
and exit statuses (0 success, 1 a one-line ``CommandError``, 2 a run that finished
with some items failed). Through ``call_command`` and through real processes."""

import importlib.util
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO
from pathlib import Path

import django
import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command, load_command_class
from django.core.management.base import CommandError

from django_clerk_sync.management.options import PARTIAL_FAILURE
from django_clerk_sync.models import WebhookEvent

from .conftest import load_event, to_body
from .test_webhook_http import unique_email_index  # noqa: F401  (fixture)

REPO_ROOT = Path(__file__).resolve().parent.parent
ANSI = "\x1b["
COMMANDS = [
    "clerk_backfill",
    "clerk_prune_events",
    "clerk_replay_events",
    "clerk_send_webhook",
    "clerk_sync_status",
]


def run(*args):
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def stored(envelope, svix_id, status=WebhookEvent.Status.RECEIVED):
    return WebhookEvent.objects.create(
        svix_id=svix_id,
        event_type=envelope["type"],
        clerk_id=envelope["data"]["id"],
        body=to_body(envelope),
        status=status,
    )


# --- verbosity, through call_command ----------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("clerk_sync_status",),
        ("clerk_prune_events", "--older-than", "30d"),
        ("clerk_replay_events", "--received"),
        ("clerk_replay_events", "--received", "--dry-run"),
    ],
    ids=" ".join,
)
def test_verbosity_0_prints_nothing_on_success(db, args):
    stored(load_event("user_created"), "msg_2quiet")

    assert run(*args, "-v", "0") == ("", "")


def test_verbosity_1_replay_lists_each_event_and_the_summary(transactional_db):
    stored(load_event("user_created"), "msg_2one")

    out, err = run("clerk_replay_events", "--received")

    assert out.splitlines() == [
        "msg_2one: processed (created)",
        "1 event(s) processed, 0 failed again",
    ]
    assert err == ""


def test_verbosity_2_adds_the_apps_records_on_stderr(transactional_db):
    envelope = load_event("user_created")
    stored(envelope, "msg_2detail")

    out, err = run("clerk_replay_events", "--received", "-v", "2")

    assert "msg_2detail: processed (created)" in out
    clerk_id = envelope["data"]["id"]
    assert f"INFO django_clerk_sync.sync: Clerk user {clerk_id} created (webhook)" in (
        err.splitlines()
    )


def test_verbosity_3_adds_debug_records_and_leaves_the_logger_as_it_was(
    transactional_db,
):
    import logging

    logger = logging.getLogger("django_clerk_sync")
    before = (logger.level, list(logger.handlers))
    stored(load_event("user_created"), "msg_2debug")

    out, err = run("clerk_replay_events", "--received", "-v", "3")

    assert "INFO django_clerk_sync.sync" in err
    assert (logger.level, list(logger.handlers)) == before


def test_a_partial_failure_exits_2_and_prints_only_errors_at_verbosity_0(
    transactional_db, unique_email_index
):
    envelope = load_event("user_created")
    email = envelope["data"]["email_addresses"][0]["email_address"]
    get_user_model().objects.create_user("local", email=email)
    stored(envelope, "msg_2clash", WebhookEvent.Status.FAILED)
    fine = load_event(
        "user_created",
        id="user_2fine",
        email_addresses=[],
        primary_email_address_id=None,
    )
    stored(fine, "msg_2fine")
    WebhookEvent.objects.filter(svix_id="msg_2fine").update(status="failed")
    out, err = StringIO(), StringIO()

    with pytest.raises(CommandError) as error:
        call_command(
            "clerk_replay_events", "--failed", "-v", "0", stdout=out, stderr=err
        )

    assert error.value.returncode == PARTIAL_FAILURE == 2
    assert str(error.value) == "1 event(s) failed again; see the lines above"
    assert out.getvalue() == ""
    assert err.getvalue().startswith(
        "msg_2clash: failed again: permanent: SyncConflict"
    )
    assert email not in err.getvalue()


@pytest.fixture
def clerk(settings, transactional_db):
    """The Clerk simulator behind the Backend API settings, for clerk_backfill."""
    from django_clerk_sync.simulator import ClerkSimulator

    with ClerkSimulator(secret_key="sk_test_simulator", rate_limit=None) as sim:
        settings.CLERK_API_URL = sim.url
        settings.CLERK_SECRET_KEY = "sk_test_simulator"
        settings.CLERK_API_MAX_RETRIES = 0
        yield sim


def test_backfill_with_some_users_failed_exits_2(clerk, settings):
    clerk.add_user(clerk_id="user_2good", first_name="Ada")
    clerk.add_user(clerk_id="user_2bad", first_name="Bob")

    def first_name(clerk_user):
        if clerk_user["id"] == "user_2bad":
            raise RuntimeError("a broken source")
        return clerk_user["first_name"]

    settings.CLERK_SYNC_FIELD_MAP = {"first_name": first_name}
    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError) as error:
        call_command("clerk_backfill", "-v", "0", stdout=out, stderr=err)

    assert error.value.returncode == PARTIAL_FAILURE
    assert str(error.value) == "1 user(s) failed; see the lines above"
    assert out.getvalue() == ""
    assert err.getvalue() == "failed: Clerk user user_2bad: RuntimeError\n"


def test_backfill_that_stops_exits_1(clerk):
    clerk.add_user(clerk_id="user_2good")
    clerk.available = False

    with pytest.raises(CommandError) as error:
        run("clerk_backfill", "-v", "0")

    assert error.value.returncode == 1
    assert "\n" not in str(error.value)


def test_backfill_at_verbosity_2_prints_a_line_per_user(clerk):
    clerk.add_user(clerk_id="user_2good")

    out, err = run("clerk_backfill", "-v", "2")

    assert "INFO django_clerk_sync.sync: Clerk user user_2good created (backfill)" in (
        err.splitlines()
    )
    assert "created: 1" in out


def test_a_refused_run_is_a_one_line_command_error_with_status_1(db):
    with pytest.raises(CommandError) as error:
        run("clerk_replay_events")

    assert error.value.returncode == 1
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_django_s_standard_options(command):
    out = (
        load_command_class("django_clerk_sync", command)
        .create_parser("manage.py", command)
        .format_help()
    )

    for option in ("--verbosity", "--no-color", "--force-color", "--traceback"):
        assert option in out


# --- real processes ---------------------------------------------------------------


def manage(*args, settings="tests.settings", settings_dir=None, **kwargs):
    """``python -m django *args`` in a real process; ``settings_dir`` holds a settings
    module a test wrote."""
    path = os.pathsep.join(str(p) for p in (settings_dir, REPO_ROOT) if p)
    env = dict(os.environ, DJANGO_SETTINGS_MODULE=settings, PYTHONPATH=path)
    env.pop("DJANGO_COLORS", None)
    return subprocess.run(
        [sys.executable, "-m", "django", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,
    )


class Endpoint:
    """A webhook endpoint on loopback answering ``status`` with a JSON body."""

    def __init__(self, status):
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                body = json.dumps(
                    {
                        "status": "rejected",
                        "reason": "no signature matches CLERK_WEBHOOK_SECRET",
                    }
                ).encode()
                self.send_response(endpoint.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.status = status
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/clerk/"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info):
        self.server.shutdown()
        self.server.server_close()


def test_no_color_leaves_out_every_escape_and_force_color_keeps_them():
    with Endpoint(400) as endpoint:
        plain = manage("clerk_send_webhook", endpoint.url, "user.created", "--no-color")
        colored = manage(
            "clerk_send_webhook", endpoint.url, "user.created", "--force-color"
        )

    assert plain.returncode == colored.returncode == 0  # it sent; the answer is shown
    assert "HTTP 400 Bad Request" in plain.stdout
    assert "another signing secret" in plain.stdout  # the hint
    assert ANSI not in plain.stdout + plain.stderr
    assert ANSI in colored.stdout  # the status and the hint are styled


def test_verbosity_0_is_silent_on_success_in_a_real_process():
    with Endpoint(200) as endpoint:
        quiet = manage("clerk_send_webhook", endpoint.url, "user.created", "-v", "0")

    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")


def test_verbosity_0_still_reports_a_failed_answer():
    with Endpoint(400) as endpoint:
        quiet = manage(
            "clerk_send_webhook", endpoint.url, "user.created", "-v", "0", "--no-color"
        )

    assert (quiet.returncode, quiet.stdout) == (0, "")
    assert quiet.stderr == "HTTP 400 Bad Request\n"


@pytest.fixture
def file_database(tmp_path):
    """A settings module using an SQLite file, migrated, for commands in processes."""
    module = tmp_path / "conventions_settings.py"
    module.write_text(
        "from tests.settings import *  # noqa\n"
        f"DATABASES = {{'default': {{'ENGINE': 'django.db.backends.sqlite3', "
        f"'NAME': {str(tmp_path / 'db.sqlite3')!r}}}}}\n"
    )

    def managed(*args):
        return manage(*args, settings="conventions_settings", settings_dir=tmp_path)

    migrated = managed("migrate", "-v", "0")
    assert migrated.returncode == 0, migrated.stderr
    return managed


def test_database_commands_in_real_processes(file_database):
    status = file_database("clerk_sync_status", "--no-color")
    quiet = file_database("clerk_prune_events", "--older-than", "30d", "-v", "0")
    refused = file_database("clerk_replay_events", "--no-color")
    bad_option = file_database("clerk_prune_events", "--older-than", "soon")

    assert status.returncode == 0 and "linked users:" in status.stdout
    assert ANSI not in status.stdout + status.stderr
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
    assert refused.returncode == 1
    assert refused.stderr == (
        "CommandError: say which events: --failed, --received and/or --ids ...\n"
    )
    assert bad_option.returncode == 1
    assert bad_option.stderr.count("\n") == 1 and "--older-than" in bad_option.stderr


@pytest.mark.parametrize(
    "database",
    [
        # Not migrated: "no such table".
        "{tmp}/unmigrated.sqlite3",
        # Cannot even be opened: a file in a folder that does not exist.
        "{tmp}/no/such/folder/db.sqlite3",
    ],
    ids=["not-migrated", "unreachable"],
)
def test_a_database_that_cannot_be_used_is_one_line_not_a_traceback(tmp_path, database):
    module = tmp_path / "broken_db_settings.py"
    module.write_text(
        "from tests.settings import *  # noqa\n"
        f"DATABASES = {{'default': {{'ENGINE': 'django.db.backends.sqlite3', "
        f"'NAME': {database.format(tmp=tmp_path)!r}}}}}\n"
        "CLERK_SYNC_PROCESSING = 'django_tasks'\n"
        "TASKS = {'default': {'BACKEND': "
        "'django.tasks.backends.dummy.DummyBackend' if __import__('django').VERSION "
        ">= (6,) else 'django_tasks.backends.dummy.DummyBackend'}}\n"
    )
    commands = [
        ["clerk_sync_status"],
        ["clerk_replay_events", "--failed"],
        ["clerk_prune_events", "--older-than", "30d"],
    ]
    if importlib.util.find_spec("django_tasks") or django.VERSION >= (6,):
        commands.append(["clerk_sweep_events"])
    for command in commands:
        result = manage(
            *command,
            "--skip-checks",
            "--no-color",
            settings="broken_db_settings",
            settings_dir=tmp_path,
        )

        assert result.returncode == 1, (command, result.stderr)
        assert result.stderr.startswith("CommandError: the database could not be used")
        assert result.stderr.count("\n") == 1, (command, result.stderr)
        assert "Traceback" not in result.stderr
