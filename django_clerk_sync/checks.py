"""System checks: misconfiguration is reported by ``manage.py check`` with the fix.

Ids are stable; docs/settings.md lists them.
"""

import base64
import binascii
import difflib
import functools
import math
import re
from pathlib import Path

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

from .conf import DELETE_POLICIES, clerk_settings
from .field_map import resolve_source

SECRET_HINT = (
    "Copy the endpoint's Signing Secret (whsec_...) from the Clerk dashboard: "
    "Webhooks -> your endpoint -> Signing Secret."
)


def secret_problem(secret):
    if not isinstance(secret, str):
        return f"is not a string ({type(secret).__name__})"
    if not secret:
        return "is empty"
    if secret[0] in "\"'" or secret[-1] in "\"'":
        return "is wrapped in quotes (remove them from the environment file)"
    if secret.startswith("v1,"):
        return "looks like a signature (v1,...), not the signing secret"
    if secret != secret.strip() or any(ch.isspace() for ch in secret):
        return "contains whitespace"
    raw = secret[len("whsec_") :] if secret.startswith("whsec_") else secret
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        if not secret.startswith("whsec_"):
            return "is not a signing secret (they start with whsec_)"
        return "is not valid base64 after its whsec_ prefix"
    if not 24 <= len(key) <= 64:
        return f"decodes to {len(key)} bytes; Svix secrets are 24 to 64 bytes"
    return None


@register(Tags.security)
def check_webhook_secret(app_configs=None, **kwargs):
    value = getattr(settings, "CLERK_WEBHOOK_SECRET", None)
    if value is None or value == "" or value == [] or value == ():
        return [
            Warning(
                "CLERK_WEBHOOK_SECRET is not set: the Clerk webhook endpoint answers "
                "503 to every delivery.",
                hint=SECRET_HINT,
                id="django_clerk_sync.W001",
            )
        ]
    if not isinstance(value, (str, list, tuple)):
        return [
            Error(
                "CLERK_WEBHOOK_SECRET must be a string or a list of strings.",
                hint=SECRET_HINT,
                id="django_clerk_sync.E001",
            )
        ]
    errors = []
    for position, secret in enumerate(clerk_settings.WEBHOOK_SECRETS):
        problem = secret_problem(secret)
        if problem:
            where = "" if isinstance(value, str) else f" (entry {position})"
            errors.append(
                Error(
                    f"CLERK_WEBHOOK_SECRET{where} {problem}.",
                    hint=SECRET_HINT,
                    id="django_clerk_sync.E002",
                )
            )
    return errors


def _user_model():
    from django.contrib.auth import get_user_model

    return get_user_model()


def _writable(field):
    # Many-to-many fields cannot be set by assignment, which is how sync writes.
    return not (
        field.primary_key
        or field.name == "password"
        or field.many_to_many
        or not field.editable
    )


@register(Tags.models)
def check_field_map(app_configs=None, **kwargs):
    value = getattr(settings, "CLERK_SYNC_FIELD_MAP", None)
    if value is None:
        return []
    if not isinstance(value, dict):
        return [
            Error(
                "CLERK_SYNC_FIELD_MAP must be a dict of {user field: source}.",
                hint='For example {"email": "primary_email", "first_name": "first_name"}.',
                id="django_clerk_sync.E010",
            )
        ]
    user_model = _user_model()
    label = user_model._meta.label
    # The model's own fields, many-to-many included; not reverse relations.
    fields = {
        f.name: f
        for f in user_model._meta.get_fields()
        if not (f.auto_created and not f.concrete)
    }
    writable = sorted(name for name, f in fields.items() if _writable(f))
    errors = []
    for name, source in value.items():
        field = fields.get(name)
        if field is None:
            errors.append(
                Error(
                    f"CLERK_SYNC_FIELD_MAP names {name!r}, which is not a field of "
                    f"{label}.",
                    hint=f"Use one of: {', '.join(writable)}.",
                    id="django_clerk_sync.E011",
                )
            )
            continue
        if not _writable(field):
            errors.append(
                Error(
                    f"CLERK_SYNC_FIELD_MAP may not write {label}.{name}.",
                    hint="Remove it from CLERK_SYNC_FIELD_MAP: the primary key, the "
                    "password, many-to-many and non-editable fields are not written "
                    "from Clerk.",
                    id="django_clerk_sync.E012",
                )
            )
            continue
        try:
            resolve_source(source)
        except (ImportError, TypeError, ValueError) as exc:
            errors.append(
                Error(
                    f"CLERK_SYNC_FIELD_MAP[{name!r}]: {exc}.",
                    hint="A source is a computed name (primary_email, primary_phone, "
                    "full_name, image_url), a dotted path into the Clerk user "
                    '("public_metadata.plan"), a callable, or "module.path:function".',
                    id="django_clerk_sync.E013",
                )
            )
    return errors


