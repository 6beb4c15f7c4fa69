"""Read-only admin views of the event log and the Clerk links.

Both tables are written by the sync path only; editing them by hand would break
the ordering and tombstone guarantees, so the admin shows and never writes.
"""

import json

from django.contrib import admin, messages
from django.utils.html import format_html

from .events import process_event
from .models import ClerkUserLink, WebhookEvent


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnlyAdmin):
    list_display = (
        "svix_id",
        "event_type",
        "clerk_id",
        "status",
        "outcome",
        "attempts",
        "received_at",
    )
    list_filter = ("status", "event_type")
    search_fields = ("=svix_id", "=clerk_id")
    date_hierarchy = "received_at"
    exclude = ("body",)
    readonly_fields = ("payload",)

    actions = ["reprocess"]

    @admin.action(description="Reprocess selected events", permissions=["reprocess"])
    def reprocess(self, request, queryset):
        # Stored events were verified on arrival; processing is idempotent, so
        # processed and ignored ones are left as they are.
        done, failed = 0, 0
        for event in queryset.exclude(status__in=["processed", "ignored"]):
            try:
                process_event(event)
                done += 1
            except Exception:
                failed += 1
        level = messages.ERROR if failed else messages.SUCCESS
        self.message_user(
            request, f"{done} event(s) processed, {failed} failed again.", level
        )

    def has_reprocess_permission(self, request):
        # The rows stay read-only; re-running the sync is what "change" grants.
        return request.user.has_perm("django_clerk_sync.change_webhookevent")

    @admin.display(description="Payload")
    def payload(self, obj):
        text = obj.body_text
        try:
            text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        except ValueError:
            pass
        return format_html("<pre style='white-space: pre-wrap'>{}</pre>", text)


@admin.register(ClerkUserLink)
class ClerkUserLinkAdmin(ReadOnlyAdmin):
    list_display = ("clerk_id", "user", "clerk_updated_at", "deleted_at", "synced_at")
    list_filter = (("deleted_at", admin.EmptyFieldListFilter),)
    search_fields = ("=clerk_id",)
    raw_id_fields = ("user",)
