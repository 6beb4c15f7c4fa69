"""``manage.py clerk_backfill`` against the Clerk simulator over real HTTP."""

import io
import math

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from django_clerk_sync import get_user
from django_clerk_sync.backend_api import BackendAPI
from django_clerk_sync.backfill import run_backfill
from django_clerk_sync.models import ClerkUserLink
from django_clerk_sync.signals import clerk_user_synced
from django_clerk_sync.simulator import ClerkSimulator
from django_clerk_sync.testing import clerk_user, deleted_user, event

User = get_user_model()
SECRET_KEY = "sk_test_simulator"


@pytest.fixture
def sim(clerk_simulator, settings, transactional_db):
    """The plugin's simulator (CLERK_API_URL, CLERK_SECRET_KEY pointed at it), with
    no rate limit on either side."""
    assert clerk_simulator.secret_key == settings.CLERK_SECRET_KEY == SECRET_KEY
    clerk_simulator.rate_limit = None
    settings.CLERK_API_RATE_LIMIT = (10_000, 1)
    settings.CLERK_API_MAX_RETRIES = 2
    return clerk_simulator


def backfill(*args, **options):
    """Run the command; return (stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    call_command("clerk_backfill", *args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


def users_requests(sim):
    return sim.request_count("/v1/users") - sim.request_count("/v1/users/count")


def test_1203_users_are_synced_and_counted(sim, signals_received):
    sim.add_users(1203)

    out, _ = backfill()

    assert User.objects.count() == 1203
    assert ClerkUserLink.objects.count() == 1203
    assert "1,203 Clerk users read in 3 page(s)" in out
    assert "created: 1,203" in out and "failed: 0" in out
    # One count request, then ceil(1203 / 500) pages of 500.
    assert sim.request_count("/v1/users/count") == 1
    assert users_requests(sim) == math.ceil(1203 / 500)
    assert {q["limit"] for _, path, q, _ in sim.requests if path == "/v1/users"} == {
        "500"
    }
    assert {kw["source"] for _, kw in signals_received} == {"backfill"}
    assert len(signals_received) == 1203
    # Every Clerk user landed with its data.
    for clerk in sim.users[:50]:
        assert get_user(clerk["id"]) is not None


def test_a_page_costs_a_bounded_number_of_queries(sim):
    """The number of queries per page does not grow with the page size."""
    sim.add_users(40)
    api = BackendAPI()

    with CaptureQueriesContext(connection) as small:
        run_backfill(api, page_size=40)
    sim.add_users(400)
    with CaptureQueriesContext(connection) as large:
        run_backfill(api, page_size=500)

    # A handful per page; SQLite also splits a bulk insert into batches of a few
    # hundred parameters (the users', and twice the links': inserted before their
    # users, then pointed at them), which still is far from one query per user.
    assert len(small.captured_queries) <= 12
    assert len(large.captured_queries) <= (
        12 + math.ceil(400 / 80) + math.ceil(400 / 160)
    )
    assert User.objects.count() == 440


def test_a_second_run_changes_nothing_and_sends_no_signal(sim, signals_received):
    sim.add_users(30)
    backfill()
    signals_received.clear()

    out, _ = backfill()

    assert "unchanged: 30" in out and "created: 0" in out
    assert signals_received == []


def test_changes_in_clerk_are_reconciled(sim):
    first = sim.add_user(clerk_id="user_recon", first_name="Old", email="r@example.com")
    backfill()
    sim.update_user(first["id"], first_name="New")

    out, _ = backfill()

    assert "updated: 1" in out
    assert get_user("user_recon").first_name == "New"


def test_a_429_storm_is_waited_out(settings, transactional_db):
    with ClerkSimulator(secret_key=SECRET_KEY, rate_limit=(2, 1.0)) as sim:
        settings.CLERK_API_URL = sim.url
        settings.CLERK_SECRET_KEY = SECRET_KEY
        settings.CLERK_API_RATE_LIMIT = (10_000, 1)  # we do not pace: Clerk answers 429
        settings.CLERK_API_MAX_RETRIES = 5
        sim.add_users(25)

        out, _ = backfill("--page-size", "5")

        statuses = [status for _, _, _, status in sim.requests]
    assert statuses.count(429) >= 1
    assert User.objects.count() == 25
    assert "created: 25" in out


def test_our_own_pacing_keeps_under_the_rate_limit(settings, transactional_db):
    with ClerkSimulator(secret_key=SECRET_KEY, rate_limit=(3, 1.0)) as sim:
        settings.CLERK_API_URL = sim.url
        settings.CLERK_SECRET_KEY = SECRET_KEY
        settings.CLERK_API_RATE_LIMIT = (3, 1.0)
        sim.add_users(8)

        backfill("--page-size", "2")

        statuses = [status for _, _, _, status in sim.requests]
    assert 429 not in statuses
    assert User.objects.count() == 8


def test_5xx_answers_are_retried_until_clerk_recovers(sim):
    sim.add_users(12)
    sim.fail_next(2, status=503)

    out, _ = backfill("--page-size", "5")

    assert User.objects.count() == 12
    assert [s for _, _, _, s in sim.requests].count(503) == 2


@pytest.fixture
def clerk_fails_after_the_first_page(sim, settings):
    """Once the first page is applied (its signals are the hook), Clerk answers 500
    to exactly as many attempts as the backfill makes for one request, then
    recovers."""
    attempts = 1 + settings.CLERK_API_MAX_RETRIES
    fired = []

    def receiver(sender, **kwargs):
        if not fired:
            fired.append(True)
            sim.fail_next(attempts, status=500)

    clerk_user_synced.connect(receiver, weak=False)
    yield
    clerk_user_synced.disconnect(receiver)


def test_giving_up_keeps_what_was_synced_and_says_how_to_resume(
    sim, clerk_fails_after_the_first_page
):
    sim.add_users(12)

    with pytest.raises(CommandError) as stopped:
        backfill("--page-size", "5")

    message = str(stopped.value)
    assert "GET /v1/users failed 3 times, last with HTTP 500" in message
    assert "Resume with: manage.py clerk_backfill --since " in message
    assert "\n" not in message
    assert User.objects.count() == 5  # the first page stays


def test_resume_after_an_interruption(sim, clerk_fails_after_the_first_page):
    sim.add_users(12)
    with pytest.raises(CommandError) as stopped:
        backfill("--page-size", "5")
    resume_since = str(stopped.value).rsplit("--since ", 1)[1].strip()

    out, _ = backfill("--since", resume_since)

    assert User.objects.count() == 12
    assert ClerkUserLink.objects.count() == 12
    assert "created: 7" in out


def test_users_signing_up_during_the_run_are_neither_doubled_nor_skipped(sim):
    sim.add_users(20)
    added = []

    def sign_ups(report):
        if len(added) < 6:
            added.append(sim.add_user(email=f"late{len(added)}@example.com"))
            added.append(sim.add_user())

    report = run_backfill(BackendAPI(), page_size=7, on_page=sign_ups)

    clerk_ids = {u["id"] for u in sim.users}
    assert set(ClerkUserLink.objects.values_list("clerk_id", flat=True)) == clerk_ids
    assert User.objects.count() == len(clerk_ids) == report.seen


def test_users_sharing_one_millisecond_across_a_page_boundary_are_all_read(sim):
    for n in range(7):
        sim.add_user(clerk_id=f"user_same_ms_{n}", created_at=1_700_000_000_000)

    report = run_backfill(BackendAPI(), page_size=3)

    assert report.seen == 7
    assert User.objects.count() == 7


def test_dry_run_writes_nothing(sim, signals_received):
    sim.add_users(9)

    out, _ = backfill("--dry-run")

    assert "Dry run" in out and "created: 9" in out
    assert User.objects.count() == 0 and ClerkUserLink.objects.count() == 0
    assert signals_received == []


def test_since_and_limit(sim):
    users = [sim.add_user() for _ in range(10)]

    backfill("--since", str(users[3]["created_at"]))
    assert User.objects.count() == 6

    User.objects.all().delete()
    ClerkUserLink.objects.all().delete()
    backfill("--limit", "4", "--page-size", "3")
    assert sorted(ClerkUserLink.objects.values_list("clerk_id", flat=True)) == sorted(
        u["id"] for u in users[:4]
    )


def test_stale_and_deleted_users_are_never_overwritten_or_resurrected(sim, deliver):
    old = sim.add_user(clerk_id="user_newer_here", first_name="Old", updated_at=1_000)
    sim.add_user(clerk_id="user_gone", first_name="Ghost")
    # The webhook already applied a newer version, and deleted the other user.
    deliver(
        event(
            "user.updated", clerk_user(old["id"], first_name="Newer", updated_at=2_000)
        )
    )
    deliver(event("user.deleted", deleted_user("user_gone")))

    out, _ = backfill()

    assert get_user("user_newer_here").first_name == "Newer"
    assert get_user("user_gone") is None
    assert "skipped stale: 1" in out and "skipped deleted: 1" in out


def test_deactivate_missing_after_a_complete_run(sim, signals_received):
    keep = sim.add_user(clerk_id="user_keep")
    gone = sim.add_user(clerk_id="user_gone_from_clerk")
    backfill()
    sim.delete_user(gone["id"])
    signals_received.clear()

    out, _ = backfill("--deactivate-missing")

    assert "missing from Clerk, deactivated: 1" in out
    assert get_user(keep["id"]).is_active
    assert get_user(gone["id"]) is None
    assert ClerkUserLink.objects.get(clerk_id=gone["id"]).is_tombstone
    assert [(kind, kw["source"]) for kind, kw in signals_received] == [
        ("deleted", "backfill")
    ]


def test_deactivate_missing_is_not_applied_after_an_incomplete_run(sim, settings):
    sim.add_user(clerk_id="user_a")
    sim.add_user(clerk_id="user_b")
    backfill()
    sim.delete_user("user_b")

    def explode(clerk_user):
        if clerk_user["id"] == "user_a":
            raise RuntimeError("bad record")
        return clerk_user.get("first_name")

    settings.CLERK_SYNC_FIELD_MAP = {"first_name": explode}
    with pytest.raises(CommandError, match="1 user\\(s\\) failed"):
        backfill("--deactivate-missing")

    assert get_user("user_b") is not None  # not deactivated: the run had a failure


def test_deactivate_missing_refuses_partial_listings(sim):
    for args in (["--since", "2024-01-01"], ["--limit", "5"]):
        with pytest.raises(CommandError, match="needs a complete listing"):
            backfill("--deactivate-missing", *args)
    assert sim.request_count() == 0


def test_a_bad_record_among_good_ones_is_reported_and_skipped(sim, settings):
    sim.add_users(6)
    bad = sim.add_user(clerk_id="user_bad_record")

    def explode(clerk_user):
        if clerk_user["id"] == bad["id"]:
            raise ValueError("unreadable")
        return clerk_user.get("first_name")

    settings.CLERK_SYNC_FIELD_MAP = {"first_name": explode}
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError, match="1 user\\(s\\) failed"):
        call_command("clerk_backfill", stdout=out, stderr=err)

    assert User.objects.count() == 6
    assert "failed: Clerk user user_bad_record: ValueError" in err.getvalue()
    assert "failed: 1" in out.getvalue()


@pytest.mark.parametrize(
    "key, problem",
    [
        ("sk_test_abc\u200bdef", "non-ASCII"),
        ("sk_test_abc def", "whitespace"),
        ("pk_test_abc", "does not start with sk_test_ or sk_live_"),
        ("", "is not set"),
        (123, "is not a string \\(int\\)"),
    ],
)
def test_a_bad_secret_key_is_refused_before_any_request(sim, settings, key, problem):
    settings.CLERK_SECRET_KEY = key
    with pytest.raises(CommandError, match=problem) as refused:
        backfill()
    assert "\n" not in str(refused.value)
    assert sim.request_count() == 0


def test_a_missing_secret_key_names_its_own_fix(sim, settings):
    settings.CLERK_SECRET_KEY = None
    with pytest.raises(CommandError) as refused:
        backfill()
    assert str(refused.value) == (
        "CLERK_SECRET_KEY is not set: set it to the instance's secret key (Clerk "
        "dashboard -> API keys), a string starting sk_test_ or sk_live_"
    )


@pytest.mark.parametrize(
    "url", ["127.0.0.1:18765", "api.clerk.com", 8765, ["x"], "http://127.0.0.1:port"]
)
def test_an_api_url_that_is_not_http_is_refused_with_its_own_fix(sim, settings, url):
    settings.CLERK_API_URL = url
    with pytest.raises(CommandError) as refused:
        backfill()
    message = str(refused.value)
    assert message == (
        f"CLERK_API_URL {url!r} is not an http(s) URL with a host: set it to the "
        "Backend API base URL, https://api.clerk.com (the default), a proxy or the "
        "simulator's http://127.0.0.1:<port>"
    )
    assert "secret key" not in message  # the fix for another setting
    assert sim.request_count() == 0


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("CLERK_API_RATE_LIMIT", 100, "100 is not a pair (requests, seconds)"),
        ("CLERK_API_RATE_LIMIT", "100/10", "'100/10' is not a pair"),
        ("CLERK_API_RATE_LIMIT", (0, 10), "(0, 10) does not allow a whole number"),
        ("CLERK_API_RATE_LIMIT", (-1, 10), "(-1, 10) does not allow"),
        ("CLERK_API_RATE_LIMIT", (0.5, 10), "(0.5, 10) does not allow"),
        ("CLERK_API_RATE_LIMIT", (100, -1), "(100, -1) does not have a window"),
        ("CLERK_API_MAX_RETRIES", "x", "must be a whole number, 0 or more, not 'x'"),
        ("CLERK_API_MAX_RETRIES", -1, "must be a whole number"),
        ("CLERK_HTTP_TIMEOUT", "5", "must be a positive number of seconds, not '5'"),
    ],
)
def test_an_unusable_api_setting_is_refused_not_replaced_by_the_default(
    sim, settings, name, value, message
):
    setattr(settings, name, value)
    with pytest.raises(CommandError) as refused:
        backfill()
    assert str(refused.value).startswith(f"{name} {message}")
    assert ": set " in str(refused.value) or ": remove" in str(refused.value)
    assert "\n" not in str(refused.value)
    assert sim.request_count() == 0


@pytest.mark.parametrize("name", ["CLERK_API_RATE_LIMIT", "CLERK_API_MAX_RETRIES"])
def test_none_is_the_default_for_the_backfill_too(sim, settings, name):
    setattr(settings, name, None)
    sim.add_users(3)
    out, _ = backfill()
    assert "created: 3" in out


def test_a_page_size_over_500_is_refused_never_sent(sim):
    with pytest.raises(CommandError, match="--page-size must be 1 to 500"):
        backfill("--page-size", "501")
    assert sim.request_count() == 0


def test_output_is_plain_lines_off_a_terminal_and_silent_at_v0(sim):
    sim.add_users(7)
    out, _ = backfill("--page-size", "3")
    assert [line.split(":")[0] for line in out.splitlines()[:3]] == [
        "page 1",
        "page 2",
        "page 3",
    ]
    assert "\r" not in out

    quiet, _ = backfill(verbosity=0)
    assert quiet == ""


def test_a_raising_receiver_is_reported_and_the_rest_still_announced(
    sim, signals_received
):
    sim.add_users(5)
    unlucky = sim.users[2]["id"]

    def picky(sender, clerk_user, **kwargs):
        if clerk_user["id"] == unlucky:
            raise RuntimeError("welcome mail failed")

    clerk_user_synced.connect(picky, weak=False)
    try:
        out, err = io.StringIO(), io.StringIO()
        with pytest.raises(CommandError, match="1 user\\(s\\) failed"):
            call_command("clerk_backfill", stdout=out, stderr=err)
    finally:
        clerk_user_synced.disconnect(picky)

    assert User.objects.count() == 5  # the change itself is kept
    assert len(signals_received) == 5  # the other receivers heard about everyone
    assert f"failed: Clerk user {unlucky}: a signal receiver raised RuntimeError" in (
        err.getvalue()
    )


class _Terminal(io.StringIO):
    """Output that says it is a terminal, as a shell's stdout does."""

    def isatty(self):
        return True


