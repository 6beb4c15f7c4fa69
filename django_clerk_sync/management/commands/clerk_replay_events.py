"""``manage.py clerk_replay_events``: process stored, verified webhook events again."""

from datetime import datetime, timezone

from django.core.management.base import CommandError

from ...events import process_event
from ...models import WebhookEvent
from ...sync import PermanentFailure
from ..options import PARTIAL_FAILURE, DatabaseCommand, milliseconds, verbosity_logging


class Command(DatabaseCommand):
    help = (
        "Process stored webhook events again (they were verified when they arrived). "
        "Idempotent: processed and ignored events are left as they are unless "
        "--ids names them. Exit status 2 if an event fails again, 1 if the "
        "command could not run."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--failed", action="store_true", help="events whose processing failed"
        )
        parser.add_argument(
            "--received",
            action="store_true",
            help="events stored but never processed (a worker died mid-request)",
        )
        parser.add_argument(
            "--ids", nargs="+", metavar="SVIX_ID", help="these events (by svix-id)"
        )
        parser.add_argument(
            "--type", metavar="TYPE", help="only events of this type, e.g. user.updated"
        )
        parser.add_argument(
            "--since",
            metavar="TIME",
            help="only events received after TIME (Unix ms or ISO 8601)",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="list the events; process nothing"
        )

    def handle(self, *args, **options):
        if not (options["failed"] or options["received"] or options["ids"]):
            raise CommandError(
                "say which events: --failed, --received and/or --ids ..."
            )
        statuses = []
        if options["failed"]:
            statuses.append(WebhookEvent.Status.FAILED)
        if options["received"]:
            statuses.append(WebhookEvent.Status.RECEIVED)
        events = WebhookEvent.objects.order_by("received_at", "pk")
        if options["ids"]:
            events = events.filter(svix_id__in=options["ids"])
            missing = set(options["ids"]) - set(
                events.values_list("svix_id", flat=True)
            )
            if missing:
                raise CommandError(
                    f"no stored event with svix-id {', '.join(sorted(missing))}"
                )
        else:
            events = events.filter(status__in=statuses)
        if options["type"]:
            events = events.filter(event_type=options["type"])
        if options["since"]:
            since = milliseconds(options["since"], "--since") / 1000
            try:
                since = datetime.fromtimestamp(since, tz=timezone.utc)
            except (OverflowError, OSError, ValueError):
                raise CommandError(f"--since {options['since']!r} is out of range")
            events = events.filter(received_at__gt=since)

        verbosity = options["verbosity"]
        with verbosity_logging(self, verbosity):
            done, failed = self._replay(list(events), options["dry_run"], verbosity)
        if verbosity >= 1:
            if options["dry_run"]:
                self.stdout.write(f"{done} event(s) would be processed")
            else:
                self.stdout.write(f"{done} event(s) processed, {failed} failed again")
        if failed:
            raise CommandError(
                f"{failed} event(s) failed again; see the lines above",
                returncode=PARTIAL_FAILURE,
            )

    def _replay(self, events, dry_run, verbosity):
        """Process ``events`` (a list, not iterator(): processing commits, which would
        reset an open cursor); ``(done, failed)``. At ``-v 0`` only failures print."""
        done = failed = 0
        for event in events:
            if event.status in (event.Status.PROCESSED, event.Status.IGNORED):
                # Named by --ids: processing is idempotent, so say so and move on.
                if verbosity >= 1:
                    self.stdout.write(
                        f"{event.svix_id}: already {event.status} ({event.outcome})"
                    )
                continue
            if dry_run:
                if verbosity >= 1:
                    self.stdout.write(
                        f"would process {event.svix_id} "
                        f"({event.event_type or '?'}, {event.status})"
                    )
                done += 1
                continue
            try:
                event = process_event(event)
            except PermanentFailure:
                event.refresh_from_db()
                failed += 1
                self.stderr.write(f"{event.svix_id}: failed again: {event.outcome}")
                continue
            except Exception as exc:
                failed += 1
                self.stderr.write(
                    f"{event.svix_id}: failed again ({type(exc).__name__})"
                )
                continue
            done += 1
            if verbosity >= 1:
                self.stdout.write(
                    self.style.SUCCESS(
                        f"{event.svix_id}: {event.status} ({event.outcome})"
                    )
                )
        return done, failed
