"""The Clerk link on a custom user model's admin page (``custom_user.EmailUser``).

Run in its own session, with its own settings:
``python -m pytest --ds=tests.custom_user.settings tests/custom_user``.
"""

from django.urls import reverse

from django_clerk_sync import get_user
from django_clerk_sync.models import ClerkUserLink

from ..conftest import load_event
from .models import EmailUser

EXAMPLE_ID = "user_29w83sxmDNGwOuEthce5gg56FcC"


def test_the_projects_user_admin_shows_the_clerk_link(deliver, client):
    deliver(load_event("user_created"))
    user = get_user(EXAMPLE_ID)
    link = ClerkUserLink.objects.get(clerk_id=EXAMPLE_ID)
    client.force_login(EmailUser.objects.create_superuser("admin@example.net", "pw"))

    page = client.get(reverse("admin:custom_user_emailuser_change", args=[user.pk]))

    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="clerk_link-group"' in html
    assert f'<div class="readonly">{EXAMPLE_ID}</div>' in html
    link_page = reverse("admin:django_clerk_sync_clerkuserlink_change", args=[link.pk])
    assert link_page in html