@register(Tags.models)
def check_on_delete(app_configs=None, **kwargs):
    policy = clerk_settings.ON_DELETE
    hint = (
        'Set CLERK_SYNC_ON_DELETE to "deactivate", "delete", a callable taking the '
        'user, or "module.path:function".'
    )
    if policy == "deactivate":
        user_model = _user_model()
        field_names = {f.name for f in user_model._meta.get_fields()}
        if "is_active" not in field_names:
            return [
                Error(
                    f'CLERK_SYNC_ON_DELETE is "deactivate" but '
                    f"{user_model._meta.label} has no is_active field.",
                    hint=hint,
                    id="django_clerk_sync.E021",
                )
            ]
        return []
    if policy in DELETE_POLICIES or callable(policy):
        return []
    if isinstance(policy, str) and ":" in policy:
        try:
            resolve_source(policy)
            return []
        except (ImportError, TypeError, ValueError) as exc:
            problem = str(exc)
    else:
        problem = f"{policy!r} is not a deletion policy"
    return [
        Error(
            f"CLERK_SYNC_ON_DELETE: {problem}.",
            hint=hint,
            id="django_clerk_sync.E020",
        )
    ]


# --- Setting names ---------------------------------------------------------------------

#: Names Clerk's own SDKs and frontends read (Clerk's "environment variables"
#: reference): a project may keep them in its settings for its templates, so they are
#: not reported as misspellings of this package's settings.
CLERK_SDK_SETTINGS = frozenset(
    {
        "CLERK_API_VERSION",
        "CLERK_DOMAIN",
        "CLERK_ENCRYPTION_KEY",
        "CLERK_IS_SATELLITE",
        "CLERK_JS_URL",
        "CLERK_JS_VERSION",
        "CLERK_MACHINE_SECRET_KEY",
        "CLERK_PROXY_URL",
        "CLERK_SIGN_IN_FALLBACK_REDIRECT_URL",
        "CLERK_SIGN_IN_FORCE_REDIRECT_URL",
        "CLERK_SIGN_IN_URL",
        "CLERK_SIGN_UP_FALLBACK_REDIRECT_URL",
        "CLERK_SIGN_UP_FORCE_REDIRECT_URL",
        "CLERK_SIGN_UP_URL",
        "CLERK_TELEMETRY_DEBUG",
        "CLERK_TELEMETRY_DISABLED",
        # Older names of the redirect variables, and the Frontend API's host.
        "CLERK_AFTER_SIGN_IN_URL",
        "CLERK_AFTER_SIGN_UP_URL",
        "CLERK_FRONTEND_API",
    }
)

#: Prefixes of families of Clerk SDK variables (``CLERK_TELEMETRY_SAMPLING_RATE``...).
CLERK_SDK_PREFIXES = ("CLERK_TELEMETRY_",)

#: ``{name: the setting this package reads instead}``: names removed or renamed in a
#: release (none so far), and names Clerk's SDKs give one of this package's settings.
RENAMED_SETTINGS = {
    # @clerk/backend's verifyWebhook() reads CLERK_WEBHOOK_SIGNING_SECRET.
    "CLERK_WEBHOOK_SIGNING_SECRET": "CLERK_WEBHOOK_SECRET",
}

_SETTING_NAME = re.compile(r"""["'`](CLERK_[A-Z][A-Z0-9_]*)["'`]""")


@functools.cache
def known_setting_names():
    """Every ``CLERK_`` setting this package reads, derived from its source: each name
    quoted in a module (``getattr(settings, "CLERK_...")``, the ``conf`` docstrings
    that open with the name), minus the two tables above. Cached: the source does not
    change while the process runs."""
    package = Path(__file__).resolve().parent
    names = set()
    for path in package.rglob("*.py"):
        if "migrations" not in path.parts:
            names.update(_SETTING_NAME.findall(path.read_text(encoding="utf-8")))
    if not names:
        # Installed without sources (compiled only, or zipped): nothing to compare
        # against, and a warning that the webhook secret "has no effect" would be false.
        return None
    return frozenset(names - CLERK_SDK_SETTINGS - set(RENAMED_SETTINGS))


