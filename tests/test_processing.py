"""Deferred processing: the webhook stores and enqueues, a real worker processes.

Deliveries go through the real endpoint, signed by svix's signer. The engines are
real: Django's tasks framework with the django-tasks-db ``DatabaseBackend`` and its
``db_worker`` command (the table is created in the test database for the test), and
Celery with a Redis broker and a worker started in-process by
``celery.contrib.testing.worker.start_worker``. An unavailable queue is really
unavailable: the backend's table is missing, or Celery's broker is a loopback port
where nothing listens. Tests needing an engine that is not installed, or Redis, skip
with the reason.
"""

import importlib.util
import json
import logging
import os
import shutil
import socket
import sys
import threading
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.checks import run_checks
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from django_clerk_sync import get_user, processing, tasks
from django_clerk_sync.models import ClerkUserLink, WebhookEvent
from django_clerk_sync.testing import clerk_user, deleted_user, event

from .conftest import load_event

CLERK_ID = "user_29w83sxmDNGwOuEthce5gg56FcC"  # tests/fixtures/user_created.json
EMAIL = "example@example.org"
REDIS_DB = 5

HAS_TASKS_DB = importlib.util.find_spec("django_tasks_db") is not None
needs_tasks_db = pytest.mark.skipif(
    not HAS_TASKS_DB,
    reason="needs django-tasks-db (the database backend): "
    'pip install -e ".[test]" (in this checkout)',
)


def free_loopback_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def framework_apps():
    """The apps the database backend needs besides the test settings' own."""
    apps = ["django_tasks_db"]
    if importlib.util.find_spec("django_tasks") is not None:
        apps.insert(0, "django_tasks")
    return apps


def snapshot():
    """What processing left behind: events by svix-id, and the synced users."""
    events = {
        e.svix_id: (e.status, e.outcome, e.attempts)
        for e in WebhookEvent.objects.order_by("svix_id")
    }
    users = {
        link.clerk_id: (
            link.user and (link.user.email, link.user.first_name, link.user.is_active),
            link.is_tombstone,
            link.clerk_updated_at,
        )
        for link in ClerkUserLink.objects.select_related("user")
    }
    return events, users


# --- engines -------------------------------------------------------------------------


