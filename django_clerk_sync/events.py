"""The durable event log: store a verified delivery, then process it.

Processing takes a stored :class:`~django_clerk_sync.models.WebhookEvent`, so the
same function serves the webhook view, replays and (later) task queues. Stored
rows were verified on arrival and are trusted as they are.
"""

import json
import logging
import traceback

from django.db import DatabaseError, router, transaction
from django.db.models import F
from django.utils import timezone

from . import sync
from .models import WebhookEvent

logger = logging.getLogger("django_clerk_sync.events")

USER_SYNC_TYPES = ("user.created", "user.updated")
USER_DELETE_TYPE = "user.deleted"

Status = WebhookEvent.Status


class Ignored(Exception):
    """The verified event carries nothing this package acts on."""


def _parse_int(digits):
    # Python refuses ints of over 4,300 digits; such a value (in metadata) must not
    # make the whole event unreadable, so it stays a string.
    return int(digits) if len(digits) <= 4000 else digits


def _parse(body):
    """The JSON in ``body``; :class:`Ignored` when it is not JSON at all."""
    try:
        return json.loads(bytes(body), parse_int=_parse_int)
    except RecursionError:
        # Valid JSON, but nested deeper than Python's parser goes (a user can write
        # such unsafe_metadata): not ignorable, and no retry will parse it.
        raise sync.PermanentFailure(
            "the payload is nested too deeply to parse; the user's metadata needs "
            "flattening in Clerk before this event can be replayed"
        )
    except ValueError:  # UnicodeDecodeError included
        raise Ignored("body is not JSON")


def _envelope(body):
    envelope = _parse(body)
    if not isinstance(envelope, dict):
        raise Ignored("body is not a JSON object")
    return envelope


def _storable(value, limit):
    """``value`` if it is text every database can store, else ``""``."""
    if not isinstance(value, str) or "\x00" in value:
        return ""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a JSON escape
        return ""
    return value[:limit]


def _describe(envelope):
    """``(event type, Clerk object id)`` as far as the envelope tells."""
    if not isinstance(envelope, dict):
        return "", ""
    data = envelope.get("data")
    object_id = data.get("id") if isinstance(data, dict) else None
    return _storable(envelope.get("type"), 100), _storable(object_id, 255)


def store_delivery(svix_id, body):
    """Record a verified delivery; return ``(event, created)``.

    A redelivery (same ``svix-id``: Svix retries and dashboard replays) returns
    the stored row untouched.
    """
    try:
        envelope = _parse(body)
    except (Ignored, sync.PermanentFailure):
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
            # An unusable id is refused there, with InvalidClerkUser (caught below).
            return sync.delete_user(data.get("id"), source="webhook")  # type: ignore[arg-type]
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
    if link.is_tombstone and result.outcome != sync.DELETED:
        # Deleted since: announcing the old creation or update now would be false.
        return result
    sync.announce(result, clerk_user=data, source="webhook")
    return result


def _record_failure(event, exc, *, permanent, committed):
    """Write the failure in its own transaction, so it survives the rollback."""
    detail = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, DatabaseError):
        # The admin lists outcomes, and a database's message quotes the clashing
        # value (PostgreSQL: "Key (email)=(...) already exists"); the traceback in
        # last_error keeps it for whoever opens the event.
        detail = f"{type(exc).__name__} (details in last_error)"
    updates = {
        "status": Status.FAILED,
        "last_error": "".join(traceback.format_exception(exc)),
        "signal_pending": committed,
        "processed_at": None,
    }
    if not committed:
        # The attempt counted inside the rolled-back transaction was lost.
        updates["attempts"] = F("attempts") + 1
        updates["outcome"] = ("permanent: " if permanent else "error: ") + detail[:240]
    WebhookEvent.objects.filter(pk=event.pk).update(**updates)
    event.refresh_from_db()
    logger.error(
        "Clerk event %s (%s, %s) failed on attempt %s: %s",
        event.svix_id,
        event.event_type or "?",
        event.clerk_id or "-",
        event.attempts,
        type(exc).__name__,
        extra={
            "svix_id": event.svix_id,
            "event_type": event.event_type,
            "clerk_id": event.clerk_id,
            "outcome": "failed",
            "permanent": permanent,
            "attempt": event.attempts,
            "error": type(exc).__name__,
        },
    )


def process_event(event):
    """Process one stored event; return it updated.

    Returns quietly for processed and ignored events (idempotent). Raises
    :class:`~django_clerk_sync.sync.PermanentFailure` (a ``SyncConflict``, say)
    for a failure no retry can fix, and
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
                logger.info(
                    "Clerk event %s ignored: %s",
                    event.svix_id,
                    reason,
                    extra={
                        "svix_id": event.svix_id,
                        "event_type": event.event_type,
                        "clerk_id": event.clerk_id,
                        "outcome": "ignored",
                        "reason": event.outcome,
                    },
                )
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
    except sync.PermanentFailure as exc:
        _record_failure(event, exc, permanent=True, committed=False)
        raise
    except Exception as exc:
        _record_failure(event, exc, permanent=False, committed=False)
        raise
    return event