@register(Tags.compatibility)
def check_setting_names(app_configs=None, **kwargs):
    known = known_setting_names()
    if known is None:
        return []
    configured = {
        name
        for name in dir(settings)
        if name.startswith("CLERK_") and not name.startswith(CLERK_SDK_PREFIXES)
    }
    messages = []
    for name in sorted(configured - known - CLERK_SDK_SETTINGS):
        instead = RENAMED_SETTINGS.get(name)
        if instead and getattr(settings, instead, None) not in (None, "", [], ()):
            continue  # both set: the other name is for Clerk's own SDK
        if instead:
            problem = f"this package reads {instead} instead"
            hint = f"Rename {name} to {instead}."
        else:
            problem = "this package reads no such setting"
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
            hint = (
                f"Did you mean {close[0]}?"
                if close
                else "docs/settings.md lists the settings this package reads."
            )
        messages.append(
            Warning(
                f"{name} is set, but {problem}, so it has no effect.",
                hint=hint + " If the setting is for something else, add "
                '"django_clerk_sync.W002" to SILENCED_SYSTEM_CHECKS.',
                id="django_clerk_sync.W002",
            )
        )
    return messages


# --- Session tokens (middleware, authentication backend, DRF) -------------------------

MIDDLEWARE_PATH = "django_clerk_sync.middleware.ClerkAuthenticationMiddleware"
BACKEND_PATH = "django_clerk_sync.backends.ClerkBackend"
DRF_PATH = "django_clerk_sync.contrib.drf.ClerkAuthentication"
AUTH_MIDDLEWARE_PATH = "django.contrib.auth.middleware.AuthenticationMiddleware"
KEYS_HINT = (
    "Set CLERK_PUBLISHABLE_KEY (Clerk dashboard: API keys), and CLERK_SECRET_KEY or "
    "CLERK_JWT_KEY."
)


def token_auth_in_use():
    """Is the middleware, the backend or the DRF class configured?"""
    drf = getattr(settings, "REST_FRAMEWORK", None)
    drf_classes = (
        drf.get("DEFAULT_AUTHENTICATION_CLASSES", ()) if isinstance(drf, dict) else ()
    )
    return (
        MIDDLEWARE_PATH in (getattr(settings, "MIDDLEWARE", None) or ())
        or BACKEND_PATH in (getattr(settings, "AUTHENTICATION_BACKENDS", None) or ())
        or DRF_PATH in (drf_classes or ())
    )


def _is_origin(value):
    scheme, sep, rest = value.partition("://")
    rest = rest.rstrip("/")  # a trailing slash is forgiven (and removed)
    return bool(sep and rest) and scheme in ("http", "https") and "/" not in rest


def _is_number(value):
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


