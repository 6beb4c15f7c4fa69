"""``CLERK_SYNC_FIELD_MAP``: which Clerk user data lands in which user-model field.

Clerk user objects are full of ``null``s (no email, no names, no username) and
gain keys over time, so every source here tolerates missing or oddly typed data
and returns ``None`` rather than raising.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any

from .conf import clerk_settings

ClerkUser = dict[str, Any]
"""A Clerk user object, as the Backend API and the webhooks send it."""
Source = Callable[[ClerkUser], Any]
"""A resolved field-map source: reads one value from a Clerk user object."""
FieldMap = list[tuple[str, Source]]
"""``[(field name, source)]``, as :func:`current_map` returns it."""


def _primary_entry(
    clerk_user: ClerkUser, list_key: str, id_key: str, value_key: str
) -> str | None:
    # The primary entry is the one whose id matches, never "the first one".
    primary_id = clerk_user.get(id_key)
    entries = clerk_user.get(list_key)
    if not primary_id or not isinstance(entries, list):
        return None
    for entry in entries:
        if isinstance(entry, dict) and entry.get("id") == primary_id:
            value = entry.get(value_key)
            return value if isinstance(value, str) else None
    return None


def primary_email(clerk_user: ClerkUser) -> str | None:
    return _primary_entry(
        clerk_user, "email_addresses", "primary_email_address_id", "email_address"
    )


def primary_phone(clerk_user: ClerkUser) -> str | None:
    return _primary_entry(
        clerk_user, "phone_numbers", "primary_phone_number_id", "phone_number"
    )


def full_name(clerk_user: ClerkUser) -> str:
    parts = [clerk_user.get("first_name"), clerk_user.get("last_name")]
    return " ".join(p.strip() for p in parts if isinstance(p, str) and p.strip())


def image_url(clerk_user: ClerkUser) -> str:
    value = clerk_user.get("image_url")
    return value if isinstance(value, str) else ""


COMPUTED_SOURCES: dict[str, Source] = {
    "primary_email": primary_email,
    "primary_phone": primary_phone,
    "full_name": full_name,
    "image_url": image_url,
}


def _json_path(path: str) -> Source:
    keys = path.split(".")

    def read(clerk_user: ClerkUser) -> Any:
        value: Any = clerk_user
        for key in keys:
            if not isinstance(value, dict):
                return None
            value = value.get(key)
        return value

    read.__name__ = f"path:{path}"
    return read


def import_callable(dotted: str) -> Callable[..., Any]:
    """Import ``"module.path:attribute"``; raise ``ImportError`` with the reason."""
    module_path, _, attribute = dotted.partition(":")
    module = import_module(module_path)
    try:
        target = getattr(module, attribute)
    except AttributeError:
        raise ImportError(f"module {module_path!r} has no attribute {attribute!r}")
    if not callable(target):
        raise TypeError(f"{dotted!r} is not callable")
    return target


def resolve_source(source: str | Source) -> Source:
    """Turn one field-map source into a function of the Clerk user dict."""
    if callable(source):
        return source
    if not isinstance(source, str) or not source:
        raise TypeError(
            f"a source must be a non-empty string or a callable, not {source!r}"
        )
    if source in COMPUTED_SOURCES:
        return COMPUTED_SOURCES[source]
    if ":" in source:
        return import_callable(source)
    return _json_path(source)


def current_map() -> FieldMap:
    """The map as the settings say now, each source resolved: ``[(field, function)]``.
    A page of users resolves it once instead of once per user."""
    return [
        (field, resolve_source(source))
        for field, source in clerk_settings.FIELD_MAP.items()
    ]


def mapped_values(
    clerk_user: ClerkUser, field_map: FieldMap | None = None
) -> dict[str, Any]:
    """``{field name: value}`` for one Clerk user, as ``field_map`` (default: the
    current map) says."""
    if field_map is None:
        field_map = current_map()
    return {field: source(clerk_user) for field, source in field_map}
