"""React to Clerk changes: the place for a welcome email, a CRM update, ...

Receivers run after the change is committed. If one raises, the change stays and
the webhook answers 500, so Svix retries and the signal is sent again: keep
receivers idempotent. Log Clerk ids, never email addresses.
"""

import logging

from django.dispatch import receiver

from django_clerk_sync.signals import clerk_user_deleted, clerk_user_synced

logger = logging.getLogger("example.receivers")


@receiver(clerk_user_synced)
def welcome_new_users(sender, user, clerk_user, created, source, **kwargs):
    if created:
        logger.info(
            "Welcome, Clerk user %s (Django user #%s, from %s)",
            clerk_user["id"],
            user.pk,
            source,
        )


@receiver(clerk_user_deleted)
def say_goodbye(sender, user, clerk_id, source, **kwargs):
    if user is None:
        logger.info("Clerk user %s deleted; no Django user was linked", clerk_id)
    else:
        logger.info(
            "Goodbye, Clerk user %s (Django user #%s, is_active=%s)",
            clerk_id,
            user.pk,
            user.is_active,
        )