def test_a_terminal_gets_one_progress_line_with_rate_and_eta(sim):
    sim.add_users(9)
    out = _Terminal()

    call_command("clerk_backfill", "--page-size", "4", stdout=out)

    progress, _, summary = out.getvalue().partition("\n")
    updates = progress.split("\r")[1:]
    assert len(updates) == 3  # one rewrite of the same line per page
    assert updates[0].startswith("4 / 9 users, ETA ") and "/s" in updates[0]
    assert updates[-1].startswith("9 / 9 users, ")
    assert "page " not in out.getvalue()
    assert "created: 9" in summary


def test_deactivate_missing_refuses_when_most_users_would_go(sim, signals_received):
    """Another instance's secret key lists other users: everyone looks missing, and
    tombstones are for ever, so the backfill refuses instead."""
    sim.add_users(12)
    backfill()
    for clerk in sim.users:
        sim.delete_user(clerk["id"])
    sim.add_user(clerk_id="user_other_instance")
    signals_received.clear()

    with pytest.raises(
        CommandError, match="12 of 13 linked users are missing"
    ) as refused:
        backfill("--deactivate-missing")
    assert "Resume with" not in str(refused.value)  # the listing itself completed

    assert ClerkUserLink.objects.filter(deleted_at__isnull=False).count() == 0
    assert [kind for kind, _ in signals_received] == ["synced"]  # only the new user
    out, _ = backfill("--deactivate-missing", "--max-missing", "100")
    assert "missing from Clerk, deactivated: 12" in out


