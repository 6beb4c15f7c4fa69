"""``manage.py clerk_prune_events``: delete old events from the event log."""

import re
from datetime import timedelta

from django.core.management.base import CommandError
from django.utils import timezone

from ...models import WebhookEvent
from ..options import DatabaseCommand

UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def _age(text):
    match = re.fullmatch(r"\s*(\d+)\s*([dhm])\s*", text or "")
    if not match:
        raise CommandError(
            f"--older-than {text!r}: give a number and a unit, e.g. 30d, 12h or 90m"
        )
    if len(match.group(1)) > 18:  # int() refuses past 4,300 digits anyway
        raise CommandError(f"--older-than {text[:20]!r}... is too long ago to compute")
    try:
        return timedelta(**{UNITS[match.group(2)]: int(match.group(1))})
    except OverflowError:
        raise CommandError(f"--older-than {text!r} is too long ago to compute")


class Command(DatabaseCommand):
    help = (
        "Delete processed and ignored webhook events received longer ago than "
        "--older-than. Failed and unprocessed events are kept (they may still need "
        "a replay) unless --include-failed is given."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than",
            required=True,
            metavar="AGE",
            help="e.g. 30d, 12h, 90m: events received before now minus AGE",
        )
        parser.add_argument(
            "--include-failed",
            action="store_true",
            help="also delete failed and never-processed events that old",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="count them; delete nothing"
        )

    def handle(self, *args, **options):
        try:
            cutoff = timezone.now() - _age(options["older_than"])
        except OverflowError:
            raise CommandError(
                f"--older-than {options['older_than']!r} is before year 1"
            )
        events = WebhookEvent.objects.filter(received_at__lt=cutoff)
        if not options["include_failed"]:
            events = events.filter(
                status__in=[WebhookEvent.Status.PROCESSED, WebhookEvent.Status.IGNORED]
            )
        if options["dry_run"]:
            count = events.count()
            verb = "would be deleted"
        else:
            count, _ = events.delete()
            verb = "deleted"
        if options["verbosity"] >= 1:
            self.stdout.write(
                f"{count} event(s) received before {cutoff:%Y-%m-%d %H:%M} UTC {verb}"
            )
