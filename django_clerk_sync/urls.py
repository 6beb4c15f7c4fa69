from django.urls import re_path

from .webhooks import clerk_webhook

app_name = "django_clerk_sync"

urlpatterns = [
    # Served with and without the trailing slash: Svix treats APPEND_SLASH's
    # redirect as a failed delivery.
    re_path(r"^clerk/?$", clerk_webhook, name="webhook"),
]