@pytest.fixture
def task_settings(settings):
    """Django tasks on the django-tasks-db DatabaseBackend, its table not yet made."""
    if not HAS_TASKS_DB:
        pytest.skip(
            'needs django-tasks-db: pip install -e ".[test]" (in this checkout) '
            "(django-tasks-db is the database backend)"
        )
    framework = tasks.django_task_framework()
    # Its setting_changed receiver drops the backends cached under the old TASKS.
    importlib.import_module(f"{framework.__name__}.signals")
    from django.contrib import admin

    registered = dict(admin.site._registry)
    try:
        with override_settings(
            INSTALLED_APPS=[*settings.INSTALLED_APPS, *framework_apps()],
            TASKS={"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}},
            CLERK_SYNC_PROCESSING="django_tasks",
        ):
            yield
    finally:
        # Installing the apps ran the admin's autodiscovery, which registered the
        # backend's model; once the app is gone, the admin index would fail on it.
        admin.site._registry = registered


@pytest.fixture
def task_table(task_settings, transactional_db):
    """The backend's table in the test database; yields its model."""
    from django_tasks_db.models import DBTaskResult

    with connection.schema_editor() as editor:
        editor.create_model(DBTaskResult)
    yield DBTaskResult
    with connection.schema_editor() as editor:
        editor.delete_model(DBTaskResult)


def run_db_worker():
    """One batch of django-tasks-db's own worker: every task due, then exit."""
    call_command("db_worker", "--batch", "--no-startup-delay", verbosity=0)


@pytest.fixture
def redis_url(tmp_path):
    """A ``redis-server`` of the test's own (db 5), or ``CLERK_SYNC_TEST_REDIS``: the
    test empties the database it uses, so it never takes a developer's Redis."""
    redis = pytest.importorskip("redis", reason="needs the redis package")
    configured = os.environ.get("CLERK_SYNC_TEST_REDIS")
    server = None
    if configured:
        client = redis.Redis.from_url(configured, socket_timeout=2)
    else:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip(
                "needs the redis-server binary on PATH (apt-get install "
                "redis-server), or CLERK_SYNC_TEST_REDIS naming a Redis database "
                "the test may empty"
            )
        from .test_faults import RedisServer

        server = RedisServer(binary, tmp_path).start()
        client = redis.Redis(
            host="127.0.0.1", port=server.port, db=REDIS_DB, socket_timeout=2
        )
    client.flushdb()
    kwargs = client.connection_pool.connection_kwargs
    yield configured or f"redis://127.0.0.1:{kwargs['port']}/{kwargs.get('db', 0)}"
    client.flushdb()
    if server is not None:
        server.kill()


def celery_app_for(broker):
    from celery import Celery

    app = Celery("clerk_sync_tests", broker=broker, set_as_current=True)
    app.conf.update(
        task_default_queue="clerk-sync-tests",
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=False,
    )
    app.set_default()
    return app


@pytest.fixture
def celery_app(redis_url):
    pytest.importorskip(
        "celery", reason='needs celery: pip install -e ".[test]" (in this checkout)'
    )
    app = celery_app_for(redis_url)
    with override_settings(CLERK_SYNC_PROCESSING="celery"):
        yield app


class CeleryRuns:
    """The tasks the worker finished, as ``(task name, state)``, from Celery's
    ``task_postrun`` signal. Tests wait on these rather than poll the database: on
    SQLite's shared in-memory test database a read beside the worker's write fails
    with "table is locked"."""

    def __init__(self):
        self.finished = []
        self.changed = threading.Condition()

    def record(self, sender=None, state=None, **kwargs):
        with self.changed:
            self.finished.append((sender.name, state))
            self.changed.notify_all()

    def wait(self, *expected, timeout=30):
        """Until each ``(name, state)`` in ``expected`` has finished, in order;
        the timeout only stops a hung test."""

        def done():
            remaining = list(expected)
            for run in self.finished:
                if remaining and run == remaining[0]:
                    remaining.pop(0)
            return not remaining

        with self.changed:
            if not self.changed.wait_for(done, timeout):
                raise AssertionError(f"gave up waiting for {expected}: {self.finished}")


PROCESS = "django_clerk_sync.process_event"


@pytest.fixture
def celery_worker(celery_app, transactional_db):
    """A real Celery worker (solo pool) consuming from Redis, in this process;
    yields the :class:`CeleryRuns` it finishes."""
    from celery.contrib.testing.worker import start_worker
    from celery.signals import task_postrun

    runs = CeleryRuns()
    task_postrun.connect(runs.record, weak=False)
    # The worker's logging set-up sets levels on the loggers that exist (leaving
    # django_clerk_sync's at ERROR): put them back, so later tests' caplog sees records.
    loggers = [logging.getLogger()] + [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    saved = [(logger, logger.level, logger.disabled) for logger in loggers]
    try:
        with start_worker(celery_app, pool="solo", perform_ping_check=False):
            yield runs
    finally:
        task_postrun.disconnect(runs.record)
        for logger, level, disabled in saved:
            logger.setLevel(level)
            logger.disabled = disabled


@pytest.fixture
def celery_broker_down(transactional_db):
    pytest.importorskip(
        "celery", reason='needs celery: pip install -e ".[test]" (in this checkout)'
    )
    app = celery_app_for(f"redis://127.0.0.1:{free_loopback_port()}/{REDIS_DB}")
    with override_settings(CLERK_SYNC_PROCESSING="celery"):
        yield app


# --- inline (the default) ------------------------------------------------------------


def test_inline_is_the_default_and_processes_in_the_request(deliver):
    response = deliver(load_event("user_created"), svix_id="msg_inline")

    assert response.status_code == 200
    assert response.json() == {"status": "processed", "outcome": "created"}
    assert get_user(CLERK_ID).email == EMAIL


# --- Django tasks ----------------------------------------------------------------------


def test_django_tasks_answers_202_and_db_worker_processes_the_event(
    task_table, deliver, signals_received
):
    response = deliver(load_event("user_created"), svix_id="msg_deferred")

    assert response.status_code == 202
    assert response.json() == {"status": "received", "queued": True}
    stored = WebhookEvent.objects.get()
    assert (stored.status, stored.attempts) == ("received", 0)
    assert get_user(CLERK_ID) is None
    queued = task_table.objects.get()
    assert queued.task_path == "django_clerk_sync.tasks.process_event_task"
    assert queued.args_kwargs == {"args": [stored.pk], "kwargs": {}}

    run_db_worker()

    stored.refresh_from_db()
    assert (stored.status, stored.outcome, stored.attempts) == (
        "processed",
        "created",
        1,
    )
    assert get_user(CLERK_ID).email == EMAIL
    assert [kind for kind, _ in signals_received] == ["synced"]
    queued.refresh_from_db()
    assert queued.status == "SUCCESSFUL"
    assert queued.return_value == "processed"


def deliveries():
    """created, updated, a stale update, an ignored type, then deleted."""
    base = 1_700_000_000_000
    user = "user_2sequence00000000000000"
    return [
        (
            "msg_seq_1",
            event(
                "user.created", clerk_user(user, email="a@example.com", updated_at=base)
            ),
        ),
        (
            "msg_seq_2",
            event(
                "user.updated",
                clerk_user(
                    user, email="b@example.com", first_name="B", updated_at=base + 2
                ),
            ),
        ),
        (
            "msg_seq_3",
            event(
                "user.updated",
                clerk_user(user, email="old@example.com", updated_at=base + 1),
            ),
        ),
        ("msg_seq_4", json.dumps(load_event("session_created")).encode()),
        ("msg_seq_5", event("user.deleted", deleted_user(user))),
    ]


def test_the_worker_leaves_exactly_what_inline_processing_leaves(
    task_settings, transactional_db, deliver
):
    from django_tasks_db.models import DBTaskResult

    with override_settings(CLERK_SYNC_PROCESSING="inline"):
        for svix_id, body in deliveries():
            assert deliver(body, svix_id=svix_id).status_code == 200
    inline = snapshot()
    WebhookEvent.objects.all().delete()
    ClerkUserLink.objects.all().delete()
    get_user_model().objects.all().delete()

    with connection.schema_editor() as editor:
        editor.create_model(DBTaskResult)
    try:
        for svix_id, body in deliveries():
            assert deliver(body, svix_id=svix_id).status_code == 202
        assert DBTaskResult.objects.count() == 5
        run_db_worker()
        deferred = snapshot()
    finally:
        with connection.schema_editor() as editor:
            editor.delete_model(DBTaskResult)

    assert deferred == inline
    assert [status for status, _, _ in inline[0].values()] == [
        "processed",
        "processed",
        "processed",
        "ignored",
        "processed",
    ]


def test_a_redelivery_of_a_stored_unprocessed_event_is_enqueued_again(
    task_table, deliver
):
    first = deliver(load_event("user_created"), svix_id="msg_twice")
    second = deliver(load_event("user_created"), svix_id="msg_twice")

    assert first.status_code == second.status_code == 202
    assert WebhookEvent.objects.count() == 1
    assert task_table.objects.count() == 2

    run_db_worker()

    stored = WebhookEvent.objects.get()
    # The second task found it processed and left it alone.
    assert (stored.status, stored.attempts) == ("processed", 1)
    assert [r.return_value for r in task_table.objects.all()] == ["processed"] * 2
    # Once processed, a redelivery is a duplicate, as inline.
    third = deliver(load_event("user_created"), svix_id="msg_twice")
    assert third.status_code == 200
    assert third.json()["duplicate"] is True
    assert task_table.objects.count() == 2


def test_queue_down_under_retry_policy_answers_503_and_keeps_the_event(
    task_settings, transactional_db, deliver, caplog
):
    # The backend's table does not exist: every enqueue fails in the database.
    caplog.set_level(logging.ERROR, logger="django_clerk_sync")

    response = deliver(load_event("user_created"), svix_id="msg_queue_down")

    assert response.status_code == 503
    assert response.json() == {
        "status": "error",
        "reason": "stored, but the task queue is unavailable",
    }
    stored = WebhookEvent.objects.get()
    assert (stored.svix_id, stored.status, stored.attempts) == (
        "msg_queue_down",
        "received",
        0,
    )
    assert get_user(CLERK_ID) is None
    (record,) = [r for r in caplog.records if "not enqueued" in r.getMessage()]
    assert record.error in ("OperationalError", "ProgrammingError")
    assert EMAIL not in caplog.text

    # Svix retries once the queue is back: the stored event is enqueued and processed.
    from django_tasks_db.models import DBTaskResult

    with connection.schema_editor() as editor:
        editor.create_model(DBTaskResult)
    try:
        retry = deliver(load_event("user_created"), svix_id="msg_queue_down")
        assert retry.status_code == 202
        run_db_worker()
    finally:
        with connection.schema_editor() as editor:
            editor.delete_model(DBTaskResult)
    stored.refresh_from_db()
    assert (stored.status, stored.outcome) == ("processed", "created")
    assert get_user(CLERK_ID).email == EMAIL


@override_settings(CLERK_SYNC_ENQUEUE_FAILURE="inline")
def test_queue_down_under_inline_policy_processes_in_the_request(
    task_settings, transactional_db, deliver, caplog
):
    caplog.set_level(logging.ERROR, logger="django_clerk_sync")

    response = deliver(load_event("user_created"), svix_id="msg_fallback")

    assert response.status_code == 200
    assert response.json() == {"status": "processed", "outcome": "created"}
    assert WebhookEvent.objects.get().status == "processed"
    assert get_user(CLERK_ID).email == EMAIL
    assert "processing it in the request" in caplog.text
    assert EMAIL not in caplog.text


# A field-map source that fails while FAILURES is above zero: a transient fault in
# the worker (a real callable run by the real sync path).
FAILURES = {"left": 0}


def flaky_first_name(clerk_user):
    if FAILURES["left"] > 0:
        FAILURES["left"] -= 1
        raise RuntimeError("the first-name service is down")
    return clerk_user.get("first_name") or ""


FLAKY_MAP = {"email": "primary_email", "first_name": f"{__name__}:flaky_first_name"}


@override_settings(CLERK_SYNC_FIELD_MAP=FLAKY_MAP, CLERK_SYNC_TASK_RETRY_DELAY=0)
def test_a_transient_worker_failure_is_retried_by_a_new_task(task_table, deliver):
    FAILURES["left"] = 1
    assert deliver(load_event("user_created"), svix_id="msg_flaky").status_code == 202

    run_db_worker()  # fails, enqueues the retry, which the same batch then runs

    stored = WebhookEvent.objects.get()
    assert (stored.status, stored.outcome, stored.attempts) == (
        "processed",
        "created",
        2,
    )
    first, retry = task_table.objects.order_by("enqueued_at")
    assert first.status == "FAILED"
    assert retry.status == "SUCCESSFUL"
    assert first.exception_class_path == "django_clerk_sync.processing.ProcessingFailed"
    # The task's traceback names the type only; the event keeps the details.
    assert "first-name service" not in json.dumps(first.traceback)
    assert get_user(CLERK_ID).first_name == "Example"


@override_settings(
    CLERK_SYNC_FIELD_MAP=FLAKY_MAP,
    CLERK_SYNC_TASK_RETRY_DELAY=0,
    CLERK_SYNC_TASK_MAX_ATTEMPTS=2,
)
def test_worker_retries_stop_at_the_max_attempts(task_table, deliver):
    FAILURES["left"] = 5
    try:
        deliver(load_event("user_created"), svix_id="msg_always")
        run_db_worker()
    finally:
        FAILURES["left"] = 0

    stored = WebhookEvent.objects.get()
    assert (stored.status, stored.attempts) == ("failed", 2)
    assert stored.outcome == "error: RuntimeError: the first-name service is down"
    assert "the first-name service is down" in stored.last_error
    assert list(task_table.objects.values_list("status", flat=True)) == ["FAILED"] * 2
    # Nor does the sweep take it again.
    assert not processing.stuck_events(0).exists()


def deeply_nested_body():
    # Valid JSON nested deeper than Python parses: a permanent failure (events.py).
    depth = 100_000
    user = clerk_user(CLERK_ID)
    user["unsafe_metadata"] = "@NEST@"
    body = event("user.created", user).decode()
    return body.replace('"@NEST@"', "[" * depth + "]" * depth).encode()


def test_a_permanent_worker_failure_is_recorded_and_not_retried(task_table, deliver):
    assert deliver(deeply_nested_body(), svix_id="msg_nested").status_code == 202

    run_db_worker()

    stored = WebhookEvent.objects.get()
    assert stored.status == "failed"
    assert stored.outcome.startswith(
        "permanent: PermanentFailure: the payload is nested"
    )
    (task_run,) = task_table.objects.all()
    assert (task_run.status, task_run.return_value) == ("SUCCESSFUL", "failed")
    assert not processing.stuck_events(0).exists()


def test_process_stored_event_ignores_a_missing_row(transactional_db, caplog):
    caplog.set_level(logging.WARNING, logger="django_clerk_sync")

    assert processing.process_stored_event(987654) is None
    assert "987654 no longer exists" in caplog.text


@pytest.mark.parametrize("event_id", ["garbage", [1], None])
def test_process_stored_event_ignores_an_id_that_is_no_row_id(
    transactional_db, caplog, event_id
):
    # A task sent by hand with a wrong argument: logged, no traceback, no retry.
    assert processing.process_stored_event(event_id) is None
    assert "no longer exists; task ignored" in caplog.text


def test_process_stored_event_is_a_no_op_for_a_processed_event(deliver):
    deliver(load_event("user_created"), svix_id="msg_done")
    stored = WebhookEvent.objects.get()

    assert processing.process_stored_event(stored.pk) == "processed"
    stored.refresh_from_db()
    assert stored.attempts == 1


# --- the sweep -------------------------------------------------------------------------


def stored_event(svix_id, *, age, status="received", outcome="", attempts=0):
    """A verified event stored ``age`` seconds ago, as the webhook leaves it."""
    row = WebhookEvent.objects.create(
        svix_id=svix_id,
        body=event("user.created", clerk_user(f"user_{svix_id}", email=None)),
        event_type="user.created",
        clerk_id=f"user_{svix_id}",
        status=status,
        outcome=outcome,
        attempts=attempts,
    )
    WebhookEvent.objects.filter(pk=row.pk).update(
        received_at=timezone.now() - timedelta(seconds=age)
    )
    return row


def queued_ids(task_table):
    """The svix-ids of the events enqueued, in the order they were enqueued."""
    svix_ids = dict(WebhookEvent.objects.values_list("pk", "svix_id"))
    return [
        svix_ids[row.args_kwargs["args"][0]]
        for row in task_table.objects.order_by("enqueued_at", "id")
    ]


def sweep(*args):
    from io import StringIO

    out = StringIO()
    call_command("clerk_sweep_events", *args, stdout=out)
    return out.getvalue()


def test_sweep_enqueues_events_stuck_past_the_threshold_oldest_first(task_table):
    stored_event("msg_old", age=3600)
    stored_event("msg_older", age=7200)
    stored_event("msg_recent", age=60)
    stored_event("msg_done", age=7200, status="processed", outcome="created")
    stored_event("msg_ignored", age=7200, status="ignored", outcome="unhandled")

    output = sweep()

    assert output == "2 stuck event(s) older than 600 s enqueued (django_tasks)\n"
    assert queued_ids(task_table) == ["msg_older", "msg_old"]

    assert sweep("--older-than", "30").startswith("3 stuck event(s) older than 30 s")
    run_db_worker()
    assert set(
        WebhookEvent.objects.filter(
            svix_id__in=["msg_old", "msg_older", "msg_recent"]
        ).values_list("status", flat=True)
    ) == {"processed"}
    assert sweep("--older-than", "0").startswith("0 stuck event(s)")


@override_settings(CLERK_SYNC_SWEEP_AFTER=10_000)
def test_sweep_threshold_comes_from_the_setting(task_table):
    stored_event("msg_old", age=3600)

    assert sweep().startswith("0 stuck event(s) older than 10000 s")
    assert task_table.objects.count() == 0


def test_sweep_dry_run_lists_and_enqueues_nothing(task_table):
    stored_event("msg_a", age=3600)
    stored_event("msg_b", age=1200)

    summary = "2 stuck event(s) older than 600 s would be enqueued (django_tasks)"
    assert sweep("--dry-run").splitlines() == [summary]
    # One line per event is -v 2 detail, as in the other commands.
    assert sweep("--dry-run", "-v", "2").splitlines() == [
        "would enqueue msg_a",
        "would enqueue msg_b",
        summary,
    ]
    assert task_table.objects.count() == 0
    assert set(WebhookEvent.objects.values_list("status", flat=True)) == {"received"}


def test_sweep_prints_nothing_at_verbosity_0(task_table):
    stored_event("msg_a", age=3600)

    assert sweep("-v", "0") == ""
    assert sweep("--dry-run", "-v", "0") == ""
    assert task_table.objects.count() == 1


def test_sweep_limit_takes_the_oldest(task_table):
    for n in range(5):
        stored_event(f"msg_{n}", age=1000 + n * 100)

    assert sweep("--limit", "2").startswith("2 stuck event(s)")
    assert queued_ids(task_table) == ["msg_4", "msg_3"]


@override_settings(CLERK_SYNC_TASK_MAX_ATTEMPTS=3)
def test_sweep_retries_transient_failures_below_max_attempts_not_permanent_ones(
    task_table,
):
    stored_event(
        "msg_transient",
        age=3600,
        status="failed",
        outcome="error: OperationalError (details in last_error)",
        attempts=2,
    )
    stored_event("msg_signal", age=3600, status="failed", outcome="created", attempts=1)
    stored_event(
        "msg_exhausted",
        age=3600,
        status="failed",
        outcome="error: RuntimeError: x",
        attempts=3,
    )
    stored_event(
        "msg_permanent",
        age=3600,
        status="failed",
        outcome="permanent: SyncConflict: Clerk user",
        attempts=1,
    )

    sweep()

    assert sorted(queued_ids(task_table)) == ["msg_signal", "msg_transient"]


def test_sweep_refuses_in_inline_mode(transactional_db):
    with pytest.raises(CommandError, match='CLERK_SYNC_PROCESSING is "inline"'):
        sweep()


@override_settings(CLERK_SYNC_PROCESSING="celery")
def test_sweep_refuses_when_the_engine_is_not_installed(transactional_db, monkeypatch):
    monkeypatch.setitem(sys.modules, "celery", None)  # import celery now fails

    with pytest.raises(CommandError, match="celery is not installed"):
        sweep()


def test_sweep_says_so_when_the_queue_is_down(task_settings, transactional_db):
    stored_event("msg_a", age=3600)
    stored_event("msg_b", age=3600)

    with pytest.raises(
        CommandError, match="0 of 2 stuck event.* queue refused one"
    ) as refused:
        sweep()
    assert refused.value.returncode == 1  # nothing enqueued: not a partial run
    assert WebhookEvent.objects.filter(status="received").count() == 2


@override_settings(CLERK_SYNC_SWEEP_AFTER=1e11)
def test_an_unusable_sweep_setting_falls_back_to_the_default(task_table):
    stored_event("msg_old", age=3600)

    assert sweep().startswith("1 stuck event(s) older than 600 s")


def test_retry_delay_stays_bounded_after_many_attempts():
    with override_settings(CLERK_SYNC_TASK_MAX_ATTEMPTS=10_000):
        assert processing.retry_delay(1100) <= processing.MAX_RETRY_DELAY * 1.2


@pytest.mark.parametrize(
    "args, message",
    [
        (["--older-than", "-1"], "--older-than '-1': give a number of seconds"),
        (["--older-than", "soon"], "--older-than 'soon'"),
        # Past what a date can subtract: an OverflowError traceback before.
        (["--older-than", "1e11"], "--older-than '1e11': give a number of seconds"),
        (["--older-than", "1e300"], "from 0 to 315360000"),
        (["--limit", "0"], "--limit '0': give a whole number"),
        (["--limit", "x"], "--limit 'x'"),
    ],
)
def test_sweep_refuses_bad_options(task_table, args, message):
    with pytest.raises(CommandError, match=message):
        sweep(*args)


# --- Celery --------------------------------------------------------------------------


def test_celery_answers_202_and_a_real_worker_processes_the_event(
    celery_worker, deliver
):
    response = deliver(load_event("user_created"), svix_id="msg_celery")

    assert response.status_code == 202
    assert response.json() == {"status": "received", "queued": True}

    celery_worker.wait((PROCESS, "SUCCESS"))
    stored = WebhookEvent.objects.get()
    assert (stored.status, stored.outcome, stored.attempts) == (
        "processed",
        "created",
        1,
    )
    assert get_user(CLERK_ID).email == EMAIL


def test_the_celery_task_has_its_stable_name(celery_app):
    celery_app.finalize()
    task = celery_app.tasks["django_clerk_sync.process_event"]
    assert task.name == tasks.process_event_celery.name
    assert task.acks_late is True
    assert "django_clerk_sync.sweep_events" in celery_app.tasks


@override_settings(CLERK_SYNC_FIELD_MAP=FLAKY_MAP, CLERK_SYNC_TASK_RETRY_DELAY=0)
def test_celery_retries_a_transient_failure(celery_worker, deliver):
    FAILURES["left"] = 2
    assert deliver(load_event("user_created"), svix_id="msg_retry").status_code == 202

    celery_worker.wait((PROCESS, "RETRY"), (PROCESS, "RETRY"), (PROCESS, "SUCCESS"))
    stored = WebhookEvent.objects.get()
    assert (stored.status, stored.outcome, stored.attempts) == (
        "processed",
        "created",
        3,
    )
    assert get_user(CLERK_ID).first_name == "Example"


@override_settings(
    CLERK_SYNC_FIELD_MAP=FLAKY_MAP,
    CLERK_SYNC_TASK_RETRY_DELAY=0,
    CLERK_SYNC_TASK_MAX_ATTEMPTS=2,
)
def test_celery_retries_stop_at_the_max_attempts(celery_worker, deliver, caplog):
    FAILURES["left"] = 5
    try:
        deliver(load_event("user_created"), svix_id="msg_always")
        celery_worker.wait((PROCESS, "RETRY"), (PROCESS, "FAILURE"))
    finally:
        FAILURES["left"] = 0

    stored = WebhookEvent.objects.get()
    assert (stored.status, stored.attempts) == ("failed", 2)
    # Celery logged the failure without the exception's text.
    assert "ProcessingFailed" in caplog.text
    assert "first-name service" not in caplog.text


def test_celery_broker_down_answers_503_and_keeps_the_event(
    celery_broker_down, deliver, caplog
):
    caplog.set_level(logging.ERROR, logger="django_clerk_sync")

    response = deliver(load_event("user_created"), svix_id="msg_no_broker")

    assert response.status_code == 503
    stored = WebhookEvent.objects.get()
    assert (stored.status, stored.attempts) == ("received", 0)
    assert get_user(CLERK_ID) is None
    (record,) = [r for r in caplog.records if "not enqueued" in r.getMessage()]
    assert record.error == "OperationalError"  # kombu's: the broker refused
    assert EMAIL not in caplog.text


@override_settings(CLERK_SYNC_ENQUEUE_FAILURE="inline")
def test_celery_broker_down_under_inline_policy_processes_in_the_request(
    celery_broker_down, deliver
):
    response = deliver(load_event("user_created"), svix_id="msg_no_broker")

    assert response.status_code == 200
    assert response.json() == {"status": "processed", "outcome": "created"}
    assert get_user(CLERK_ID).email == EMAIL


def test_celery_sweep_recovers_a_lost_task(celery_worker):
    stored_event("msg_lost", age=3600)

    assert sweep().startswith("1 stuck event(s) older than 600 s enqueued (celery)")
    celery_worker.wait((PROCESS, "SUCCESS"))
    assert WebhookEvent.objects.get().status == "processed"


def test_celery_sweep_task_runs_the_sweep(celery_worker):
    stored_event("msg_lost", age=3600)

    tasks.sweep_events_celery.delay()

    celery_worker.wait(
        ("django_clerk_sync.sweep_events", "SUCCESS"), (PROCESS, "SUCCESS")
    )
    assert WebhookEvent.objects.get().status == "processed"


# --- system checks -------------------------------------------------------------------


def processing_messages():
    return sorted(
        (m.id, m.msg)
        for m in run_checks()
        if m.id.startswith(("django_clerk_sync.E05", "django_clerk_sync.W003"))
    )


def ids():
    return [check_id for check_id, _ in processing_messages()]


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"CLERK_SYNC_PROCESSING": "inline"},
        {"CLERK_SYNC_PROCESSING": "django_tasks"},
        {
            "CLERK_SYNC_PROCESSING": "django_tasks",
            "CLERK_SYNC_TASK_QUEUE": "clerk",
            "CLERK_SYNC_TASK_BACKEND": "clerk",
            "TASKS": {
                "default": {"BACKEND": "django_tasks.backends.dummy.DummyBackend"},
                "clerk": {
                    "BACKEND": "django_tasks.backends.dummy.DummyBackend",
                    "QUEUES": ["clerk"],
                },
            },
        },
        {"CLERK_SYNC_PROCESSING": "celery", "CLERK_SYNC_ENQUEUE_FAILURE": "inline"},
        {
            "CLERK_SYNC_SWEEP_AFTER": 60,
            "CLERK_SYNC_TASK_MAX_ATTEMPTS": 3,
            "CLERK_SYNC_TASK_RETRY_DELAY": 0.5,
        },
    ],
)
def test_good_processing_settings_pass(overrides):
    framework = tasks.django_task_framework()
    if "TASKS" in overrides and framework is not None:
        # The dummy backend of whichever framework is in use.
        backend = f"{framework.__name__}.backends.dummy.DummyBackend"
        for alias in overrides["TASKS"].values():
            alias["BACKEND"] = backend
    if overrides.get("CLERK_SYNC_PROCESSING") == "celery":
        pytest.importorskip("celery", reason="needs celery")
    if overrides.get("CLERK_SYNC_PROCESSING") == "django_tasks":
        if tasks.django_task_framework() is None:
            pytest.skip("needs django-tasks (Django before 6)")
        importlib.import_module(f"{tasks.django_task_framework().__name__}.signals")
    with override_settings(**overrides):
        assert processing_messages() == []


