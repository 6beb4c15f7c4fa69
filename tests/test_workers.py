"""Deferred processing with real workers: thousands of deliveries, 4 workers, one
killed in the middle of a task, every event applied exactly once in effect.

Real processes throughout: Django's threaded server serves the webhook, four worker
processes take the tasks, all on the same PostgreSQL database; eight threads send the
deliveries over HTTP, signed by svix's signer. Two engines: Celery with Redis as the
broker (10,000 deliveries) and Django's tasks framework with the django-tasks-db
backend and its ``db_worker`` (2,000). Runs with ``make test-postgres``; skips, saying
why, without PostgreSQL, without the engine's package, or (Celery) without Redis
(a ``redis-server`` the test starts, or ``CLERK_SYNC_TEST_REDIS``).
"""

import shutil
import threading
import time
from collections import Counter

import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from django_clerk_sync.models import ClerkUserLink, WebhookEvent

from .worker_support import (
    Harness,
    History,
    missing_services,
    redis_url,
    send,
    wait_until,
)

EFFECTS = "clerk_sync_worker_effects"

# Per engine: users (each created and updated 3 times, every fifth deleted), same-id
# redeliveries, new-id copies. 2,000 users give 8,400 events + 1,600 = 10,000.
SIZES = {
    "celery": (2000, 1100, 500),
    "django_tasks": (400, 220, 100),
}


@pytest.fixture(params=sorted(SIZES))
def engine(request):
    return request.param


@pytest.fixture
def make_harness(engine, transactional_db, tmp_path):
    """``make_harness(**env)``: a :class:`Harness` for ``engine`` on the test
    database; the effects table and the queue are emptied before and after."""
    broker = redis_url(6)
    reason = missing_services(engine, broker)
    if reason:
        pytest.skip(reason)
    broker_db = private_redis = None
    if engine == "celery":
        import redis

        if broker is None:
            from .test_faults import RedisServer

            private_redis = RedisServer(shutil.which("redis-server"), tmp_path)
            private_redis.start()
            broker = f"redis://127.0.0.1:{private_redis.port}/6"
        broker_db = redis.Redis.from_url(broker, socket_timeout=5)
        broker_db.flushdb()
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {EFFECTS}")
        cursor.execute(
            f"CREATE TABLE {EFFECTS} (id serial PRIMARY KEY, signal text, "
            "clerk_id text, updated_at bigint, created boolean, pid integer)"
        )
    harnesses = []

    def make(**env):
        harness = Harness(
            connection.settings_dict["NAME"],
            broker,
            tmp_path,
            processing=engine,
            extra_env={"CLERK_SYNC_WORKER_EFFECTS": EFFECTS, **env},
        )
        if engine == "django_tasks" and not harnesses:
            # The backend's table, by its own migrations, in the test database.
            harness.manage("migrate", "django_tasks_database", "--verbosity=0")
        harnesses.append(harness)
        return harness

    yield make
    for harness in harnesses:
        harness.close()
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {EFFECTS}")
        if harnesses and engine == "django_tasks":
            # Its migrations do not all reverse: drop the table and their record.
            cursor.execute("DROP TABLE IF EXISTS django_tasks_database_dbtaskresult")
            cursor.execute(
                "DELETE FROM django_migrations WHERE app = 'django_tasks_database'"
            )
    if broker_db is not None:
        broker_db.flushdb()
    if private_redis is not None:
        private_redis.kill()


def effects():
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT signal, clerk_id, updated_at, created, pid FROM {EFFECTS}"
        )
        return cursor.fetchall()


def received():
    return WebhookEvent.objects.filter(status=WebhookEvent.Status.RECEIVED)