def test_a_user_deleted_at_a_page_boundary_does_not_shift_the_next_page(sim):
    for n in range(10):
        sim.add_user(clerk_id=f"user_page_{n}")
    deleted = []

    def delete_the_last_of_the_page(report):
        if not deleted:
            deleted.append(report.cursor)
            last = [u for u in sim.users if u["created_at"] == report.cursor][-1]
            sim.delete_user(last["id"])

    run_backfill(BackendAPI(), page_size=4, on_page=delete_the_last_of_the_page)

    assert User.objects.count() == 10  # the 4 of page one, and all 6 after it


def test_since_on_a_millisecond_holding_a_whole_page(sim):
    for n in range(5):
        sim.add_user(clerk_id=f"user_tie_{n}", created_at=1_700_000_000_000)
    for n in range(3):
        sim.add_user(clerk_id=f"user_after_{n}", created_at=1_700_000_000_001 + n)

    backfill("--since", "1700000000000", "--page-size", "2")

    assert sorted(ClerkUserLink.objects.values_list("clerk_id", flat=True)) == [
        "user_after_0",
        "user_after_1",
        "user_after_2",
    ]


def test_ctrl_c_prints_where_to_resume(sim):
    sim.add_users(6)

    calls = []

    def interrupt(sender, **kwargs):
        calls.append(1)
        if len(calls) > 3:  # during the second page
            raise KeyboardInterrupt

    clerk_user_synced.connect(interrupt, weak=False)
    try:
        with pytest.raises(CommandError) as stopped:
            backfill("--page-size", "3")
    finally:
        clerk_user_synced.disconnect(interrupt)
    assert "stopped: interrupted." in str(stopped.value)
    assert "Resume with: manage.py clerk_backfill --since " in str(stopped.value)


def test_a_redirect_is_not_followed_with_the_secret_key(settings, transactional_db):
    """A redirect would carry `Authorization: Bearer sk_...` to wherever it points."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen = []

    class Redirector(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append((self.path, self.headers.get("Authorization")))
            self.send_response(302)
            self.send_header(
                "Location", f"http://127.0.0.1:{self.server.server_port}/elsewhere"
            )
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        settings.CLERK_API_URL = f"http://127.0.0.1:{server.server_port}"
        settings.CLERK_SECRET_KEY = SECRET_KEY
        with pytest.raises(CommandError, match="answered a redirect \\(302\\)"):
            backfill()
    finally:
        server.shutdown()
        server.server_close()
    assert [path for path, _ in seen] == ["/v1/users/count"]  # never /elsewhere


def test_a_username_with_nul_does_not_break_the_page(sim):
    sim.add_user(clerk_id="user_nul", username="ad\x00a", email="nul@example.com")
    sim.add_users(3)

    out, _ = backfill()

    assert "created: 4" in out
    assert get_user("user_nul").username == "ada"  # NUL removed, as on the webhook path
