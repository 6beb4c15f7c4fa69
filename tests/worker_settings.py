"""Settings for the real processes of tests/test_workers.py and
benchmarks/bench_deferred.py: a web server serving the webhook, Celery workers and
``manage.py`` commands, all on one PostgreSQL database with Redis as the broker.

The harness sets the environment (tests/worker_support.py):

``CLERK_SYNC_WORKER_DB``          the PostgreSQL database (the test database)
``CLERK_SYNC_WORKER_BROKER``      the Celery broker URL (Celery runs only)
``CLERK_SYNC_WORKER_PROCESSING``  ``CLERK_SYNC_PROCESSING``: ``"celery"`` (default),
                                  ``"django_tasks"`` (django-tasks-db) or ``"inline"``
``CLERK_SYNC_WORKER_QUEUE``       ``CLERK_SYNC_TASK_QUEUE``, one per run
``CLERK_SYNC_WORKER_EFFECTS``     a table the signal receivers write to (optional)
``CLERK_SYNC_WORKER_TRAP_*``      the user whose first sync waits to be killed (optional)
``CLERK_SYNC_WORKER_CONN_MAX_AGE``  ``CONN_MAX_AGE`` of the workers (default 0, Django's)
"""

import os

from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.worker_app.WorkerHarnessConfig"]
ROOT_URLCONF = "tests.urls"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("CLERK_SYNC_WORKER_DB", "test"),
        "USER": os.environ.get("PGUSER", "postgres"),
        "HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "PORT": os.environ.get("PGPORT", "5432"),
        # Django's default 0 (a connection per request or task) unless set.
        "CONN_MAX_AGE": int(os.environ.get("CLERK_SYNC_WORKER_CONN_MAX_AGE", "0")),
    }
}

CLERK_SYNC_PROCESSING = os.environ.get("CLERK_SYNC_WORKER_PROCESSING", "celery")
CLERK_SYNC_TASK_QUEUE = os.environ.get("CLERK_SYNC_WORKER_QUEUE", "clerk_sync")

if CLERK_SYNC_PROCESSING == "django_tasks":
    import importlib.util

    # Django's tasks framework (the django-tasks backport before Django 6) with the
    # django-tasks-db backend, whose ``db_worker`` command is the worker.
    INSTALLED_APPS += [
        *(["django_tasks"] if importlib.util.find_spec("django_tasks") else []),
        "django_tasks_db",
    ]
    TASKS = {
        "default": {
            "BACKEND": "django_tasks_db.DatabaseBackend",
            "QUEUES": [CLERK_SYNC_TASK_QUEUE],
        }
    }

# The default map, with last_name read through the trap (a no-op unless armed).
CLERK_SYNC_FIELD_MAP = {
    "email": "primary_email",
    "first_name": "first_name",
    "last_name": "tests.worker_app:last_name_or_trap",
    "username": "username",
}

CELERY_BROKER_URL = os.environ.get("CLERK_SYNC_WORKER_BROKER") or None
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A task is acknowledged only after it ran (the package's task sets acks_late too), so
# a killed worker's task stays with the broker; one task reserved per worker at a time.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["stderr"], "level": "WARNING"},
    # One line per request from runserver: 10,000 of them say nothing.
    "loggers": {"django.server": {"level": "ERROR"}},
}
