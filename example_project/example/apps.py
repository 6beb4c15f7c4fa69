from django.apps import AppConfig


class ExampleConfig(AppConfig):
    name = "example"
    verbose_name = "django-clerk-sync example"

    def ready(self):
        from . import receivers  # noqa: F401  (connects the signal receivers)
