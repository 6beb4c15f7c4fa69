"""Test helpers: Clerk-shaped payloads, Svix-signed deliveries, session tokens from a
test key pair, and the Clerk simulator with the settings pointed at it.

Used by this project's own tests, by ``manage.py clerk_send_webhook`` and by the
demo; made for your project's tests too (docs/testing.md lists every helper)::

    from django_clerk_sync.testing import TestKeys, auth_header, clerk_user, event
    from django_clerk_sync.testing import post_webhook

    response = post_webhook(client, event("user.created", clerk_user("user_123")))

    keys = TestKeys()
    with keys.settings():
        client.get("/", headers=auth_header(keys.token("user_123")))

The pytest plugin (``django_clerk_sync.pytest_plugin``, registered on install)
wraps them in fixtures. Import from here, not from the submodules.

Nothing heavy is imported at module level: the simulator and the management
commands import this package outside any test.
"""

from .keys import TEST_ORIGIN, TestKeys, auth_header
from .payloads import clerk_user, deleted_user, event, new_svix_id
from .simulator import clerk_simulator, simulator_settings
from .webhooks import TEST_WEBHOOK_SECRET, deliver, post_webhook, signed_headers

__all__ = [
    "TEST_ORIGIN",
    "TEST_WEBHOOK_SECRET",
    "TestKeys",
    "auth_header",
    "clerk_simulator",
    "clerk_user",
    "deleted_user",
    "deliver",
    "event",
    "new_svix_id",
    "post_webhook",
    "signed_headers",
    "simulator_settings",
]
