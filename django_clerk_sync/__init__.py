"""Keep a Django project's users in step with Clerk."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # django-stubs' name for the AUTH_USER_MODEL class: its mypy plugin resolves it
    # to the project's user model (AbstractBaseUser without the plugin).
    from django.contrib.auth.models import _User

__version__ = "0.1.0.dev0"


def get_user(clerk_id: str) -> _User | None:
    """Return the Django user linked to ``clerk_id``, or ``None``.

    ``None`` when the Clerk id was never synced, was deleted in Clerk
    (tombstoned), or its Django user was removed locally.
    """
    from .sync import get_user as _get_user

    return _get_user(clerk_id)
