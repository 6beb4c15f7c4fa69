"""``manage.py clerk_sweep_events``: enqueue stuck events again (deferred processing)."""

import math

from django.core.management.base import CommandError

from ... import processing
from ...conf import MAX_SWEEP_AFTER, clerk_settings
from ..options import PARTIAL_FAILURE, DatabaseCommand, verbosity_logging


def _seconds(text):
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or not 0 <= value <= MAX_SWEEP_AFTER:
        raise CommandError(
            f"--older-than {text!r}: give a number of seconds from 0 to "
            f"{MAX_SWEEP_AFTER} (ten years), e.g. 600"
        )
    return value


def _limit(text):
    if not (text.isascii() and text.isdigit()) or int(text[:18]) < 1:
        raise CommandError(f"--limit {text!r}: give a whole number, 1 or more")
    return int(text[:18])


class Command(DatabaseCommand):
    help = (
        "Enqueue again the webhook events whose task was lost (still 'received') or "
        "that failed with a transient error (below CLERK_SYNC_TASK_MAX_ATTEMPTS), "
        "received longer ago than --older-than seconds (default "
        "CLERK_SYNC_SWEEP_AFTER). Safe to run often: enqueueing an event twice is "
        "harmless. Needs CLERK_SYNC_PROCESSING set to a task engine."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than",
            metavar="SECONDS",
            help="only events received more than SECONDS ago (default "
            "CLERK_SYNC_SWEEP_AFTER, 600)",
        )
        parser.add_argument(
            "--limit", metavar="N", help="enqueue at most N events, oldest first"
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="list the events; enqueue nothing"
        )

    def handle(self, *args, **options):
        if not processing.is_deferred():
            raise CommandError(
                'CLERK_SYNC_PROCESSING is "inline" (or unset): events are processed '
                "in the webhook request, so there is no queue to sweep them into; "
                "use clerk_replay_events --received to process stuck events here"
            )
        problem = processing.engine_problem()
        if problem:
            raise CommandError(
                f'CLERK_SYNC_PROCESSING is "{processing.mode()}" but {problem}'
            )
        older_than = options["older_than"]
        older_than = (
            clerk_settings.SWEEP_AFTER if older_than is None else _seconds(older_than)
        )
        limit = None if options["limit"] is None else _limit(str(options["limit"]))
        verbosity = options["verbosity"]
        with verbosity_logging(self, verbosity):
            result = processing.sweep(
                older_than, limit=limit, dry_run=options["dry_run"]
            )
        engine = processing.mode()
        if options["dry_run"]:
            if verbosity >= 2:
                for svix_id in result.svix_ids:
                    self.stdout.write(f"would enqueue {svix_id}")
            if verbosity >= 1:
                self.stdout.write(
                    f"{result.found} stuck event(s) older than {older_than:g} s "
                    f"would be enqueued ({engine})"
                )
            return
        if result.failed:
            raise CommandError(
                f"{result.enqueued} of {result.found} stuck event(s) enqueued, then "
                f"the {engine} queue refused one (see the log); it is unavailable, "
                "the events stay stored: run the sweep again once it is back",
                # Some were enqueued: a partial run, told apart from one that did nothing.
                returncode=PARTIAL_FAILURE if result.enqueued else 1,
            )
        if verbosity >= 1:
            self.stdout.write(
                f"{result.enqueued} stuck event(s) older than {older_than:g} s "
                f"enqueued ({engine})"
            )
