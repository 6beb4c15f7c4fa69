"""The Celery app and Django app of the processes tests/test_workers.py starts.

Every such process (the web server, each ``celery -A tests.worker_app worker``, the
sweep command) runs with ``tests.worker_settings``, which installs this module as a
Django app: ``ready()`` connects the receivers that record each signal in a table the
test reads, so effects sent in any worker process can be counted in one place.
"""

import os
import time

from django.apps import AppConfig

try:
    from celery import Celery
except ImportError:  # the django_tasks runs need no Celery
    app = None
else:
    # The project's Celery app, as a project's ``celery.py`` defines it; the web
    # server and the sweep command import this module too (it is an installed app),
    # so what they enqueue reaches the same broker.
    app = Celery("clerk_sync_worker_tests")
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.autodiscover_tasks(["django_clerk_sync"])


def _record(signal, clerk_id, updated_at=None, created=None):
    table = os.environ.get("CLERK_SYNC_WORKER_EFFECTS")
    if not table:
        return
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (signal, clerk_id, updated_at, created, pid) "
            "VALUES (%s, %s, %s, %s, %s)",
            [signal, clerk_id, updated_at, created, os.getpid()],
        )


def _on_synced(sender, user, clerk_user, created, source, **kwargs):
    _record("synced", clerk_user["id"], clerk_user.get("updated_at"), created)


def _on_deleted(sender, clerk_id, source, **kwargs):
    _record("deleted", clerk_id)


def last_name_or_trap(clerk_user):
    """The field-map source of ``last_name``; for the trap user, the first time only,
    it writes this process's id to the trap file and waits there to be killed.

    That puts the kill deterministically inside a task, in the middle of the sync
    transaction (the event row and the user's link row locked, nothing committed).
    """
    trap_user = os.environ.get("CLERK_SYNC_WORKER_TRAP_USER")
    trap_file = os.environ.get("CLERK_SYNC_WORKER_TRAP_FILE")
    if trap_user and trap_file and clerk_user.get("id") == trap_user:
        try:
            fd = os.open(trap_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pass  # sprung already: every later attempt goes through
        else:
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            time.sleep(120)  # the test kills this process long before
    return clerk_user.get("last_name")


class WorkerHarnessConfig(AppConfig):
    name = "tests.worker_app"
    label = "clerk_sync_worker_harness"

    def ready(self):
        from django_clerk_sync.signals import clerk_user_deleted, clerk_user_synced

        clerk_user_synced.connect(_on_synced, weak=False)
        clerk_user_deleted.connect(_on_deleted, weak=False)