@pytest.mark.parametrize(
    "overrides, check_id, text",
    [
        (
            {"CLERK_SYNC_PROCESSING": "rq"},
            "E050",
            "CLERK_SYNC_PROCESSING must be one of",
        ),
        ({"CLERK_SYNC_PROCESSING": None}, "E050", "not None"),
        ({"CLERK_SYNC_ENQUEUE_FAILURE": "drop"}, "E054", "CLERK_SYNC_ENQUEUE_FAILURE"),
        ({"CLERK_SYNC_TASK_QUEUE": ""}, "E055", "CLERK_SYNC_TASK_QUEUE must be"),
        ({"CLERK_SYNC_TASK_QUEUE": 3}, "E055", "not 3"),
        ({"CLERK_SYNC_SWEEP_AFTER": "600"}, "E056", "CLERK_SYNC_SWEEP_AFTER"),
        ({"CLERK_SYNC_TASK_MAX_ATTEMPTS": 0}, "E056", "CLERK_SYNC_TASK_MAX_ATTEMPTS"),
        ({"CLERK_SYNC_TASK_MAX_ATTEMPTS": 2.5}, "E056", "whole number"),
        ({"CLERK_SYNC_TASK_RETRY_DELAY": -1}, "E056", "CLERK_SYNC_TASK_RETRY_DELAY"),
        ({"CLERK_SYNC_SWEEP_AFTER": 1e11}, "E056", "at most 315,360,000"),
    ],
)
def test_bad_processing_settings_are_named(overrides, check_id, text):
    with override_settings(**overrides):
        messages = processing_messages()
    assert [m[0] for m in messages] == [f"django_clerk_sync.{check_id}"]
    assert text in messages[0][1]


