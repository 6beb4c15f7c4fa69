#!/usr/bin/env python
"""The django-clerk-sync demo (``make demo``): real server, real HTTP, real signatures.

1. Migrates a fresh SQLite database for the example project.
2. Starts the example project's dev server (``manage.py runserver``) on a free
   loopback port.
3. Sends it Clerk webhooks signed with svix's signer, over HTTP, with
   ``manage.py clerk_send_webhook``: two new users, an update, a Svix retry of it,
   an out-of-order (stale) update, a deletion, a late update for the deleted user,
   and two deliveries that are not signed with the endpoint's secret.
4. Prints the Django users and the event log that came out of it, then stops the
   server.

Exits with status 1 when any delivery gets an unexpected answer, so it doubles as a
smoke test. Runs from any directory: ``python example_project/demo.py``.
"""

import base64
import io
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

EXAMPLE_DIR = Path(__file__).resolve().parent
REPO_ROOT = EXAMPLE_DIR.parent

# This checkout's django_clerk_sync (installed or not) and the example project.
sys.path[:0] = [str(REPO_ROOT), str(EXAMPLE_DIR)]
os.environ["DJANGO_SETTINGS_MODULE"] = "example.settings"
# Sign with the example project's demo secret, never with a real one from the shell.
os.environ.pop("CLERK_WEBHOOK_SECRET", None)

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import CommandError, call_command  # noqa: E402
from django.db import connections  # noqa: E402

from django_clerk_sync.models import WebhookEvent  # noqa: E402
from django_clerk_sync.signals import clerk_user_synced  # noqa: E402
from django_clerk_sync.testing import deleted_user, event  # noqa: E402

ZOE = "user_demo_zoe"
GRACE = "user_demo_grace"
WEBHOOK_PATH = "/api/webhooks/clerk/"
# Any valid secret other than the endpoint's: the server must refuse its signatures.
WRONG_SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()


class DemoFailed(Exception):
    pass


def minutes_ago(minutes):
    """A Clerk ``updated_at``: Unix milliseconds."""
    return int((time.time() - minutes * 60) * 1000)


