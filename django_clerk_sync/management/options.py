"""Option parsing shared by the management commands."""

from datetime import datetime, timezone

from django.core.management.base import CommandError


def milliseconds(value, option):
    """Unix milliseconds from ``1654012591514``, ``2024-05-01`` or an ISO 8601 time
    (UTC unless it says otherwise); ``CommandError`` naming ``option`` otherwise."""
    if isinstance(value, int):  # from call_command
        return value
    text = str(value).strip()
    if text.isascii() and text.isdigit():
        if len(text) > 18:  # past any real time, and past what int() reads at 4,300
            raise CommandError(
                f"bad {option} {text[:20]!r}...: too large for Unix milliseconds"
            )
        return int(text)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CommandError(
            f"bad {option} {text!r}: give Unix milliseconds (Clerk's unit) or an ISO 8601 "
            "date or time such as 2024-05-01 or 2024-05-01T12:00:00Z"
        )
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return int(when.timestamp() * 1000)
