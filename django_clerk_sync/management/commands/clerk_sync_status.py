"""``manage.py clerk_sync_status``: the health of the Clerk sync, for people and probes."""

import json

from django.core.management.base import CommandError
from django.db.models import Count, Max, Min, Q

from ...models import ClerkUserLink, WebhookEvent
from ..options import DatabaseCommand


class Command(DatabaseCommand):
    help = (
        "Linked users, tombstones, events by status, the last event received and the "
        "oldest unresolved failure. Exits non-zero while failed events are pending, "
        "so a monitoring probe can run it."
    )

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print JSON")

    def handle(self, *args, **options):
        links = ClerkUserLink.objects.aggregate(
            linked=Count("pk", filter=Q(deleted_at__isnull=True)),
            tombstones=Count("pk", filter=Q(deleted_at__isnull=False)),
        )
        by_status = dict(
            WebhookEvent.objects.values_list("status").annotate(n=Count("pk"))
        )
        events = {
            status: by_status.get(status, 0) for status in WebhookEvent.Status.values
        }
        last = WebhookEvent.objects.aggregate(at=Max("received_at"))["at"]
        oldest_failure = WebhookEvent.objects.filter(
            status=WebhookEvent.Status.FAILED
        ).aggregate(at=Min("received_at"))["at"]
        status = {
            "linked_users": links["linked"],
            "tombstones": links["tombstones"],
            "events": events,
            "last_event_received_at": last.isoformat() if last else None,
            "oldest_failed_event_received_at": (
                oldest_failure.isoformat() if oldest_failure else None
            ),
        }
        if options["json"]:
            self.stdout.write(json.dumps(status, indent=2))
        elif options["verbosity"] >= 1:
            self.stdout.write(
                "\n".join(
                    [
                        f"linked users:  {status['linked_users']:,}",
                        f"tombstones:    {status['tombstones']:,}",
                        "events:        "
                        + ", ".join(f"{k} {v:,}" for k, v in events.items()),
                        f"last event:    {status['last_event_received_at'] or '-'}",
                        "oldest failure: "
                        + (status["oldest_failed_event_received_at"] or "-"),
                    ]
                )
            )
        if events[WebhookEvent.Status.FAILED]:
            raise CommandError(
                f"{events[WebhookEvent.Status.FAILED]} failed event(s) pending: see "
                "manage.py clerk_replay_events --failed"
            )
