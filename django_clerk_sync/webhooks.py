"""The Clerk webhook endpoint: verify the Svix signature, store, then process.

Status codes (docs/webhooks.md has the table Svix users see):

=====  ==================================================================
400    unsigned, badly signed, stale/future timestamp, malformed headers
405    not a POST
409    verified, but the user row conflicts (permanent; retries aborted)
413    body larger than ``DATA_UPLOAD_MAX_MEMORY_SIZE``
500    verified and stored, processing failed: Svix retries it
503    no usable ``CLERK_WEBHOOK_SECRET``, the database is unavailable, or
       (deferred mode) the event was stored but the task queue is unavailable
2xx    processed, a duplicate of a processed event, or ignored; 202 when
       ``CLERK_SYNC_PROCESSING`` defers it to a task engine (stored and enqueued)
=====  ==================================================================
"""

import base64
import binascii
import logging
from datetime import datetime, timezone

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError, transaction
from django.http import JsonResponse, UnreadablePostError
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.debug import sensitive_variables
from django.views.decorators.http import require_POST

from . import events, processing, sync
from .conf import clerk_settings

logger = logging.getLogger("django_clerk_sync.webhooks")

try:  # Django 5.1+: the endpoint must stay reachable under LoginRequiredMiddleware.
    from django.contrib.auth.decorators import login_not_required
except ImportError:  # pragma: no cover - older Django

    def login_not_required(view):  # type: ignore[misc]  # Django's is typed
        return view


MAX_SVIX_ID_LENGTH = 255


class VerificationFailed(Exception):
    """The delivery cannot be shown to come from Clerk."""


def _header(request, name):
    # Svix's own names first; the Standard Webhooks names are the same thing.
    return request.headers.get(f"svix-{name}") or request.headers.get(f"webhook-{name}")


def _well_formed_signatures(header):
    """Keep the ``v1,<base64 HMAC-SHA256>`` entries; drop everything else.

    The svix library raises plain ``ValueError`` on a malformed entry before it
    looks at the next one, so a valid signature beside a malformed or unknown one
    (``v1a,`` is ed25519) would be refused. Filtering first fixes both.
    """
    kept = []
    for entry in header.split():
        version, sep, signature = entry.partition(",")
        if version != "v1" or not sep:
            continue
        try:
            if len(base64.b64decode(signature, validate=True)) == 32:
                kept.append(entry)
        except (binascii.Error, ValueError):
            continue
    return " ".join(kept)


