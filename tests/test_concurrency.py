"""Concurrent writers over real HTTP: one effect, one signal, no 500, no deadlock.

Webhook deliveries, first-sight requests through the middleware and the backfill
race for the same Clerk ids, with real threads, a real live server and the Clerk
simulator. These need a database that lets several connections write at once, so
they run on PostgreSQL (``make test-postgres``) and skip on SQLite.
"""

import io
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection, connections

from django_clerk_sync.models import ClerkUserLink, WebhookEvent
from django_clerk_sync.testing import clerk_user, deliver, event

from .conftest import SECRET
from .token_support import (  # noqa: F401
    clerk_env,
    clerk_server,
    fresh_verifiers,
    sim,
    whoami_over_http,
)

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
            pool.map(
                lambda _: deliver(endpoint, SECRET, body, svix_id="msg_race"), range(20)
            )
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
            (
                "user.updated",
                clerk_user("user_race2", first_name=f"v{n}", updated_at=1_000 + n),
            )
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
                        lambda item: deliver(
                            endpoint, SECRET, item[1], svix_id=f"msg_{item[0]}"
                        ),
                        bodies.items(),
                    ),
                    strict=False,
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


def test_a_burst_of_3000_events_from_8_senders_loses_nothing(
    endpoint, signals_received
):
    """3,000 distinct deliveries, user.created and two user.updated for each of 1,000
    users, shuffled (so an update often arrives before its create), sent by eight
    concurrent senders over real HTTP: every one answered 200, stored and processed
    once, every user created once and left on its newest version."""
    base = int(time.time() * 1000)
    deliveries = [
        (
            f"msg_burst{n:04d}v{k}",
            event(
                kind,
                clerk_user(
                    f"user_2burst{n:04d}",
                    email=f"burst{n}.v{k}@example.com",
                    username=f"burst{n}",
                    first_name=f"V{k}",
                    created_at=base,
                    updated_at=base + k,
                ),
            ),
        )
        for n in range(1000)
        for k, kind in enumerate(("user.created", "user.updated", "user.updated"))
    ]
    random.Random(0).shuffle(deliveries)

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = Counter(
            status
            for status, _, _ in pool.map(
                lambda d: deliver(endpoint, SECRET, d[1], svix_id=d[0]), deliveries
            )
        )

    assert answers == {200: 3000}
    events = WebhookEvent.objects.all()
    assert events.count() == 3000
    assert set(events.values_list("status", "attempts")) == {("processed", 1)}
    outcomes = Counter(events.values_list("outcome", flat=True))
    assert outcomes["created"] == 1000
    assert set(outcomes) <= {"created", "updated", "unchanged", "stale"}
    assert get_user_model().objects.count() == 1000
    rows = ClerkUserLink.objects.values_list(
        "clerk_id", "clerk_updated_at", "user__first_name", "user__email"
    )
    final = {clerk_id: rest for clerk_id, *rest in rows}
    assert final == {
        f"user_2burst{n:04d}": [base + 2, "V2", f"burst{n}.v2@example.com"]
        for n in range(1000)
    }
    assert [kw["created"] for _, kw in signals_received].count(True) == 1000


# --- every write path at once, for one Clerk id --------------------------------------


