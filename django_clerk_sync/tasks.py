"""The processing task for each engine; each calls ``processing.process_stored_event``.

- ``process_event_task``: a Django task (``@task`` from ``django.tasks`` on Django 6,
  else from the ``django-tasks`` package), or ``None`` without either.
- ``process_event_celery``: a Celery ``shared_task`` named
  ``"django_clerk_sync.process_event"`` (so ``app.autodiscover_tasks()`` finds it),
  and ``sweep_events_celery`` (``"django_clerk_sync.sweep_events"``) for Celery beat;
  ``None`` without Celery.

Importing this module works with neither engine installed. Enqueue through
``processing.enqueue``, which reads the queue and backend settings live.
"""

import logging
from collections.abc import Callable
from typing import Any

from . import processing
from .conf import clerk_settings

logger = logging.getLogger("django_clerk_sync.tasks")

#: Why ``process_event_task`` is ``None`` while a framework is installed.
DJANGO_TASK_ERROR = ""


def django_task_framework() -> Any:
    """``django.tasks`` (Django 6), else the ``django_tasks`` package, else ``None``."""
    try:
        import django.tasks as framework
    except ImportError:
        try:
            import django_tasks as framework
        except ImportError:
            return None
    return framework


def process_event_task(event_id: int) -> str | None:
    """The Django task: process the stored event ``event_id``. On a transient failure
    it enqueues a retry after a growing delay (when the backend can defer tasks:
    otherwise ``clerk_sweep_events`` retries it) and fails this run."""
    try:
        return processing.process_stored_event(event_id)
    except processing.ProcessingFailed as exc:
        delay = processing.retry_delay(exc.attempts)
        if delay is not None:
            _enqueue_retry(event_id, delay)
        raise


def _enqueue_retry(event_id: int, delay: float) -> None:
    try:
        backend = django_task_framework().task_backends[clerk_settings.TASK_BACKEND]
        if delay and not backend.supports_defer:
            # Run at once, the retries would spend every attempt in a moment; the
            # sweep retries it later instead.
            return
        processing._enqueue_django_task(event_id, delay)
    except Exception as exc:
        logger.error(
            "Retry of Clerk event row %s could not be enqueued (%s); "
            "clerk_sweep_events will retry it",
            event_id,
            type(exc).__name__,
            extra={"event_pk": event_id, "outcome": "enqueue_failed"},
        )


def _make_django_task(function: Callable[[int], str | None]) -> Any:
    global DJANGO_TASK_ERROR
    framework = django_task_framework()
    if framework is None:
        return None
    # The decorator validates the task against a backend now, at import time; the
    # backend and queue used for enqueueing are chosen later, from live settings.
    # Try the framework's default alias, then the configured one (a project whose
    # TASKS has no usable "default").
    attempts: list[dict[str, str]] = [{}]
    try:
        configured = {"backend": clerk_settings.TASK_BACKEND}
        if clerk_settings.TASK_QUEUE:
            configured["queue_name"] = clerk_settings.TASK_QUEUE
        attempts.append(configured)
    except Exception:  # settings not configured yet
        pass
    for options in attempts:
        try:
            return framework.task(**options)(function)
        except Exception as exc:
            DJANGO_TASK_ERROR = f"{type(exc).__name__}: {exc}"
    return None


# The worker finds the task by the function's dotted path, so the Task object must
# take the function's own name.
process_event_task = _make_django_task(process_event_task)


try:
    from celery import shared_task
except ImportError:
    process_event_celery = None
    sweep_events_celery = None
else:

    @shared_task(
        bind=True,
        name=processing.CELERY_TASK_NAME,
        # Acknowledged after it ran: a worker killed mid-task leaves the message to
        # be delivered again (processing is idempotent). Retries are bounded by the
        # event's attempts, not by Celery's counter.
        acks_late=True,
        max_retries=None,
        ignore_result=True,
    )
    def process_event_celery(self, event_id):
        try:
            return processing.process_stored_event(event_id)
        except processing.ProcessingFailed as exc:
            delay = processing.retry_delay(exc.attempts)
            if delay is None:
                raise
            raise self.retry(exc=exc, countdown=delay)

    @shared_task(name=processing.CELERY_SWEEP_TASK_NAME, ignore_result=True)
    def sweep_events_celery(older_than=None, limit=None):
        """Celery beat's way to run ``clerk_sweep_events``."""
        result = processing.sweep(older_than, limit=limit)
        return {"found": result.found, "enqueued": result.enqueued}