def fresh_database():
    name = Path(settings.DATABASES["default"]["NAME"])
    for path in (name, *(name.with_name(name.name + s) for s in ("-journal", "-wal"))):
        path.unlink(missing_ok=True)
    call_command("migrate", verbosity=0)
    connections.close_all()  # the server process is the only writer from here on
    return name


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(port, log):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    command = [
        sys.executable,
        str(EXAMPLE_DIR / "manage.py"),
        "runserver",
        "--noreload",
        f"127.0.0.1:{port}",
    ]
    server = subprocess.Popen(
        command,
        cwd=EXAMPLE_DIR,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        wait_until_answering(server, f"http://127.0.0.1:{port}{WEBHOOK_PATH}")
    except BaseException:
        stop_server(server)
        raise
    return server


def wait_until_answering(server, url):
    deadline = time.monotonic() + 30
    while True:
        if server.poll() is not None:
            raise DemoFailed(f"the dev server exited with status {server.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # 405 for a GET: the webhook view answers
        except OSError:
            if time.monotonic() > deadline:
                raise DemoFailed("the dev server did not answer within 30 seconds")
            time.sleep(0.1)


def stop_server(server):
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def send(url, event_type, **options):
    """One delivery through ``manage.py clerk_send_webhook``; ``(HTTP status, JSON)``."""
    out = io.StringIO()
    call_command(
        "clerk_send_webhook", url, event_type, stdout=out, no_color=True, **options
    )
    lines = out.getvalue().splitlines()
    for number, line in enumerate(lines):
        match = re.match(r"HTTP (\d{3})", line)
        if match:
            following = lines[number + 1] if number + 1 < len(lines) else ""
            try:
                answer = json.loads(following)
            except ValueError:
                answer = {"reason": following}
            return int(match.group(1)), answer
    raise DemoFailed(f"unexpected output from clerk_send_webhook: {out.getvalue()!r}")


def send_unsigned(url, body):
    """A POST without any svix-* header, as anyone on the internet could send."""
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@dataclass
class Delivery:
    event_type: str
    clerk_id: str
    note: str
    want_status: int
    want: dict  # keys the JSON answer must have
    options: dict = field(default_factory=dict)  # for clerk_send_webhook
    unsigned: bool = False

    def send(self, url):
        if self.unsigned:
            return send_unsigned(
                url, event(self.event_type, deleted_user(self.clerk_id))
            )
        return send(url, self.event_type, clerk_id=self.clerk_id, **self.options)


ZOE_UPDATE = {
    "email": "zoe@new.example",
    "first_name": "Zoë",
    "last_name": "Ångström",
    "username": "zoe",
    "updated_at": minutes_ago(5),
    "svix_id": "msg_demo_zoe_update",
}

DELIVERIES = [
    Delivery(
        "user.created", ZOE, "non-ASCII name, with an email",
        200, {"outcome": "created"},
        {"email": "zoe@example.com", "first_name": "Zoë", "last_name": "Ångström",
         "username": "zoe", "updated_at": minutes_ago(10)},
    ),
    Delivery(
        "user.created", GRACE, "phone number only, no email",
        200, {"outcome": "created"},
        {"phone": "+15555550100", "first_name": "Grace", "last_name": "Hopper",
         "updated_at": minutes_ago(10)},
    ),
    Delivery(
        "user.updated", ZOE, "new email address",
        200, {"outcome": "updated"},
        ZOE_UPDATE,
    ),
    Delivery(
        "user.updated", ZOE, "the same svix-id again (a Svix retry)",
        200, {"outcome": "updated", "duplicate": True},
        ZOE_UPDATE,
    ),
    Delivery(
        "user.updated", ZOE, "older than the update applied (arrived late)",
        200, {"outcome": "stale"},
        {"email": "zoe@old.example", "first_name": "Zoe", "last_name": "Old",
         "updated_at": minutes_ago(8)},
    ),
    Delivery(
        "user.deleted", GRACE, "deleted in Clerk",
        200, {"outcome": "deleted"},
    ),
    Delivery(
        "user.updated", GRACE, "arrives after the delete: must not revive",
        200, {"outcome": "tombstoned"},
        {"phone": "+15555550100", "first_name": "Grace", "last_name": "Hopper",
         "updated_at": minutes_ago(0)},
    ),
    Delivery(
        "user.deleted", ZOE, "signed with another secret: must not apply",
        400, {"status": "rejected"},
        {"secret": WRONG_SECRET},
    ),
    Delivery(
        "user.deleted", ZOE, "no signature headers at all: must not apply",
        400, {"status": "rejected"},
        unsigned=True,
    ),
]  # fmt: skip


def describe(answer):
    """``processed: created``, ``rejected: <reason>``, ..."""
    text = answer.get("status", "?")
    detail = answer.get("outcome") or answer.get("reason")
    if detail:
        text += f": {detail}"
    if answer.get("duplicate"):
        text += " (duplicate: nothing applied twice)"
    return text


def run_deliveries(url):
    print("Deliveries (signed with svix's signer by manage.py clerk_send_webhook):")
    print()
    unexpected = 0
    for number, delivery in enumerate(DELIVERIES, 1):
        print(
            f"  {number}. {delivery.event_type} for {delivery.clerk_id}: {delivery.note}"
        )
        try:
            status, answer = delivery.send(url)
        except CommandError as exc:
            status, answer = None, {"status": "not sent", "reason": str(exc)}
        result = f"     -> {status or '---'} {describe(answer)}"
        if status != delivery.want_status or any(
            answer.get(key) != value for key, value in delivery.want.items()
        ):
            unexpected += 1
            result += (
                f"   <-- UNEXPECTED, wanted {delivery.want_status} {delivery.want}"
            )
        print(result)
    return unexpected


BACKFILL_USERS = 20


def run_backfill_step():
    """Users Clerk had before the webhook existed: ``clerk_backfill`` copies them
    from the Clerk simulator (a real HTTP server standing in for Clerk's API)."""
    from django_clerk_sync.simulator import ClerkSimulator

    print("Backfill (manage.py clerk_backfill, from the Clerk simulator over HTTP):")
    print()
    with ClerkSimulator(
        secret_key="sk_test_demo_simulator", rate_limit=(100, 10)
    ) as sim:
        sim.add_users(BACKFILL_USERS)
        # Clerk's copy of Zoë is older than what the webhook applied: skipped stale.
        sim.add_user(clerk_id=ZOE, email="zoe@old.example", updated_at=minutes_ago(30))
        # Grace was deleted: a backfill never brings her back.
        sim.add_user(clerk_id=GRACE, first_name="Grace")
        settings.CLERK_API_URL = sim.url
        settings.CLERK_SECRET_KEY = sim.secret_key
        announced = []
        count = lambda sender, source, **kwargs: announced.append(source)  # noqa: E731
        clerk_user_synced.connect(count)
        receivers_log = logging.getLogger("example")
        level = receivers_log.level
        receivers_log.setLevel(logging.WARNING)  # 20 "Welcome" lines would drown it
        out = io.StringIO()
        try:
            call_command("clerk_backfill", stdout=out, no_color=True)
        finally:
            receivers_log.setLevel(level)
            clerk_user_synced.disconnect(count)
    for line in out.getvalue().splitlines():
        print("  " + line)
    print(
        f"  clerk_user_synced was sent {len(announced)} times, with source="
        f"{', '.join(sorted(set(map(repr, announced)))) or '-'}"
    )
    return out.getvalue()


def print_table(headers, rows):
    rows = [
        ["-" if value in ("", None) else str(value) for value in row] for row in rows
    ]
    widths = [
        max(len(str(cell)) for cell in column)
        for column in zip(headers, *rows, strict=False)
    ]
    for row in [headers, ["-" * w for w in widths], *rows]:
        print(
            "  "
            + "  ".join(
                cell.ljust(w) for cell, w in zip(row, widths, strict=False)
            ).rstrip()
        )


def print_results():
    print("Django users:")
    print()
    print_table(
        ["username", "email", "first_name", "last_name", "is_active", "Clerk id"],
        get_user_model()
        .objects.order_by("pk")
        .values_list(
            "username",
            "email",
            "first_name",
            "last_name",
            "is_active",
            "clerk_link__clerk_id",
        ),
    )
    print()
    print(
        "Event log (django_clerk_sync.WebhookEvent; only verified deliveries are stored):"
    )
    print()
    print_table(
        ["svix-id", "type", "Clerk id", "status", "outcome"],
        WebhookEvent.objects.order_by("pk").values_list(
            "svix_id", "event_type", "clerk_id", "status", "outcome"
        ),
    )


def final_state_problems():
    """What the deliveries above must have left behind."""
    problems = []
    zoe = get_user_model().objects.filter(clerk_link__clerk_id=ZOE).first()
    grace = get_user_model().objects.filter(clerk_link__clerk_id=GRACE).first()
    if zoe is None or (zoe.email, zoe.last_name) != ("zoe@new.example", "Ångström"):
        problems.append(f"{ZOE} should have the updated email and not the stale name")
    if zoe is not None and not zoe.is_active:
        problems.append(f"{ZOE} should be active: the unsigned delete must not apply")
    if grace is None or grace.is_active or grace.email:
        problems.append(f"{GRACE} should exist, without email, deactivated")
    if get_user_model().objects.count() != 2 + BACKFILL_USERS:
        problems.append(f"the backfill should have added {BACKFILL_USERS} users")
    if WebhookEvent.objects.count() != 6:
        problems.append(
            "the event log should hold 6 events (the retry is not a new one)"
        )
    return problems


def print_server_log(log, everything):
    log.seek(0)
    lines = log.read().decode("utf-8", errors="replace").splitlines()
    if not everything:
        ours = re.compile(
            r"(INFO|WARNING|ERROR|CRITICAL) (django_clerk_sync|example)\b"
        )
        lines = [line for line in lines if ours.match(line)]
        print("What the server logged (django_clerk_sync, and example/receivers.py):")
    else:
        print("The dev server's output:")
    print()
    for line in lines:
        print("  " + line)


def main():
    print("django-clerk-sync demo")
    print("======================")
    print()
    database = fresh_database()
    port = free_port()
    url = f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
    print(f"Database:  {database} (fresh, migrated)")
    with tempfile.TemporaryFile() as log:
        server = None
        try:
            server = start_server(port, log)
            print(f"Server:    manage.py runserver, pid {server.pid}")
            print(f"Endpoint:  {url}")
            print()
            unexpected = run_deliveries(url)
            print()
            print_results()
            print()
            run_backfill_step()
            print()
            problems = final_state_problems()
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception:
            if server is not None:
                stop_server(server)
            print_server_log(log, everything=True)  # the server's side of the failure
            raise
        finally:
            if server is not None:
                stop_server(server)
        failed = bool(unexpected or problems)
        print_server_log(log, everything=failed)
        print()

    for problem in problems:
        print(f"PROBLEM: {problem}")
    if unexpected:
        print(f"FAILED: {unexpected} of the deliveries got an unexpected answer.")
    if failed:
        return 1
    print("All deliveries got the expected answer; the dev server is stopped.")
    print()
    python = Path(sys.executable)
    if REPO_ROOT in python.parents:  # e.g. the .venv that `make demo` made
        python = os.path.relpath(python, EXAMPLE_DIR)
    else:
        python = "python"
    print(
        "Try it yourself, in example_project/ (the database stays until the next demo):"
    )
    print()
    print(f"  {python} manage.py runserver")
    print(
        f"  {python} manage.py clerk_send_webhook http://127.0.0.1:8000/api/webhooks/clerk/ \\"
    )
    print("      user.created --email you@example.com --first-name You")
    print(f"  {python} manage.py clerk_send_webhook --help")
    return 0


if __name__ == "__main__":
    sys.stdout.reconfigure(errors="replace")  # names like Zoë on any terminal
    # A plain `kill` stops the dev server too (finally: blocks run on SystemExit).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\nInterrupted; the dev server is stopped.")
        sys.exit(130)
    except DemoFailed as exc:
        print(f"\nFAILED: {exc}")
        sys.exit(1)
