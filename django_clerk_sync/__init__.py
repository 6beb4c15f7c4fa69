"""Keep a Django project's users in step with Clerk."""

__version__ = "0.1.0.dev0"


def get_user(clerk_id):
    """Return the Django user linked to ``clerk_id``, or ``None``.

    ``None`` when the Clerk id was never synced, was deleted in Clerk
    (tombstoned), or its Django user was removed locally.
    """
    from .sync import get_user as _get_user

    return _get_user(clerk_id)
