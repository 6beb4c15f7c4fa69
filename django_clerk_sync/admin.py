"""Read-only admin views of the event log and the Clerk links.

Both tables are written by the sync path only; editing them by hand would break
the ordering and tombstone guarantees, so the admin shows and never writes.
"""

import json

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.db.models import Q
from django.utils.html import format_html
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from .events import process_event
from .models import ClerkUserLink, WebhookEvent


class ReadOnlyMixin:
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyAdmin(ReadOnlyMixin, admin.ModelAdmin):
    #: Columns the search box matches exactly, case included.
    exact_search_fields: tuple[str, ...] = ()

    def get_search_results(self, request, queryset, search_term):
        # Svix and Clerk ids are case-sensitive. The admin's "=field" search is
        # case-insensitive, which PostgreSQL cannot answer from the columns' indexes:
        # it would read the whole event log for every search.
        term = search_term.strip()
        if not term:
            return queryset, False
        match = Q()
        for field in self.exact_search_fields:
            match |= Q(**{field: term})
        return queryset.filter(match), False


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
    search_fields = exact_search_fields = ("svix_id", "clerk_id")
    date_hierarchy = "received_at"
    exclude = ("body",)
    readonly_fields = ("payload",)

    actions = ["reprocess"]

    @admin.action(description=_("Reprocess selected events"), permissions=["reprocess"])
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
        message = gettext("%(done)d event(s) processed, %(failed)d failed again.") % {
            "done": done,
            "failed": failed,
        }
        self.message_user(request, message, level)

    def has_reprocess_permission(self, request):
        # The rows stay read-only; re-running the sync is what "change" grants.
        return request.user.has_perm("django_clerk_sync.change_webhookevent")

    @admin.display(description=_("Payload"))
    def payload(self, obj):
        text = obj.body_text
        try:
            parsed = json.loads(text)
        except (ValueError, RecursionError):
            parsed = None  # not JSON, or nested too deep for the parser
        # Indenting grows with the square of the depth (50 MB for a signed body 5,000
        # levels deep, which Python 3.13's parser accepts): deep bodies are shown as sent.
        if parsed is not None and _nesting(parsed) <= MAX_PRETTY_DEPTH:
            pretty = json.dumps(parsed, indent=2, ensure_ascii=False)
            # Many small values nested a few dozen levels indent to tens of MB.
            if len(pretty) <= max(MAX_PRETTY_SIZE, 4 * len(text)):
                text = pretty
            # A lone surrogate ("\ud800", which a user can put in unsafe_metadata)
            # cannot be written as UTF-8: show it escaped, as JSON writes it.
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
        return format_html("<pre style='white-space: pre-wrap'>{}</pre>", text)


#: Clerk's payloads nest about six levels; metadata a few more.
MAX_PRETTY_DEPTH = 64
#: Characters of indented payload shown before the body is shown as sent instead.
MAX_PRETTY_SIZE = 1_000_000


def _nesting(value):
    """How deeply ``value`` nests (without recursion, whatever its depth)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            value = value.values()
        elif not isinstance(value, list):
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_PRETTY_DEPTH:
            return deepest
        stack.extend((item, depth + 1) for item in value)
    return deepest


class ClerkUserLinkInline(ReadOnlyMixin, admin.StackedInline):
    """The user's Clerk link, read-only, on the user's own admin page."""

    model = ClerkUserLink
    fk_name = "user"
    fields = ("clerk_id", "clerk_updated_at", "deleted_at", "synced_at")
    readonly_fields = fields
    extra = 0  # a one-to-one inline would otherwise show an empty form
    show_change_link = True


def _show_links_on_user_admin(site):
    """Add :class:`ClerkUserLinkInline` to the site's user admin, if there is one."""
    user_admin = site._registry.get(get_user_model())
    if user_admin is None:
        return
    inlines = list(user_admin.inlines)
    if not any(issubclass(inline, ClerkUserLinkInline) for inline in inlines):
        user_admin.inlines = [*inlines, ClerkUserLinkInline]


@admin.register(ClerkUserLink)
class ClerkUserLinkAdmin(ReadOnlyAdmin):
    list_display = ("clerk_id", "user", "clerk_updated_at", "deleted_at", "synced_at")
    list_filter = (("deleted_at", admin.EmptyFieldListFilter),)
    search_fields = exact_search_fields = ("clerk_id",)
    raw_id_fields = ("user",)

    def get_urls(self):
        # The site builds its URLs once every admin module is loaded, whatever the
        # INSTALLED_APPS order, so a custom user model's admin is registered by now.
        _show_links_on_user_admin(self.admin_site)
        return super().get_urls()