@register(Tags.security)
def check_session_token_settings(app_configs=None, **kwargs):
    from .conf import frontend_api_host
    from .jwks import InvalidKey, load_pem_public_key

    messages: list[Error | Warning] = []
    pem = getattr(settings, "CLERK_JWT_KEY", None)
    if pem not in (None, ""):
        try:
            load_pem_public_key(pem)
        except InvalidKey as exc:
            messages.append(
                Error(
                    f"CLERK_JWT_KEY {exc}.",
                    hint="Copy the PEM public key from the Clerk dashboard (API "
                    "keys -> Show JWT public key), starting -----BEGIN PUBLIC "
                    "KEY-----; literal \\n line breaks are fine. Or unset it to fetch "
                    "the keys (JWKS).",
                    id="django_clerk_sync.E030",
                )
            )

    publishable_key = getattr(settings, "CLERK_PUBLISHABLE_KEY", None)
    if publishable_key not in (None, "") and not frontend_api_host(publishable_key):
        messages.append(
            Error(
                "CLERK_PUBLISHABLE_KEY is not a Clerk publishable key (pk_test_... or "
                "pk_live_... encoding the Frontend API host).",
                hint="Copy the Publishable key from the Clerk dashboard (API keys), "
                "without quotes.",
                id="django_clerk_sync.E031",
            )
        )

    for name, default in (
        ("CLERK_JWT_LEEWAY", 5),
        ("CLERK_JWKS_CACHE_TTL", 300),
        ("CLERK_JWKS_REFETCH_COOLDOWN", 10),
        ("CLERK_HTTP_TIMEOUT", 5),
    ):
        value = getattr(settings, name, default)
        positive = name in ("CLERK_HTTP_TIMEOUT", "CLERK_JWKS_CACHE_TTL")
        if not _is_number(value) or value < 0 or (positive and value == 0):
            messages.append(
                Error(
                    f"{name} must be a {'positive' if positive else 'non-negative'} "
                    f"number of seconds, not {value!r}.",
                    hint=f"Remove it to use the default ({default}), or set a number.",
                    id="django_clerk_sync.E034",
                )
            )
    leeway = getattr(settings, "CLERK_JWT_LEEWAY", 5)
    if _is_number(leeway) and leeway > 30:
        messages.append(
            Warning(
                f"CLERK_JWT_LEEWAY is {leeway} s: Clerk session tokens live 60 s, so "
                "expired tokens stay accepted that much longer.",
                hint="A few seconds covers clock skew; Clerk's SDKs use 5.",
                id="django_clerk_sync.W031",
            )
        )

    first_sight = getattr(settings, "CLERK_SYNC_FIRST_SIGHT", "create")
    if first_sight not in ("create", "fetch", "off"):
        messages.append(
            Error(
                f'CLERK_SYNC_FIRST_SIGHT must be "create", "fetch" or "off", not '
                f"{first_sight!r}.",
                hint='"create" makes the Django user from the token, "fetch" fetches '
                'the Clerk user first, "off" leaves the request anonymous.',
                id="django_clerk_sync.E035",
            )
        )
    elif first_sight == "fetch" and not getattr(settings, "CLERK_SECRET_KEY", None):
        messages.append(
            Error(
                'CLERK_SYNC_FIRST_SIGHT is "fetch" but CLERK_SECRET_KEY is not set: '
                "new users cannot be fetched and stay anonymous.",
                hint="Set CLERK_SECRET_KEY (Clerk dashboard: API keys), or use "
                '"create".',
                id="django_clerk_sync.E037",
            )
        )

    for name in ("CLERK_ACCEPT_TOKENS_WITHOUT_AZP", "CLERK_ALLOW_PENDING_SESSIONS"):
        value = getattr(settings, name, None)
        if value is not None and not isinstance(value, bool):
            messages.append(
                Error(
                    f"{name} must be True or False, not {value!r}; until it is, it "
                    "counts as False.",
                    hint="Environment variables are strings: convert, e.g. "
                    f'os.environ.get("{name}") == "true".',
                    id="django_clerk_sync.E039",
                )
            )

    parties = getattr(settings, "CLERK_AUTHORIZED_PARTIES", None)
    if isinstance(parties, str):
        parties = [parties]  # accepted as one origin
    if parties is not None:
        if not isinstance(parties, (list, tuple, set, frozenset)) or not all(
            isinstance(p, str) for p in parties
        ):
            messages.append(
                Error(
                    "CLERK_AUTHORIZED_PARTIES must be a list of origins (strings).",
                    hint='For example ["https://app.example.com"].',
                    id="django_clerk_sync.E036",
                )
            )
        else:
            messages += [
                Error(
                    f"CLERK_AUTHORIZED_PARTIES entry {party!r} is not an origin.",
                    hint="An origin is a scheme and host (and port), no path: "
                    '"https://app.example.com", as browsers send it in Origin.',
                    id="django_clerk_sync.E036",
                )
                for party in parties
                if not _is_origin(party)
            ]

    if not token_auth_in_use():
        return messages

    if not clerk_settings.JWT_ISSUER:
        messages.append(
            Error(
                "Clerk session tokens cannot be verified: the issuer is unknown, so "
                "every token is rejected (not_configured).",
                hint=KEYS_HINT + " CLERK_JWT_ISSUER may name the issuer instead.",
                id="django_clerk_sync.E032",
            )
        )
    middleware = list(getattr(settings, "MIDDLEWARE", None) or ())
    if MIDDLEWARE_PATH in middleware and AUTH_MIDDLEWARE_PATH in middleware:
        if middleware.index(AUTH_MIDDLEWARE_PATH) > middleware.index(MIDDLEWARE_PATH):
            messages.append(
                Error(
                    "ClerkAuthenticationMiddleware comes before "
                    "AuthenticationMiddleware, which then replaces the request.user it "
                    "set.",
                    hint=f"Move {MIDDLEWARE_PATH!r} after {AUTH_MIDDLEWARE_PATH!r} in "
                    "MIDDLEWARE.",
                    id="django_clerk_sync.E033",
                )
            )
    if not clerk_settings.AUTHORIZED_PARTIES:
        messages.append(
            Warning(
                "CLERK_AUTHORIZED_PARTIES is empty: a session token minted for any "
                "origin of this Clerk instance is accepted.",
                hint="List your frontends' origins, e.g. CLERK_AUTHORIZED_PARTIES = "
                '["https://app.example.com"].',
                id="django_clerk_sync.W030",
            )
        )
    return messages


