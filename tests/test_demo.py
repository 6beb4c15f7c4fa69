"""``make demo`` end to end: example project, dev server, signed HTTP deliveries."""

import os
import re
import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parent.parent / "example_project" / "demo.py"


def test_demo_runs_clean_from_anywhere(tmp_path):
    env = dict(
        os.environ,
        # A throw-away database: leave example_project/db.sqlite3 to its owner.
        EXAMPLE_SQLITE_PATH=str(tmp_path / "demo.sqlite3"),
        PYTHONIOENCODING="utf-8",
        CLERK_WEBHOOK_SECRET="whsec_must-not-be-used",
    )
    result = subprocess.run(
        [sys.executable, str(DEMO)],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=120,
    )
    out = result.stdout.decode("utf-8")
    assert result.returncode == 0, out + result.stderr.decode("utf-8", "replace")

    for line in [
        "1. user.created for user_demo_zoe: non-ASCII name, with an email",
        "-> 200 processed: created",
        "-> 200 processed: updated (duplicate: nothing applied twice)",
        "-> 200 processed: stale",
        "-> 200 processed: deleted",
        "-> 200 processed: tombstoned",
        "-> 400 rejected: no signature matches CLERK_WEBHOOK_SECRET",
        "-> 400 rejected: missing svix-id, svix-timestamp or svix-signature",
        "INFO example.receivers: Welcome, Clerk user user_demo_zoe",
        "INFO example.receivers: Goodbye, Clerk user user_demo_grace",
        "All deliveries got the expected answer; the dev server is stopped.",
        # The backfill from the Clerk simulator: new users, and the webhook's newer
        # and deleted users left as they are.
        "created: 20",
        "skipped stale: 1",
        "skipped deleted: 1",
        "clerk_user_synced was sent 20 times, with source='backfill'",
    ]:
        assert line in out
    assert "UNEXPECTED" not in out
    # The users table: the update applied, the stale one not; the deleted user
    # stays deactivated although a later update arrived.
    assert re.search(r"zoe +zoe@new\.example +Zoë +Ångström +True +user_demo_zoe", out)
    assert re.search(r"user_demo_grace +- +Grace +Hopper +False +user_demo_grace", out)
    assert str(tmp_path / "demo.sqlite3") in out

    # Logs name Clerk ids, never email addresses.
    log_lines = [
        line for line in out.splitlines() if re.match(r" +(INFO|WARNING) ", line)
    ]
    assert log_lines and not [line for line in log_lines if "@" in line]

    # The dev server is gone.
    pid = int(re.search(r"manage\.py runserver, pid (\d+)", out).group(1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        pass
    else:
        raise AssertionError(f"the demo's dev server (pid {pid}) is still running")