def test_bad_values_fall_back_to_safe_defaults():
    from django_clerk_sync.conf import clerk_settings

    with override_settings(
        CLERK_SYNC_PROCESSING="rq",
        CLERK_SYNC_ENQUEUE_FAILURE="drop",
        CLERK_SYNC_TASK_QUEUE=3,
        CLERK_SYNC_TASK_BACKEND=[],
        CLERK_SYNC_SWEEP_AFTER="600",
        CLERK_SYNC_TASK_MAX_ATTEMPTS=True,
        CLERK_SYNC_TASK_RETRY_DELAY=float("nan"),
    ):
        assert clerk_settings.PROCESSING == "inline"
        assert clerk_settings.ENQUEUE_FAILURE == "retry"
        assert clerk_settings.TASK_QUEUE is None
        assert clerk_settings.TASK_BACKEND == "default"
        assert clerk_settings.SWEEP_AFTER == 600
        assert clerk_settings.TASK_MAX_ATTEMPTS == 8
        assert clerk_settings.TASK_RETRY_DELAY == 30


@override_settings(CLERK_SYNC_PROCESSING="celery")
def test_celery_chosen_without_a_project_app_is_a_warning(monkeypatch):
    pytest.importorskip("celery", reason="needs celery")
    from celery import Celery, _state

    # As in a project that never imports its celery.py: Celery's fallback app.
    monkeypatch.setattr(_state, "default_app", None)
    monkeypatch.setattr(_state._tls, "current_app", None)
    (message,) = processing_messages()
    assert message[0] == "django_clerk_sync.W003"
    assert "no Celery app is set up" in message[1]

    Celery("proj")  # what proj/celery.py does: becomes the current app
    assert processing_messages() == []