@register(Tags.security)
def check_secret_key(app_configs=None, **kwargs):
    from .backend_api import secret_key_problem

    value = getattr(settings, "CLERK_SECRET_KEY", None)
    if value in (None, ""):
        return []  # optional: only the backfill and some key sources need it
    problem = secret_key_problem(value)
    if not problem:
        return []
    return [
        Error(
            f"CLERK_SECRET_KEY {problem}.",
            hint="Copy the Secret Key (sk_test_... or sk_live_...) from the Clerk "
            "dashboard -> API keys, without quotes or spaces.",
            id="django_clerk_sync.E038",
        )
    ]


@register(Tags.security)
def check_clerk_endpoint_settings(app_configs=None, **kwargs):
    """The Backend API and JWKS settings: E040 to E045. Meanwhile the middleware
    uses the defaults (it never fails a request over them); clerk_backfill refuses
    to run."""
    from .conf import (
        http_url_problem,
        jwks_cache_problem,
        max_retries_problem,
        rate_limit_problem,
    )

    messages = []
    urls = (
        (
            "CLERK_API_URL",
            "https://api.clerk.com is used meanwhile.",
            "Backend API requests and the keys fetched from it fail.",
            'Set the Backend API base URL, e.g. "https://api.clerk.com" (the default), '
            'a proxy, or the simulator\'s "http://127.0.0.1:<port>"; or remove it.',
            "django_clerk_sync.E040",
        ),
        (
            "CLERK_JWKS_URL",
            "The URL derived from the key settings is used meanwhile.",
            "Every fetch of the signing keys fails (keys_unavailable).",
            "Remove it to use the URL derived from CLERK_SECRET_KEY or "
            "CLERK_PUBLISHABLE_KEY, or set the full URL, e.g. "
            '"https://<frontend api>/.well-known/jwks.json".',
            "django_clerk_sync.E041",
        ),
    )
    for name, if_not_text, if_text, hint, check_id in urls:
        value = getattr(settings, name, None)
        problem = None if value in (None, "") else http_url_problem(value)
        if problem:
            # A non-string is ignored (conf falls back); a bad string is used and fails.
            meanwhile = if_text if isinstance(value, str) else if_not_text
            messages.append(
                Error(
                    f"{name} {problem}: {value!r}. {meanwhile}", hint=hint, id=check_id
                )
            )
    value = getattr(settings, "CLERK_JWT_ISSUER", None)
    if value is not None and not isinstance(value, str):
        messages.append(
            Error(
                f"CLERK_JWT_ISSUER must be a string, not {type(value).__name__}; "
                "until it is, it is ignored and the issuer comes from "
                "CLERK_PUBLISHABLE_KEY.",
                hint='Set the Frontend API URL tokens carry in "iss", e.g. '
                '"https://clerk.example.com", or remove it.',
                id="django_clerk_sync.E042",
            )
        )
    value = getattr(settings, "CLERK_API_RATE_LIMIT", None)
    problem = None if value is None else rate_limit_problem(value)
    if problem:
        messages.append(
            Error(
                f"CLERK_API_RATE_LIMIT {value!r} {problem}. The default (100, 10) "
                "is used meanwhile; clerk_backfill refuses to run.",
                hint="Set (requests, seconds) with a whole number of requests, e.g. "
                "(100, 10) for a development instance or (1000, 10) for production.",
                id="django_clerk_sync.E043",
            )
        )
    value = getattr(settings, "CLERK_API_MAX_RETRIES", None)
    if value is not None and max_retries_problem(value):
        messages.append(
            Error(
                f"CLERK_API_MAX_RETRIES must be a whole number, 0 or more, not "
                f"{value!r}. The default (5) is used meanwhile; clerk_backfill "
                "refuses to run.",
                hint="Set a number such as 5, or remove it. Environment variables "
                'are strings: convert, e.g. int(os.environ["CLERK_API_MAX_RETRIES"]).',
                id="django_clerk_sync.E044",
            )
        )
    value = getattr(settings, "CLERK_JWKS_CACHE", None)
    problem = jwks_cache_problem(value)
    if problem:
        aliases = getattr(settings, "CACHES", None)
        aliases = ", ".join(map(repr, aliases)) if isinstance(aliases, dict) else ""
        messages.append(
            Error(
                f"CLERK_JWKS_CACHE {problem}: {value!r}. Each process keeps its own "
                "keys meanwhile.",
                hint=f"Name one of CACHES ({aliases or 'none configured'}), or remove "
                "it.",
                id="django_clerk_sync.E045",
            )
        )
    return messages


