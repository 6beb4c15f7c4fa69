"""How a stored webhook event gets processed: in the request, or by a task engine.

``CLERK_SYNC_PROCESSING`` picks the mode. Whatever the mode, the work is
:func:`django_clerk_sync.events.process_event` on the stored row: the webhook view
calls it inline; in the deferred modes :func:`enqueue` hands the row's id to Django's
tasks framework or to Celery, and their worker calls :func:`process_stored_event`.

Nothing is lost when a task is: the row is stored before it is enqueued, a Svix
redelivery of a row still ``received`` enqueues it again, and :func:`sweep`
(``manage.py clerk_sweep_events``) re-enqueues rows left ``received`` or failed with a
transient error.
"""

import logging
import random
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, cast

from django.db.models import Q
from django.utils import timezone

from . import events, sync
from .conf import clerk_settings
from .models import WebhookEvent

logger = logging.getLogger("django_clerk_sync.processing")

INLINE = "inline"
DJANGO_TASKS = "django_tasks"
CELERY = "celery"

#: The name the Celery task is registered under (stable: routes may name it).
CELERY_TASK_NAME = "django_clerk_sync.process_event"
CELERY_SWEEP_TASK_NAME = "django_clerk_sync.sweep_events"

# The longest a worker waits before retrying one event.
MAX_RETRY_DELAY = 3600

# Bounds Celery's own publish retries: the webhook must answer within Svix's 15 s.
CELERY_PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}

Status = WebhookEvent.Status


class EnqueueFailed(Exception):
    """The task engine did not accept the task; the engine's error is ``__cause__``."""


class EngineUnavailable(Exception):
    """The configured engine is not installed (or Django tasks cannot make the task)."""


class ProcessingFailed(Exception):
    """A transient failure in a worker: retry later. The traceback is in the event's
    ``last_error``; this message names the exception type only, since exception texts
    can carry user data (a database error quoting an email)."""

    def __init__(self, message, attempts=0):
        super().__init__(message)
        self.attempts = attempts


def mode():
    """The configured processing mode: ``"inline"``, ``"django_tasks"`` or ``"celery"``."""
    return clerk_settings.PROCESSING


def is_deferred():
    return mode() != INLINE


def engine_problem(processing=None):
    """Why the engine of ``processing`` (default: the configured mode) cannot be
    used, or ``None``. Inline mode needs no engine."""
    processing = processing or mode()
    if processing == CELERY:
        try:
            import celery  # noqa: F401
        except ImportError:
            return "celery is not installed (pip install django-clerk-sync[celery])"
        return None
    if processing == DJANGO_TASKS:
        from . import tasks

        if tasks.django_task_framework() is None:
            return (
                "neither django.tasks (Django 6) nor the django-tasks package is "
                "installed (pip install django-clerk-sync[tasks])"
            )
        if tasks.process_event_task is None:
            return f"the processing task could not be made: {tasks.DJANGO_TASK_ERROR}"
        return None
    return None


def enqueue(event, *, delay=None):
    """Send ``event`` (a stored :class:`WebhookEvent`) to the configured engine.

    ``delay``: seconds before a worker may run it (used for retries; ignored by a
    Django tasks backend that cannot defer). Call it once the row is committed, as
    the webhook view does (it runs outside any transaction): a worker looks the row
    up by id. Raises :class:`EnqueueFailed` when the engine refuses or is
    unreachable, :class:`EngineUnavailable` when it is not installed, and
    ``ValueError`` in inline mode (there is nothing to enqueue into).
    """
    processing = mode()
    if processing == INLINE:
        raise ValueError('CLERK_SYNC_PROCESSING is "inline": nothing to enqueue into')
    problem = engine_problem(processing)
    if problem:
        raise EngineUnavailable(
            f'CLERK_SYNC_PROCESSING is "{processing}" but {problem}'
        )
    try:
        if processing == CELERY:
            _enqueue_celery(event.pk, delay)
        else:
            _enqueue_django_task(event.pk, delay)
    except Exception as exc:
        raise EnqueueFailed(
            f"Clerk event {event.svix_id} could not be enqueued ({type(exc).__name__})"
        ) from exc


def _enqueue_celery(event_id, delay):
    from .tasks import process_event_celery

    if process_event_celery is None:  # engine_problem() said so already
        raise EngineUnavailable("celery is not installed")
    options: dict[str, Any] = {
        "retry": True,
        "retry_policy": CELERY_PUBLISH_RETRY_POLICY,
    }
    if clerk_settings.TASK_QUEUE:
        options["queue"] = clerk_settings.TASK_QUEUE
    if delay:
        options["countdown"] = delay
    process_event_celery.apply_async(args=[event_id], **options)


def _enqueue_django_task(event_id, delay):
    from .tasks import process_event_task

    if process_event_task is None:
        raise EngineUnavailable("the Django task could not be made")
    changes: dict[str, Any] = {"backend": clerk_settings.TASK_BACKEND}
    if clerk_settings.TASK_QUEUE:
        changes["queue_name"] = clerk_settings.TASK_QUEUE
    task = cast(Any, process_event_task).using(**changes)
    if delay and task.get_backend().supports_defer:
        task = task.using(run_after=timezone.now() + timedelta(seconds=delay))
    task.enqueue(event_id)