@override_settings(CLERK_SYNC_PROCESSING="celery")
def test_celery_chosen_but_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "celery", None)

    (message,) = processing_messages()
    assert message[0] == "django_clerk_sync.E051"
    assert "celery is not installed" in message[1]
    assert (
        "django-clerk-sync[celery]"
        in [m.hint for m in run_checks() if m.id == "django_clerk_sync.E051"][0]
    )


@override_settings(CLERK_SYNC_PROCESSING="django_tasks")
def test_django_tasks_chosen_but_no_framework_installed(monkeypatch):
    from django_clerk_sync.checks import check_processing_settings

    monkeypatch.setitem(sys.modules, "django.tasks", None)
    monkeypatch.setitem(sys.modules, "django_tasks", None)

    # This check alone: Django 6's own tasks check needs django.tasks.
    (message,) = check_processing_settings()
    assert message.id == "django_clerk_sync.E052"
    assert "neither django.tasks (Django 6) nor the django-tasks package" in message.msg


def test_django_tasks_backend_alias_missing_from_tasks():
    if tasks.django_task_framework() is None:
        pytest.skip("needs django-tasks (Django before 6)")
    with override_settings(
        CLERK_SYNC_PROCESSING="django_tasks", CLERK_SYNC_TASK_BACKEND="clerk"
    ):
        (message,) = processing_messages()
    assert message[0] == "django_clerk_sync.E053"
    assert (
        "CLERK_SYNC_TASK_BACKEND is 'clerk', which is not an alias in TASKS"
        in message[1]
    )


