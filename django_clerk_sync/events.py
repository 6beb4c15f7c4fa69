"""The durable event log: store a verified delivery, then process it.

Processing takes a stored :class:`~django_clerk_sync.models.WebhookEvent`, so the
same function serves the webhook view, replays and (later) task queues. Stored
rows were verified on arrival and are trusted as they are.
"""

import json
import logging
import traceback

from django.db import router, transaction
from django.db.models import F
from django.utils import timezone

from . import sync
from .models import WebhookEvent

logger = logging.getLogger("django_clerk_sync.events")

USER_SYNC_TYPES = ("user.created", "user.updated")
USER_DELETE_TYPE = "user.deleted"

Status = WebhookEvent.Status


# Nesting deeper than Python's recursion limit is valid JSON that json cannot parse.
_UNPARSEABLE = (UnicodeDecodeError, ValueError, RecursionError)


class Ignored(Exception):
    """The verified event carries nothing this package acts on."""


def _envelope(body):
    try:
        envelope = json.loads(bytes(body))
    except _UNPARSEABLE:
        raise Ignored("body is not JSON")
    if not isinstance(envelope, dict):
        raise Ignored("body is not a JSON object")
    return envelope


def _describe(envelope):
    """``(event type, Clerk object id)`` as far as the envelope tells."""
    if not isinstance(envelope, dict):
        return "", ""
    event_type = envelope.get("type")
    data = envelope.get("data")
    object_id = data.get("id") if isinstance(data, dict) else None
    return (
        event_type[:100] if isinstance(event_type, str) else "",
        object_id[:255] if isinstance(object_id, str) else "",
    )


def store_delivery(svix_id, body):
    """Record a verified delivery; return ``(event, created)``.

    A redelivery (same ``svix-id``: Svix retries and dashboard replays) returns
    the stored row untouched.
    """
    try:
        envelope = json.loads(body)
    except _UNPARSEABLE:
        envelope = None
    event_type, clerk_id = _describe(envelope)
    return WebhookEvent.objects.get_or_create(
        svix_id=svix_id,
        defaults={"body": body, "event_type": event_type, "clerk_id": clerk_id},
    )


def _apply(event):
    """Act on one event; return the sync result. Raises :class:`Ignored`."""
    envelope = _envelope(event.body)
    event_type, data = envelope.get("type"), envelope.get("data")
    if not isinstance(event_type, str) or not isinstance(data, dict):
        raise Ignored("envelope without type or data")
    try:
        if event_type in USER_SYNC_TYPES:
            return sync.sync_user(data, source="webhook")
        if event_type == USER_DELETE_TYPE:
            return sync.delete_user(data.get("id"), source="webhook")
    except sync.InvalidClerkUser as exc:
        raise Ignored(f"{event_type} without a user id: {exc}")
    raise Ignored(f"unhandled event type {event_type[:60]!r}")


def _resend_signal(event):
    """The change was committed on an earlier attempt but a receiver raised: send again."""
    envelope = _envelope(event.body)
    data = envelope.get("data") or {}
    clerk_id = sync.clean_clerk_id(data.get("id"))
    link = sync.ClerkUserLink.objects.select_related("user").get(clerk_id=clerk_id)
    result = sync.SyncResult(clerk_id, event.outcome, link.user)
    sync.announce(result, clerk_user=data, source="webhook")
    return result


def _record_failure(event, exc, *, permanent, committed):
    """Write the failure in its own transaction, so it survives the rollback."""
    detail = f"{type(exc).__name__}: {exc}"
    updates = {
        "status": Status.FAILED,
        "last_error": "".join(traceback.format_exception(exc)),
        "signal_pending": committed,
        "processed_at": None,
    }
    if not committed:
        # The attempt counted inside the rolled-back transaction was lost.
        updates["attempts"] = F("attempts") + 1
        updates["outcome"] = ("conflict: " if permanent else "error: ") + detail[:240]
    WebhookEvent.objects.filter(pk=event.pk).update(**updates)
    event.refresh_from_db()
    logger.error(
        "Clerk event %s (%s, %s) failed on attempt %s: %s",
        event.svix_id,
        event.event_type or "?",
        event.clerk_id or "-",
        event.attempts,
        type(exc).__name__,
    )


def process_event(event):
    """Process one stored event; return it updated.

    Returns quietly for processed and ignored events (idempotent). Raises
    :class:`~django_clerk_sync.sync.SyncConflict` for a permanent failure and
    re-raises anything else after recording it, so the caller can ask for a retry.

    Run it outside any transaction, as the (non-atomic) webhook view does: then the
    failure record survives the rollback and signals are sent, and a raising
    receiver is caught, when its own change commits. Inside an outer transaction
    (a ``TestCase``, say) everything waits for that transaction: signals are sent
    when it commits, and a rollback takes the failure record with it.
    """
    using = router.db_for_write(WebhookEvent)
    try:
        with transaction.atomic(using=using):
            event = WebhookEvent.objects.select_for_update().get(pk=event.pk)
            if event.status in (Status.PROCESSED, Status.IGNORED):
                return event
            event.attempts += 1
            try:
                if event.signal_pending:
                    result = _resend_signal(event)
                else:
                    result = _apply(event)
            except Ignored as reason:
                event.status = Status.IGNORED
                event.outcome = str(reason)[:255]
                logger.info("Clerk event %s ignored: %s", event.svix_id, reason)
            else:
                event.status = Status.PROCESSED
                event.outcome = result.outcome
            event.last_error = ""
            event.signal_pending = False
            event.processed_at = timezone.now()
            event.save()
    except sync.SignalReceiverError as exc:
        _record_failure(event, exc, permanent=False, committed=True)
        raise
    except sync.SyncConflict as exc:
        _record_failure(event, exc, permanent=True, committed=False)
        raise
    except Exception as exc:
        _record_failure(event, exc, permanent=False, committed=False)
        raise
    return event