def race(tasks, *, timeout=60):
    """Run ``tasks`` (name -> callable), each in its own thread, released together by
    a barrier; return name -> result. Fails if a task raised, or had not finished
    ``timeout`` seconds later (a deadlock or a hang)."""
    barrier = threading.Barrier(len(tasks), timeout=timeout)
    results, errors = {}, {}

    def run(name, task):
        try:
            barrier.wait()
            results[name] = task()
        except BaseException as exc:  # reported below, in the test's thread
            errors[name] = exc
        finally:
            connections.close_all()  # this thread's connection, if it opened one

    threads = [
        threading.Thread(target=run, args=item, name=item[0], daemon=True)
        for item in tasks.items()
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert [t.name for t in threads if t.is_alive()] == [], "stuck: deadlock or hang"
    assert errors == {}
    return results


def backfill_since(since):
    """``manage.py clerk_backfill --since`` (users created after ``since``); stdout."""
    out, err = io.StringIO(), io.StringIO()
    call_command("clerk_backfill", "--since", str(since), stdout=out, stderr=err)
    return out.getvalue() + err.getvalue()


@pytest.fixture
def every_path(sim, clerk_env, clerk_server):
    """The live server runs the middleware (first sight on, "create") and the webhook;
    the backfill reads the simulator."""
    clerk_env.CLERK_API_URL = sim.url
    clerk_env.CLERK_SECRET_KEY = sim.secret_key
    clerk_env.CLERK_API_RATE_LIMIT = (10_000, 1)
    clerk_env.CLERK_API_MAX_RETRIES = 2
    return clerk_server


@pytest.mark.parametrize(
    "clerk_holds, seed",
    [(5, 0), (2, 1), (6, 2), (5, 3)],
    ids=[
        "Clerk holds the newest version",
        "Clerk holds an older version",
        "Clerk holds a version no webhook brought",
        "Clerk holds the newest, another order",
    ],
)
def test_webhooks_first_sight_and_backfill_racing_for_one_clerk_id(
    sim, every_path, signals_received, clerk_holds, seed
):
    """For one Clerk id, all at once: user.created, five user.updated (each with its
    own updated_at), two requests whose valid tokens the middleware has never seen
    (first sight creates the user through the sync path), and a backfill page.
    One user, one link, the newest version wins; no 500, no failure, no deadlock."""
    clerk_id = f"user_2race{seed}"
    created_at = int(time.time() * 1000)

    def version(n):
        return clerk_user(
            clerk_id,
            email=f"v{n}.{seed}@example.com",
            username=f"racer{seed}",  # unchanged: the backfill wants it too
            first_name=f"V{n}",
            last_name="Racer",
            created_at=created_at,
            updated_at=created_at + n,
        )

    sim.add_user(version(clerk_holds))
    webhooks = {
        f"webhook v{n}": event("user.created" if n == 0 else "user.updated", version(n))
        for n in range(6)
    }
    tokens = {f"first sight {n}": sim.mint_session_token(clerk_id) for n in range(2)}
    endpoint = every_path.url + "/api/webhooks/clerk/"
    tasks = {
        **{
            name: (lambda body=body: deliver(endpoint, SECRET, body))
            for name, body in webhooks.items()
        },
        **{
            name: (lambda token=token: whoami_over_http(every_path, token))
            for name, token in tokens.items()
        },
        "backfill": lambda: backfill_since(created_at - 1),
    }
    order = list(tasks)
    random.Random(seed).shuffle(order)

    results = race({name: tasks[name] for name in order})

    assert {name: results[name][0] for name in webhooks} == dict.fromkeys(webhooks, 200)
    for name in tokens:
        status, body = results[name]
        assert status == 200, body
        assert (body["authenticated"], body["clerk_user_id"], body["rejection"]) == (
            True,
            clerk_id,
            None,
        )
    assert "1 Clerk users read" in results["backfill"]
    assert "failed: 0" in results["backfill"]

    User = get_user_model()
    newest = max(5, clerk_holds)
    user = User.objects.get()  # exactly one Django user
    link = ClerkUserLink.objects.get()  # and one link
    assert (link.clerk_id, link.user_id, link.clerk_updated_at) == (
        clerk_id,
        user.pk,
        created_at + newest,
    )
    assert (user.username, user.first_name, user.email) == (
        f"racer{seed}",
        f"V{newest}",
        f"v{newest}.{seed}@example.com",
    )
    assert sorted(WebhookEvent.objects.values_list("status", flat=True)) == (
        ["processed"] * 6
    )
    assert [kw["created"] for _, kw in signals_received].count(True) == 1
    # And the next request finds that user.
    _, body = whoami_over_http(every_path, sim.mint_session_token(clerk_id))
    assert body["user"] == f"racer{seed}"


def test_a_backfill_page_waits_for_a_webhook_creating_the_same_user_no_deadlock(
    sim, settings, live_server, signals_received
):
    """The webhook has inserted the new user's link and is about to insert its user
    row; a backfill page creating the same user now must wait for that link before
    it writes a user row. (Writing the user row first, as it once did, each waited
    for the other and PostgreSQL aborted the backfill: "deadlock detected".)"""
    from django.db.models.signals import pre_save

    User = get_user_model()
    settings.CLERK_API_URL = sim.url
    settings.CLERK_SECRET_KEY = sim.secret_key
    settings.CLERK_API_RATE_LIMIT = (10_000, 1)
    created_at = int(time.time() * 1000)
    ada = clerk_user("user_2deadlock", username="ada", created_at=created_at)
    sim.add_user(ada)
    link_held, backfill_waited = threading.Event(), threading.Event()

    def hold_the_link_until_the_backfill_waits(sender, instance, **kwargs):
        if instance.pk is not None or instance.username != "ada" or link_held.is_set():
            return
        link_held.set()  # this webhook's transaction holds the new link row
        with connection.cursor() as cursor:
            for _ in range(500):  # at most ~10 s
                cursor.execute(
                    "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a "
                    "ON a.pid = l.pid WHERE NOT l.granted "
                    "AND a.datname = current_database()"
                )
                if cursor.fetchone()[0]:
                    backfill_waited.set()
                    return
                time.sleep(0.02)

    endpoint = live_server.url + "/api/webhooks/clerk/"
    webhook = {}
    sender = threading.Thread(
        target=lambda: webhook.update(
            answer=deliver(endpoint, SECRET, event("user.created", ada))
        ),
        daemon=True,
    )
    pre_save.connect(hold_the_link_until_the_backfill_waits, sender=User)
    try:
        sender.start()
        assert link_held.wait(10)
        results = race({"backfill": lambda: backfill_since(created_at - 1)})
        sender.join(30)
    finally:
        pre_save.disconnect(hold_the_link_until_the_backfill_waits, sender=User)

    assert not sender.is_alive()
    assert backfill_waited.is_set()  # the interleaving happened
    assert webhook["answer"][0] == 200
    assert "failed: 0" in results["backfill"]
    assert "unchanged: 1" in results["backfill"]  # the webhook's user, found again
    assert User.objects.get().username == "ada"
    assert ClerkUserLink.objects.get().clerk_id == "user_2deadlock"
    assert [kw["created"] for _, kw in signals_received] == [True]
