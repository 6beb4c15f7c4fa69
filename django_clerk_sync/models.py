from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class ClerkUserLink(models.Model):
    """Links one Clerk user id to one Django user, and remembers what was applied.

    The row outlives the Django user: after a ``user.deleted`` it stays as a
    tombstone (``deleted_at`` set) so that late or replayed events for that Clerk
    id can never bring the user back.
    """

    clerk_id = models.CharField(_("Clerk user id"), max_length=255, unique=True)
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="clerk_link",
    )
    # Clerk's ``updated_at`` (Unix ms) of the newest payload applied: the ordering guard.
    clerk_updated_at = models.BigIntegerField(null=True, blank=True)
    deleted_at = models.DateTimeField(
        null=True, blank=True, help_text=_("Set when Clerk reported the user deleted.")
    )
    created_at = models.DateTimeField(auto_now_add=True)
    synced_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("Clerk user link")

    def __str__(self) -> str:
        return self.clerk_id

    @property
    def is_tombstone(self) -> bool:
        return self.deleted_at is not None


class WebhookEvent(models.Model):
    """One verified webhook delivery, stored before it is processed.

    Rows are only ever written for deliveries whose Svix signature verified, so
    processing (or re-processing) a stored row trusts it without re-verifying —
    Svix's 5-minute timestamp tolerance makes re-verification impossible later.
    """

    class Status(models.TextChoices):
        RECEIVED = "received", _("Received")
        PROCESSED = "processed", _("Processed")
        IGNORED = "ignored", _("Ignored")
        FAILED = "failed", _("Failed")

    svix_id = models.CharField(_("svix-id"), max_length=255, unique=True)
    event_type = models.CharField(max_length=100, blank=True, db_index=True)
    clerk_id = models.CharField(
        _("Clerk object id"), max_length=255, blank=True, db_index=True
    )
    body = models.BinaryField(help_text=_("The request body exactly as received."))
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.RECEIVED, db_index=True
    )
    outcome = models.CharField(
        max_length=255,
        blank=True,
        help_text=_(
            "What processing did (created, updated, unchanged, stale, "
            "tombstoned, deleted, already deleted), why the event was ignored, or why "
            "it failed (permanent: ... / error: ...)."
        ),
    )
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    # The change was committed but a signal receiver raised: the next attempt
    # re-sends the signal instead of applying the change again.
    signal_pending = models.BooleanField(default=False)
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("Clerk webhook event")
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"{self.event_type or '?'} {self.svix_id}"

    @property
    def body_text(self) -> str:
        return bytes(self.body).decode("utf-8", errors="replace")
