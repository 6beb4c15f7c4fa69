"""System checks: misconfiguration is reported by ``manage.py check`` with the fix.

Ids are stable; docs/settings.md lists them.
"""

import base64
import binascii
import math

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

    messages = []
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