def test_deliveries_through_4_workers_one_killed_mid_task_apply_once(
    engine, make_harness, tmp_path
):
    """Celery: 2,000 Clerk users, each created and updated three times, every fifth
    deleted (8,400 events), plus 1,100 redeliveries under the same ``svix-id`` and 500
    copies under new ones: 10,000 deliveries, shuffled, from 8 senders (a fifth of
    that for Django tasks). A third of the way in, the worker that picks up the first
    event of one user is killed with SIGKILL inside the sync transaction and
    replaced; the task it held is never finished (Celery: never acknowledged;
    django-tasks-db: left claimed) and ``clerk_sweep_events`` brings it back. Then
    every event is processed, on one attempt; each user is on its newest version, or
    deleted for ever (deactivated, or never created when the deletion came first);
    and each change was announced exactly once, from a worker."""
    users, redeliveries, copies = SIZES[engine]
    history = History(
        users, updates=3, delete_every=5, redeliveries=redeliveries, copies=copies
    )
    distinct_ids = {svix_id for svix_id, _ in history.deliveries}
    assert len(history.deliveries) == users * 5 == len(distinct_ids) + redeliveries
    trap_user = history.first_sent_after(len(history.deliveries) // 3)
    trap_file = tmp_path / "trapped.pid"
    harness = make_harness(
        CLERK_SYNC_WORKER_TRAP_USER=trap_user,
        CLERK_SYNC_WORKER_TRAP_FILE=str(trap_file),
    )
    started = time.monotonic()
    harness.start_server()
    initial = [harness.start_worker() for _ in range(4)]

    killed = []
    stop_watching = threading.Event()

    def kill_the_trapped_worker():
        while not stop_watching.wait(0.05):
            if trap_file.exists() and trap_file.read_text():
                worker = harness.worker_by_pid(int(trap_file.read_text()))
                worker.kill()
                killed.append(worker)
                harness.start_worker()
                return

    watcher = threading.Thread(target=kill_the_trapped_worker, daemon=True)
    watcher.start()
    try:
        answers = send(harness.url, history.deliveries, senders=8)
        sent = time.monotonic()
        watcher.join(timeout=60)
        assert killed, f"the trap was never sprung\n{harness.logs()}"
        assert not killed[0].alive() and killed[0] in initial

        # The three survivors and the replacement drain the queue; the killed
        # worker's event is left received, its task taken and never finished.
        wait_until(
            lambda: (
                harness.queued() == 0
                and received().count() == 1
                and harness.reserved() == 1
            ),
            timeout=300,
            what="the live workers to drain the queue",
        )
        stranded = received().get()
        assert stranded.clerk_id == trap_user
        assert stranded.attempts == 0  # the killed attempt was rolled back whole

        output = harness.manage("clerk_sweep_events", "--older-than", "1")
        assert output.startswith("1 stuck event(s)"), output
        wait_until(
            lambda: not received().exists(),
            timeout=120,
            what="the swept event to be processed",
        )
        drained = time.monotonic()
    finally:
        stop_watching.set()
        logs = harness.logs()
        harness.close()

    # Every delivery accepted: 202 stored and queued, or 200 for a redelivery of an
    # event already processed; never a 4xx or a 5xx.
    assert set(answers) <= {200, 202}, (answers, logs)
    assert answers[202] >= len(distinct_ids)

    # Every event stored once and processed once.
    events = WebhookEvent.objects.all()
    assert events.count() == len(distinct_ids)
    assert set(events.values_list("status", "attempts")) == {("processed", 1)}
    outcomes = Counter(events.values_list("outcome", flat=True))
    assert set(outcomes) <= {
        "created",
        "updated",
        "unchanged",
        "stale",
        "tombstoned",
        "deleted",
        "already deleted",
    }
    assert outcomes["deleted"] == len(history.deleted) == users // 5

    # One Django user per Clerk user, on the newest version; a deleted one stays
    # deactivated, and one whose deletion was processed before any creation never
    # gets a Django user at all.
    links = ClerkUserLink.objects.select_related("user")
    assert sorted(links.values_list("clerk_id", flat=True)) == history.clerk_ids
    with_user = set(links.exclude(user=None).values_list("clerk_id", flat=True))
    assert get_user_model().objects.count() == len(with_user) == outcomes["created"]
    assert len(with_user) >= users - len(history.deleted)
    for link in links:
        n = history.clerk_ids.index(link.clerk_id)
        if link.clerk_id in history.deleted:
            assert link.is_tombstone, link.clerk_id
            assert link.user is None or not link.user.is_active, link.clerk_id
        else:
            user = link.user
            assert not link.is_tombstone and user.is_active
            assert (
                link.clerk_updated_at,
                user.first_name,
                user.last_name,
                user.email,
            ) == history.newest(n)
            assert user.username == f"{history.prefix}{n}"

    # Each change announced exactly once, and only ever by a worker.
    seen = effects()
    synced = [row for row in seen if row[0] == "synced"]
    assert len(synced) == outcomes["created"] + outcomes["updated"]
    assert max(Counter((r[1], r[2]) for r in synced).values()) == 1
    assert sorted(r[1] for r in synced if r[3]) == sorted(with_user)
    deleted = [row[1] for row in seen if row[0] == "deleted"]
    assert sorted(deleted) == sorted(history.deleted)
    worker_pids = {worker.pid for worker in harness.workers}
    pids = {row[4] for row in seen}
    assert pids <= worker_pids and len(pids) >= 4

    print(
        f"\n{len(history.deliveries)} deliveries sent in {sent - started:.0f} s, "
        f"all processed {drained - started:.0f} s after start; outcomes {dict(outcomes)}"
    )
