from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ClerkSyncConfig(AppConfig):
    name = "django_clerk_sync"
    verbose_name = _("Clerk sync")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from . import checks  # noqa: F401  (registers the system checks)