def process_stored_event(event_id):
    """The worker entry point: process the stored event ``event_id`` (its pk).

    Runs :func:`events.process_event`, as inline mode does. Returns the event's
    status afterwards (``"processed"``, ``"ignored"`` or ``"failed"``), or ``None``
    when no such row exists (pruned meanwhile: logged and ignored). An event already
    processed or ignored is left as it is. A permanent failure (a user conflict, say)
    is recorded on the row and returns ``"failed"``: no retry can fix it. A transient
    one is recorded and raises :class:`ProcessingFailed`, for the engine to retry.
    """
    try:
        event = WebhookEvent.objects.get(pk=event_id)
    except (WebhookEvent.DoesNotExist, ValueError, TypeError):
        # Pruned meanwhile, or not a row id at all (a task sent by hand): nothing
        # to process, and nothing a retry would change.
        logger.warning(
            "Clerk event row %s no longer exists; task ignored",
            str(event_id)[:40],
            extra={"event_pk": str(event_id)[:40], "outcome": "missing"},
        )
        return None
    try:
        event = events.process_event(event)
    except sync.PermanentFailure:
        # process_event recorded and logged it; Svix was already answered 2xx.
        return Status.FAILED.value
    except Exception as exc:
        attempts = (
            WebhookEvent.objects.filter(pk=event_id)
            .values_list("attempts", flat=True)
            .first()
        )
        raise ProcessingFailed(
            f"Clerk event {event.svix_id} failed ({type(exc).__name__}) on attempt "
            f"{attempts}; the stored event's last_error has the traceback",
            attempts or 0,
        ) from None
    return event.status


def retry_delay(attempts):
    """Seconds before retrying an event that has failed ``attempts`` times, or
    ``None`` once ``CLERK_SYNC_TASK_MAX_ATTEMPTS`` is reached.

    Doubles from ``CLERK_SYNC_TASK_RETRY_DELAY`` up to an hour, within a fifth either
    way so that the events of one outage do not all come back at the same moment.
    """
    if attempts >= clerk_settings.TASK_MAX_ATTEMPTS:
        return None
    # The exponent is capped: past 2**12 the hour's cap applies anyway, and a float
    # times 2**1100 overflows.
    base = clerk_settings.TASK_RETRY_DELAY * 2 ** min(max(attempts - 1, 0), 32)
    return min(base, MAX_RETRY_DELAY) * random.uniform(0.8, 1.2)


def stuck_events(older_than=None, *, now=None):
    """Events whose task was lost or whose transient failure deserves another try.

    ``received`` rows, and ``failed`` rows whose outcome is not ``permanent: ...``
    with fewer than ``CLERK_SYNC_TASK_MAX_ATTEMPTS`` attempts, all received more than
    ``older_than`` seconds ago (default ``CLERK_SYNC_SWEEP_AFTER``), oldest first.
    """
    if older_than is None:
        older_than = clerk_settings.SWEEP_AFTER
    cutoff = (now or timezone.now()) - timedelta(seconds=older_than)
    transient_failure = (
        Q(status=Status.FAILED)
        & ~Q(outcome__startswith="permanent:")
        & Q(attempts__lt=clerk_settings.TASK_MAX_ATTEMPTS)
    )
    return WebhookEvent.objects.filter(
        Q(status=Status.RECEIVED) | transient_failure, received_at__lt=cutoff
    ).order_by("received_at", "pk")


@dataclass
class SweepResult:
    found: int = 0
    enqueued: int = 0
    failed: int = 0
    svix_ids: list = field(default_factory=list)


def sweep(older_than=None, *, limit=None, dry_run=False):
    """Enqueue the :func:`stuck_events` again (at most ``limit``); return a
    :class:`SweepResult`. Stops at the first enqueue failure: the queue is down, and
    the rest would fail the same way. Enqueueing twice is harmless, since processing
    an event locks its row and leaves a processed one alone."""
    if not is_deferred():
        raise ValueError(
            'CLERK_SYNC_PROCESSING is "inline": there is no queue to sweep events into'
        )
    # Only what enqueueing needs: a backlog's bodies can be large.
    candidates = stuck_events(older_than).only("pk", "svix_id")
    if limit is not None:
        candidates = candidates[:limit]
    candidates = list(candidates)
    result = SweepResult(
        found=len(candidates), svix_ids=[event.svix_id for event in candidates]
    )
    for event in candidates:
        if dry_run:
            continue
        try:
            enqueue(event)
        except EnqueueFailed as exc:
            result.failed += 1
            logger.error(
                "Sweep stopped: Clerk event %s could not be enqueued (%s)",
                event.svix_id,
                type(exc.__cause__).__name__,
                extra={
                    "svix_id": event.svix_id,
                    "outcome": "enqueue_failed",
                    "error": type(exc.__cause__).__name__,
                },
            )
            break
        result.enqueued += 1
    if result.enqueued:
        logger.info(
            "Sweep enqueued %s stuck Clerk event(s) again",
            result.enqueued,
            extra={"outcome": "swept", "count": result.enqueued},
        )
    return result
