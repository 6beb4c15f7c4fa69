from django.apps import AppConfig


class ClerkSyncConfig(AppConfig):
    name = "django_clerk_sync"
    verbose_name = "Clerk sync"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from . import checks  # noqa: F401  (registers the system checks)