# --- Deferred processing (processing.py, tasks.py) -----------------------------------


@register()
def check_processing_settings(app_configs=None, **kwargs):
    """CLERK_SYNC_PROCESSING and the task settings: E050 to E056, W003."""
    from .conf import ENQUEUE_FAILURE_POLICIES, PROCESSING_MODES

    messages: list[Error | Warning] = []
    processing = getattr(settings, "CLERK_SYNC_PROCESSING", "inline")
    if processing not in PROCESSING_MODES:
        messages.append(
            Error(
                f"CLERK_SYNC_PROCESSING must be one of {', '.join(map(repr, PROCESSING_MODES))}, "
                f"not {processing!r}. Events are processed inline meanwhile.",
                hint='"inline" processes each event in the webhook request (the '
                'default); "django_tasks" or "celery" hand it to that task engine '
                "(docs/deployment.md).",
                id="django_clerk_sync.E050",
            )
        )
    policy = getattr(settings, "CLERK_SYNC_ENQUEUE_FAILURE", "retry")
    if policy not in ENQUEUE_FAILURE_POLICIES:
        messages.append(
            Error(
                f'CLERK_SYNC_ENQUEUE_FAILURE must be "retry" or "inline", not '
                f'{policy!r}. It counts as "retry" meanwhile.',
                hint='"retry" answers 503 when the queue is down, so Svix delivers '
                'the stored event again; "inline" processes it in the request.',
                id="django_clerk_sync.E054",
            )
        )
    queue = getattr(settings, "CLERK_SYNC_TASK_QUEUE", None)
    if queue is not None and not (isinstance(queue, str) and queue):
        messages.append(
            Error(
                f"CLERK_SYNC_TASK_QUEUE must be the name of a queue (a non-empty "
                f"string), not {queue!r}. The engine's default queue is used "
                "meanwhile.",
                hint="Name a queue your workers consume, or remove it.",
                id="django_clerk_sync.E055",
            )
        )
    messages += _task_number_problems()
    if processing == "celery":
        try:
            import celery  # noqa: F401
        except ImportError:
            messages.append(
                Error(
                    'CLERK_SYNC_PROCESSING is "celery" but celery is not installed: '
                    "every webhook delivery fails to enqueue (503, or processed "
                    'inline if CLERK_SYNC_ENQUEUE_FAILURE is "inline").',
                    hint='pip install "django-clerk-sync[celery]", or set '
                    'CLERK_SYNC_PROCESSING = "inline".',
                    id="django_clerk_sync.E051",
                )
            )
        else:
            from celery import current_app

            # Celery's fallback app (no project app made in this process) sends to
            # amqp://localhost, where no worker of the project listens.
            if current_app._get_current_object().main == "default":
                messages.append(
                    Warning(
                        'CLERK_SYNC_PROCESSING is "celery" but no Celery app is set '
                        "up in this process: tasks go to Celery's default broker "
                        "(amqp://localhost), not to the project's workers.",
                        hint="Create the project's Celery app in a module imported "
                        "at start-up, as Celery's Django guide does (proj/celery.py, "
                        "imported in proj/__init__.py).",
                        id="django_clerk_sync.W003",
                    )
                )
    elif processing == "django_tasks":
        messages += _django_tasks_problems()
    return messages


