"""Option parsing shared by the management commands."""

import logging
from contextlib import contextmanager
from datetime import datetime, timezone

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, OperationalError, ProgrammingError


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


#: The exit status of a command that ran to the end but some of whose items failed
#: (users in a backfill, events in a replay); 1 is a command that could not do its job.
PARTIAL_FAILURE = 2


class _CommandLogHandler(logging.Handler):
    """The app's log records, one line each, on a command's stderr (styled by it, so
    ``--no-color`` holds)."""

    def __init__(self, command):
        super().__init__()
        self.command = command
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record):
        style = self.command.style
        if record.levelno >= logging.ERROR:
            style_func = style.ERROR
        elif record.levelno >= logging.WARNING:
            style_func = style.WARNING
        else:
            style_func = str  # not the stderr default, red
        try:
            self.command.stderr.write(self.format(record), style_func=style_func)
        except Exception:  # a broken pipe must not fail the command
            self.handleError(record)


@contextmanager
def verbosity_logging(command, verbosity):
    """Show the app's log records on the command's stderr: at ``-v 2`` its ``INFO``
    ones (one line per user synced, event processed, request retried), at ``-v 3``
    its ``DEBUG`` ones too. Below 2 the project's ``LOGGING`` alone decides."""
    if verbosity < 2:
        yield
        return
    logger = logging.getLogger("django_clerk_sync")
    handler = _CommandLogHandler(command)
    handler.setLevel(logging.INFO if verbosity == 2 else logging.DEBUG)
    level = logger.level
    if logger.getEffectiveLevel() > handler.level:
        logger.setLevel(handler.level)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


class DatabaseCommand(BaseCommand):
    """A command that reads or writes the app's tables: a database that is down or
    not migrated is a one-line ``CommandError``, not a traceback (``clerk_sync_status``
    is what an operator runs in an outage)."""

    def execute(self, *args, **options):
        try:
            return super().execute(*args, **options)
        except DatabaseError as exc:
            # Connection and missing-table errors say what to fix; others (a unique
            # violation) can quote user data, so only their type is shown.
            detail = type(exc).__name__
            if isinstance(exc, (OperationalError, ProgrammingError)):
                first_line = (str(exc).strip().splitlines() or [""])[0][:200]
                detail += f": {first_line}" if first_line else ""
            raise CommandError(
                f"the database could not be used ({detail}); check DATABASES and "
                "that manage.py migrate has run"
            )
