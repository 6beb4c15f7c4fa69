"""Build Clerk-shaped payloads and Svix-signed deliveries, for tests and local development.

Used by this project's own tests, by ``manage.py clerk_send_webhook`` and by the
demo; usable in your project's tests too::

    from django_clerk_sync.testing import clerk_user, event, signed_headers

    body = event("user.created", clerk_user("user_123", email="ada@example.com"))
    client.post(url, body, content_type="application/json",
                headers=signed_headers(secret, body))
"""

import json
import secrets as _secrets
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone

__all__ = [
    "clerk_user",
    "deleted_user",
    "event",
    "new_svix_id",
    "signed_headers",
    "deliver",
]


def _now_ms():
    return int(time.time() * 1000)


def new_svix_id():
    return "msg_" + _secrets.token_hex(13)


def clerk_user(
    clerk_id=None,
    *,
    email=None,
    first_name=None,
    last_name=None,
    username=None,
    phone=None,
    updated_at=None,
    created_at=None,
    email_verified=True,
    **extra,
):
    """A User object shaped exactly like Clerk's: every key present, ``null`` where unset."""
    clerk_id = clerk_id or "user_" + _secrets.token_hex(13)
    created_at = created_at if created_at is not None else _now_ms()
    updated_at = updated_at if updated_at is not None else created_at
    suffix = clerk_id.removeprefix("user_")
    emails, phones = [], []
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
    user = {
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


def deleted_user(clerk_id):
    """The ``data`` of a ``user.deleted`` event: no ``updated_at``, just the id."""
    return {"deleted": True, "id": clerk_id, "object": "user"}


def event(event_type, data, *, instance_id="ins_2demo0000000000000000000"):
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


def signed_headers(secret, body, *, svix_id=None, timestamp=None):
    """Svix headers for ``body`` signed with ``secret`` by svix's own signer.

    ``timestamp`` is a ``datetime`` or Unix seconds; default now.
    """
    from svix.webhooks import Webhook

    if timestamp is None:
        when = datetime.now(tz=timezone.utc)
    elif isinstance(timestamp, datetime):
        when = timestamp
    else:
        when = datetime.fromtimestamp(timestamp, tz=timezone.utc)
    svix_id = svix_id or new_svix_id()
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    return {
        "svix-id": svix_id,
        "svix-timestamp": str(int(when.timestamp())),
        "svix-signature": Webhook(secret).sign(svix_id, when, text),
    }


def deliver(url, secret, body, *, svix_id=None, timeout=15):
    """POST a signed delivery to ``url`` over real HTTP, as Svix would.

    Returns ``(status, response headers, response body)``; never follows redirects
    (Svix does not either) and never raises for an HTTP error status.
    """

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    headers = {"Content-Type": "application/json", "User-Agent": "Svix-Webhooks/1.0"}
    headers.update(signed_headers(secret, body, svix_id=svix_id))
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()
