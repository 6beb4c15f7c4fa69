from django.urls import path, re_path

from .webhooks import clerk_webhook

app_name = "django_clerk_sync"

urlpatterns = [
    path("clerk/", clerk_webhook, name="webhook"),
    # Also served without the slash: Svix treats APPEND_SLASH's redirect as a
    # failed delivery.
    re_path(r"^clerk$", clerk_webhook),
]
