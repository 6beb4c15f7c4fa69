"""Read-only admin views of the event log and the Clerk links.

Both tables are written by the sync path only; editing them by hand would break
the ordering and tombstone guarantees, so the admin shows and never writes.
"""

import json

from django.contrib import admin
from django.utils.html import format_html

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