@pytest.mark.parametrize(
    "overrides, text",
    [
        (
            {"TASKS": {"default": {"BACKEND": "no.such.Backend"}}},
            "TASKS['default'] (CLERK_SYNC_TASK_BACKEND) cannot be loaded",
        ),
        ({"CLERK_SYNC_TASK_BACKEND": 7}, "CLERK_SYNC_TASK_BACKEND must be an alias"),
    ],
)
def test_django_tasks_backend_problems(overrides, text):
    framework = tasks.django_task_framework()
    if framework is None:
        pytest.skip("needs django-tasks (Django before 6)")
    importlib.import_module(f"{framework.__name__}.signals")
    from django_clerk_sync.checks import check_processing_settings

    # This check alone: Django 6's own tasks check raises on a backend it cannot load.
    with override_settings(CLERK_SYNC_PROCESSING="django_tasks", **overrides):
        messages = check_processing_settings()
    assert [m.id for m in messages] == ["django_clerk_sync.E053"]
    assert text in messages[0].msg


def test_django_tasks_queue_not_accepted_by_the_backend():
    if tasks.django_task_framework() is None:
        pytest.skip("needs django-tasks (Django before 6)")
    importlib.import_module(f"{tasks.django_task_framework().__name__}.signals")
    with override_settings(
        CLERK_SYNC_PROCESSING="django_tasks", CLERK_SYNC_TASK_QUEUE="clerk"
    ):
        (message,) = processing_messages()
    assert message[0] == "django_clerk_sync.E055"
    assert (
        "CLERK_SYNC_TASK_QUEUE 'clerk' is not one of TASKS['default']['QUEUES']"
        in message[1]
    )


def test_tasks_module_imports_without_either_engine(monkeypatch):
    import importlib

    for name in ("celery", "django.tasks", "django_tasks"):
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "django_clerk_sync.tasks")
    try:
        fresh = importlib.import_module("django_clerk_sync.tasks")
        assert fresh.process_event_task is None
        assert fresh.process_event_celery is None
        assert fresh.django_task_framework() is None
    finally:
        monkeypatch.undo()
        sys.modules["django_clerk_sync.tasks"] = tasks
