"""System checks: misconfiguration is reported by ``manage.py check`` with the fix.

Ids are stable; docs/settings.md lists them.
"""

import base64
import binascii

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
