"""The admin's and the models' user-facing strings are translatable (lazy), and the
admin renders under another active language."""

import pytest
from django.apps import apps
from django.urls import reverse
from django.utils import translation
from django.utils.functional import Promise

from django_clerk_sync.admin import WebhookEventAdmin
from django_clerk_sync.models import ClerkUserLink, WebhookEvent

from .conftest import load_event


def is_lazy(value):
    return isinstance(value, Promise)


def test_model_and_app_names_are_lazy():
    assert is_lazy(apps.get_app_config("django_clerk_sync").verbose_name)
    for model in (ClerkUserLink, WebhookEvent):
        assert is_lazy(model._meta.verbose_name)
    assert is_lazy(ClerkUserLink._meta.get_field("clerk_id").verbose_name)
    assert is_lazy(ClerkUserLink._meta.get_field("deleted_at").help_text)
    for name in ("svix_id", "clerk_id"):
        assert is_lazy(WebhookEvent._meta.get_field(name).verbose_name)
    for name in ("body", "outcome"):
        assert is_lazy(WebhookEvent._meta.get_field(name).help_text)
    assert all(is_lazy(label) for _, label in WebhookEvent.Status.choices)


def test_admin_action_and_column_labels_are_lazy():
    assert is_lazy(WebhookEventAdmin.reprocess.short_description)
    assert is_lazy(WebhookEventAdmin.payload.short_description)


@pytest.mark.parametrize("language", ["de", "fr"])
def test_the_admin_renders_in_another_language(
    deliver, admin_client, language, settings
):
    settings.LANGUAGE_CODE = language
    deliver(load_event("user_created"), svix_id="msg_2i18n")
    event = WebhookEvent.objects.get(svix_id="msg_2i18n")

    with translation.override(language):
        pages = [
            reverse("admin:index"),
            reverse("admin:django_clerk_sync_webhookevent_changelist"),
            reverse("admin:django_clerk_sync_webhookevent_changelist")
            + "?status__exact=processed",
            reverse("admin:django_clerk_sync_webhookevent_change", args=[event.pk]),
            reverse("admin:django_clerk_sync_clerkuserlink_changelist"),
        ]
        for page in pages:
            response = admin_client.get(page, HTTP_ACCEPT_LANGUAGE=language)
            assert response.status_code == 200, page
            assert f'lang="{language}"' in response.content.decode()
        response = admin_client.post(
            reverse("admin:django_clerk_sync_webhookevent_changelist"),
            {"action": "reprocess", "_selected_action": [event.pk]},
            follow=True,
        )
    assert response.status_code == 200
    assert "0 event(s) processed, 0 failed again." in response.content.decode()
