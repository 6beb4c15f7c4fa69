"""Clerk-shaped payloads: User objects, ``user.deleted`` data, event envelopes."""

from __future__ import annotations

import json
import secrets as _secrets
import time
from collections.abc import Mapping
from typing import Any


def _now_ms() -> int:
    return int(time.time() * 1000)


def new_svix_id() -> str:
    """A fresh Svix message id, ``msg_...``."""
    return "msg_" + _secrets.token_hex(13)


def clerk_user(
    clerk_id: str | None = None,
    *,
    email: str | None = None,
    first_name: str | None = None,
    last_name: str | None = None,
    username: str | None = None,
    phone: str | None = None,
    updated_at: int | None = None,
    created_at: int | None = None,
    email_verified: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    """A User object shaped exactly like Clerk's: every key present, ``null`` where unset."""
    clerk_id = clerk_id or "user_" + _secrets.token_hex(13)
    created_at = created_at if created_at is not None else _now_ms()
    updated_at = updated_at if updated_at is not None else created_at
    suffix = clerk_id.removeprefix("user_")
    emails: list[dict[str, Any]] = []
    phones: list[dict[str, Any]] = []
    if email:
        emails.append(
            {
                "email_address": email,
                "id": f"idn_{suffix}",
                "linked_to": [],
                "object": "email_address",
                "reserved": False,
                "verification": {
                    "attempts": None,
                    "expire_at": None,
                    "status": "verified" if email_verified else "unverified",
                    "strategy": "email_code",
                },
            }
        )
    if phone:
        phones.append(
            {
                "id": f"idn_p{suffix}",
                "linked_to": [],
                "object": "phone_number",
                "phone_number": phone,
                "reserved_for_second_factor": False,
                "verification": {"status": "verified", "strategy": "phone_code"},
            }
        )
    user: dict[str, Any] = {
        "backup_code_enabled": False,
        "banned": False,
        "birthday": "",
        "create_organization_enabled": True,
        "created_at": created_at,
        "delete_self_enabled": True,
        "email_addresses": emails,
        "external_accounts": [],
        "external_id": None,
        "first_name": first_name,
        "gender": "",
        "has_image": False,
        "id": clerk_id,
        "image_url": "https://img.clerk.com/eyJ0eXBlIjoiZGVmYXVsdCJ9",
        "last_active_at": None,
        "last_name": last_name,
        "last_sign_in_at": None,
        "locked": False,
        "object": "user",
        "password_enabled": bool(email),
        "phone_numbers": phones,
        "primary_email_address_id": emails[0]["id"] if emails else None,
        "primary_phone_number_id": phones[0]["id"] if phones else None,
        "primary_web3_wallet_id": None,
        "private_metadata": {},
        "profile_image_url": "https://www.gravatar.com/avatar?d=mp",
        "public_metadata": {},
        "saml_accounts": [],
        "totp_enabled": False,
        "two_factor_enabled": False,
        "unsafe_metadata": {},
        "updated_at": updated_at,
        "username": username,
        "web3_wallets": [],
    }
    user.update(extra)
    return user


def deleted_user(clerk_id: str) -> dict[str, Any]:
    """The ``data`` of a ``user.deleted`` event: no ``updated_at``, just the id."""
    return {"deleted": True, "id": clerk_id, "object": "user"}


def event(
    event_type: str,
    data: Mapping[str, Any],
    *,
    instance_id: str = "ins_2demo0000000000000000000",
) -> bytes:
    """The envelope Clerk wraps every event in, serialised to bytes."""
    envelope = {
        "data": data,
        "event_attributes": {
            "http_request": {"client_ip": "192.0.2.1", "user_agent": "clerk-sync-tests"}
        },
        "instance_id": instance_id,
        "object": "event",
        "timestamp": _now_ms(),
        "type": event_type,
    }
    return json.dumps(envelope).encode("utf-8")