def _task_number_problems():
    messages = []
    from .conf import MAX_SWEEP_AFTER

    for name, default, whole, least, most in (
        ("CLERK_SYNC_SWEEP_AFTER", 600, False, 0, MAX_SWEEP_AFTER),
        ("CLERK_SYNC_TASK_RETRY_DELAY", 30, False, 0, None),
        ("CLERK_SYNC_TASK_MAX_ATTEMPTS", 8, True, 1, None),
    ):
        value = getattr(settings, name, default)
        usable = (
            (isinstance(value, int) if whole else _is_number(value))
            and not isinstance(value, bool)
            and value >= least
            and (most is None or value <= most)
        )
        if not usable:
            kind = (
                "whole number, 1 or more" if whole else "number of seconds, 0 or more"
            )
            if most is not None:
                kind += f" and at most {most:,} (ten years)"
            messages.append(
                Error(
                    f"{name} must be a {kind}, not {value!r}. The default "
                    f"({default}) is used meanwhile.",
                    hint=f"Set a number, or remove it to use the default ({default}). "
                    "Environment variables are strings: convert them.",
                    id="django_clerk_sync.E056",
                )
            )
    return messages


def _django_tasks_problems():
    from .conf import clerk_settings
    from .tasks import DJANGO_TASK_ERROR, django_task_framework, process_event_task

    framework = django_task_framework()
    if framework is None:
        return [
            Error(
                'CLERK_SYNC_PROCESSING is "django_tasks" but neither django.tasks '
                "(Django 6) nor the django-tasks package is installed: every webhook "
                "delivery fails to enqueue.",
                hint='pip install "django-clerk-sync[tasks]" (and a backend such as '
                "django-tasks-db), or upgrade to Django 6, or set "
                'CLERK_SYNC_PROCESSING = "inline".',
                id="django_clerk_sync.E052",
            )
        ]
    messages = []
    alias = getattr(settings, "CLERK_SYNC_TASK_BACKEND", None)
    if alias is not None and not (isinstance(alias, str) and alias):
        messages.append(
            Error(
                f"CLERK_SYNC_TASK_BACKEND must be an alias in TASKS (a non-empty "
                f'string), not {alias!r}. "default" is used meanwhile.',
                hint='Name one of TASKS, or remove it to use "default".',
                id="django_clerk_sync.E053",
            )
        )
    alias = clerk_settings.TASK_BACKEND
    configured = framework.task_backends.settings
    if alias not in configured:
        return messages + [
            Error(
                f"CLERK_SYNC_TASK_BACKEND is {alias!r}, which is not an alias in "
                "TASKS: every webhook delivery fails to enqueue.",
                hint=f"Add {alias!r} to TASKS (e.g. with BACKEND "
                '"django_tasks_db.DatabaseBackend"), or set CLERK_SYNC_TASK_BACKEND '
                f"to one of {', '.join(map(repr, configured)) or 'its aliases'}.",
                id="django_clerk_sync.E053",
            )
        ]
    try:
        backend = framework.task_backends[alias]
    except Exception as exc:
        return messages + [
            Error(
                f"TASKS[{alias!r}] (CLERK_SYNC_TASK_BACKEND) cannot be loaded: "
                f"{type(exc).__name__}: {exc}",
                hint="Fix its BACKEND path and install the package providing it.",
                id="django_clerk_sync.E053",
            )
        ]
    if process_event_task is None:
        return messages + [
            Error(
                f"The processing task cannot be made with Django's tasks framework: "
                f"{DJANGO_TASK_ERROR}",
                hint='TASKS needs a usable "default" alias, or CLERK_SYNC_TASK_BACKEND '
                "naming one.",
                id="django_clerk_sync.E053",
            )
        ]
    queue = clerk_settings.TASK_QUEUE or "default"
    if backend.queues and queue not in backend.queues:
        messages.append(
            Error(
                f"CLERK_SYNC_TASK_QUEUE {queue!r} is not one of TASKS[{alias!r}]"
                f"['QUEUES'] ({', '.join(map(repr, sorted(backend.queues)))}): every "
                "webhook delivery fails to enqueue.",
                hint=f"Add {queue!r} to TASKS[{alias!r}]['QUEUES'], or set "
                "CLERK_SYNC_TASK_QUEUE to one of them.",
                id="django_clerk_sync.E055",
            )
        )
    return messages