@sensitive_variables("secrets", "secret", "webhook")
def verify_delivery(body, request_headers, secrets):
    """Check a delivery against the configured secrets; return its ``svix-id``.

    ``request_headers`` is a case-insensitive mapping such as
    ``request.headers``. Raises :class:`VerificationFailed` with the reason.
    """
    from svix.webhooks import Webhook, WebhookVerificationError

    get = request_headers.get
    msg_id = get("svix-id") or get("webhook-id")
    timestamp = get("svix-timestamp") or get("webhook-timestamp")
    signature = get("svix-signature") or get("webhook-signature")
    if not (msg_id and timestamp and signature):
        raise VerificationFailed("missing svix-id, svix-timestamp or svix-signature")
    if len(msg_id) > MAX_SVIX_ID_LENGTH:
        raise VerificationFailed("svix-id too long")
    if not msg_id.isprintable():
        raise VerificationFailed("svix-id holds control characters")
    if not (timestamp.isascii() and timestamp.isdigit()):
        raise VerificationFailed("svix-timestamp is not Unix seconds")
    try:
        # svix reports a time it cannot represent as a bad signature; say what it is.
        datetime.fromtimestamp(int(timestamp), tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise VerificationFailed(
            "svix-timestamp is not a usable Unix time in seconds "
            "(Svix allows 5 minutes either way)"
        )
    signatures = _well_formed_signatures(signature)
    if not signatures:
        raise VerificationFailed("svix-signature holds no well-formed v1 signature")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        raise VerificationFailed("body is not UTF-8")
    headers = {
        "svix-id": msg_id,
        "svix-timestamp": timestamp,
        "svix-signature": signatures,
    }
    reason = "no signature matches CLERK_WEBHOOK_SECRET"
    for secret in secrets:
        try:
            webhook = Webhook(secret)
        except Exception:
            continue  # a malformed secret: the system checks name it
        try:
            webhook.verify(body, headers)
            return msg_id
        except WebhookVerificationError as exc:
            text = str(exc)
            if "timestamp" in text.lower():
                reason = f"{text} (Svix allows 5 minutes either way)"
                break  # the same for every secret
        except (ValueError, TypeError):
            continue
    raise VerificationFailed(reason)


@sensitive_variables("usable", "secret")
def _usable_secrets():
    """The configured secrets svix accepts as keys; the others are skipped.

    Nothing usable (unset, blank, an empty ``whsec_`` key, a value of the wrong
    type) means no delivery can ever verify: that is the 503 case, not a 400.
    """
    from svix.webhooks import Webhook

    usable = []
    for secret in clerk_settings.WEBHOOK_SECRETS:
        try:
            Webhook(secret)
        except Exception:
            continue  # system check E002 names the entry
        usable.append(secret)
    return usable


def _secret_hint():
    """Name what is wrong with a configured secret (never the secret itself)."""
    from .checks import secret_problem

    problems = [
        f"CLERK_WEBHOOK_SECRET entry {n} {problem}"
        for n, problem in enumerate(map(secret_problem, clerk_settings.WEBHOOK_SECRETS))
        if problem
    ]
    return f" ({'; '.join(problems)}: see manage.py check)" if problems else ""


def _response(status, http_status=200, **extra):
    return JsonResponse({"status": status, **extra}, status=http_status)


def _enqueue(event):
    """Deferred mode: the 202 (or 503) answer, or ``None`` to process inline.

    A redelivery of a stored event not yet processed is enqueued again: that is how
    a Svix retry after an enqueue failure, or of a lost task, recovers it.
    """
    log_extra = {
        "svix_id": event.svix_id,
        "event_type": event.event_type,
        "clerk_id": event.clerk_id,
    }
    try:
        processing.enqueue(event)
    except (processing.EnqueueFailed, processing.EngineUnavailable) as exc:
        error = type(exc.__cause__ or exc).__name__
        if clerk_settings.ENQUEUE_FAILURE == "inline":
            logger.error(
                "Clerk event %s could not be enqueued (%s); processing it in the "
                "request (CLERK_SYNC_ENQUEUE_FAILURE)",
                event.svix_id,
                error,
                extra={**log_extra, "outcome": "enqueue_failed", "error": error},
            )
            return None
        logger.error(
            "Clerk event %s stored but not enqueued (%s); answered 503 so Svix "
            "retries it",
            event.svix_id,
            error,
            extra={
                **log_extra,
                "outcome": "enqueue_failed",
                "http_status": 503,
                "error": error,
            },
        )
        return _response(
            "error", 503, reason="stored, but the task queue is unavailable"
        )
    logger.info(
        "Clerk event %s stored and enqueued (%s)",
        event.svix_id,
        processing.mode(),
        extra={**log_extra, "outcome": "queued", "http_status": 202},
    )
    return _response("received", 202, queued=True)


@csrf_exempt
@login_not_required
@require_POST
@transaction.non_atomic_requests
@sensitive_variables("secrets")
def clerk_webhook(request):
    secrets = _usable_secrets()
    if not secrets:
        configured = getattr(settings, "CLERK_WEBHOOK_SECRET", None)
        problem = (
            "is not set"
            if configured in (None, "", [], ())
            else "holds no usable signing secret (manage.py check says why)"
        )
        logger.error(
            "Clerk webhook refused: CLERK_WEBHOOK_SECRET %s%s. Copy the endpoint's "
            "signing secret (whsec_...) from the Clerk dashboard.",
            problem,
            _secret_hint(),
            extra={
                "outcome": "refused",
                "http_status": 503,
                "reason": f"CLERK_WEBHOOK_SECRET {problem}",
            },
        )
        return _response("error", 503, reason=f"CLERK_WEBHOOK_SECRET {problem}")
    try:
        body = request.body
    except RequestDataTooBig:
        logger.warning(
            "Clerk webhook refused: body over DATA_UPLOAD_MAX_MEMORY_SIZE",
            extra={
                "outcome": "refused",
                "http_status": 413,
                "reason": "body too large",
            },
        )
        return _response("rejected", 413, reason="body too large")
    except (UnreadablePostError, OSError):
        # The client went away mid-body: nothing arrived that could be verified.
        logger.warning(
            "Clerk webhook rejected: the body could not be read",
            extra={
                "outcome": "rejected",
                "http_status": 400,
                "reason": "body could not be read",
            },
        )
        return _response("rejected", 400, reason="body could not be read")

    try:
        svix_id = verify_delivery(body, request.headers, secrets)
    except VerificationFailed as exc:
        claimed_id = (_header(request, "id") or "")[:80]  # unverified: cut short
        logger.warning(
            "Clerk webhook rejected (svix-id %r): %s%s",
            claimed_id,
            exc,
            _secret_hint(),
            extra={
                "svix_id": claimed_id,
                "outcome": "rejected",
                "http_status": 400,
                "reason": str(exc),
            },
        )
        return _response("rejected", 400, reason=str(exc))

    try:
        event, _ = events.store_delivery(svix_id, body)
    except DatabaseError:
        logger.exception(
            "Clerk event %s could not be stored",
            svix_id,
            extra={"svix_id": svix_id, "outcome": "error", "http_status": 503},
        )
        return _response("error", 503, reason="database unavailable")

    if event.status in (event.Status.PROCESSED, event.Status.IGNORED):
        logger.info(
            "Clerk event %s already %s",
            svix_id,
            event.status,
            extra={
                "svix_id": svix_id,
                "event_type": event.event_type,
                "clerk_id": event.clerk_id,
                "outcome": "duplicate",
                "status": event.status,
            },
        )
        return _response(event.status, duplicate=True, outcome=event.outcome)
    if processing.is_deferred():
        queued = _enqueue(event)
        if queued is not None:
            return queued
    try:
        event = events.process_event(event)
    except sync.PermanentFailure as exc:
        reason = (
            "the Django user could not be saved (a unique value held by a local "
            "user outside Clerk, or a required field without a value); the stored "
            "event's last_error says which"
            if isinstance(exc, sync.SyncConflict)
            else str(exc)
        )
        response = _response("failed", 409, reason=reason)
        # A permanent failure: stop Svix's 27-hour retry schedule. Replaying the
        # message from the Clerk dashboard after the conflict is fixed still works.
        response["webhook-delivery"] = "abort-message"
        return response
    except Exception as exc:
        # The traceback is in the event's last_error; exception texts can carry
        # user data (an email in a database error), so the log names the type only.
        logger.error(
            "Clerk event %s failed (%s); answered 500 so Svix retries it",
            svix_id,
            type(exc).__name__,
            extra={
                "svix_id": svix_id,
                "event_type": event.event_type,
                "clerk_id": event.clerk_id,
                "outcome": "failed",
                "http_status": 500,
                "error": type(exc).__name__,
            },
        )
        return _response("failed", 500)
    return _response(event.status, outcome=event.outcome)
