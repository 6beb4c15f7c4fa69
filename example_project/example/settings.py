"""Settings for the example project: SQLite, DEBUG, no set-up needed.

Not for production: the secret key and the webhook secret below are public.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "django-insecure-example-project-only"
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

# The endpoint's Signing Secret from the Clerk dashboard (Webhooks -> your endpoint).
# The default is a made-up DEMO secret, so `manage.py check`, `runserver` and
# `clerk_send_webhook` work out of the box; real Clerk deliveries need the real one:
#   CLERK_WEBHOOK_SECRET=whsec_... python manage.py runserver
DEMO_WEBHOOK_SECRET = "whsec_ZGphbmdvLWNsZXJrLXN5bmMtZGVtby1zZWNyZXQtMzI="  # DEMO ONLY
CLERK_WEBHOOK_SECRET = os.environ.get("CLERK_WEBHOOK_SECRET") or DEMO_WEBHOOK_SECRET

# What a user.deleted does to the Django user: "deactivate" (the default) or "delete".
CLERK_SYNC_ON_DELETE = "deactivate"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_clerk_sync",
    "example",  # example/receivers.py: clerk_user_synced / clerk_user_deleted
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "example.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        # EXAMPLE_SQLITE_PATH lets the test suite run the demo on a throw-away file.
        "NAME": os.environ.get("EXAMPLE_SQLITE_PATH") or BASE_DIR / "db.sqlite3",
    }
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "static/"

# django_clerk_sync logs every delivery it accepts, skips or rejects (Clerk ids,
# never email addresses); show those and the example receivers on the console.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "django_clerk_sync": {"handlers": ["console"], "level": "INFO"},
        "example": {"handlers": ["console"], "level": "INFO"},
    },
}
