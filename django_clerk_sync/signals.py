"""Signals sent by the sync path, only after the transaction that made the change commits.

``clerk_user_synced``: a Django user was created or changed from Clerk data.
    sender      the user model class
    user        the Django user, as saved
    clerk_user  the Clerk user object (dict) that was applied
    created     True when the Django user was created by this sync
    source      where the data came from: "webhook", "backfill" (clerk_backfill) or
                "middleware" (first sight of a session token)

``clerk_user_deleted``: Clerk reported a user deleted and the tombstone was written.
    sender      the user model class
    user        the Django user after the deletion policy ran (inactive under
                "deactivate"; already removed from the database under "delete";
                None when no Django user was linked)
    clerk_id    the Clerk user id
    source      "webhook", or "backfill" (clerk_backfill --deactivate-missing)

Each effective change is announced once: a duplicate delivery sends nothing. If a
receiver raises, the change stays, the webhook event is marked failed and Svix's
retry sends the signal again (to every receiver), so receivers should be idempotent.
"""

from django.dispatch import Signal

clerk_user_synced = Signal()
clerk_user_deleted = Signal()
