"""The Clerk webhook endpoint, exercised through its public HTTP surface.

Every request goes through Django's test client with CSRF checks enforced, is signed
by svix's own signer (``django_clerk_sync.testing.signed_headers``) and lands in a
real database. Nothing is mocked: failures come from real signal receivers, real
``CLERK_SYNC_FIELD_MAP`` callables and real database objects (a unique index, a
missing table).

Each row of the status-code table (docs/webhooks.md) has its tests here.
"""

import base64
import hashlib
import hmac
import json
import logging
import time

import django
import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.db import OperationalError, connection
from django.db.models.signals import post_save
from django.test import override_settings

from django_clerk_sync import get_user
from django_clerk_sync.models import ClerkUserLink, WebhookEvent
from django_clerk_sync.signals import clerk_user_deleted, clerk_user_synced
from django_clerk_sync.testing import clerk_user, signed_headers

from .conftest import SECRET, load_event, to_body

# The user in tests/fixtures/user_created.json.
CLERK_ID = "user_29w83sxmDNGwOuEthce5gg56FcC"
EMAIL = "example@example.org"

# A second valid Svix secret: the "other" side of a rotation, or simply the wrong one.
OTHER_SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()

# svix's published test vector (clerk-facts.md, section 1).
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


# --- helpers -------------------------------------------------------------------------


def user_created_body(**data_changes):
    return to_body(load_event("user_created", **data_changes))


def signature_for(body, svix_id, timestamp, secret=SECRET):
    return signed_headers(secret, body, svix_id=svix_id, timestamp=timestamp)[
        "svix-signature"
    ]


def row_counts():
    """Rows in every table Django knows about, so "nothing written" means nothing."""
    return {
        model._meta.label: model._default_manager.count()
        for model in apps.get_models(include_auto_created=True)
    }


def assert_no_sync_rows():
    assert WebhookEvent.objects.count() == 0
    assert ClerkUserLink.objects.count() == 0
    assert get_user_model().objects.count() == 0


@pytest.fixture
def post(client, webhook_url):
    """POST raw bytes with exactly the headers given: no signing of its own."""

    def post(body, headers=None, *, path=None):
        return client.post(
            path or webhook_url,
            body,
            content_type="application/json",
            headers=headers or {},
        )

    return post


@pytest.fixture
def user_saves():
    """The pk of every Django user row saved during the test (real ``post_save``)."""
    saves = []

    def on_save(sender, instance, **kwargs):
        saves.append(instance.pk)

    user_model = get_user_model()
    post_save.connect(on_save, sender=user_model, weak=False)
    yield saves
    post_save.disconnect(on_save, sender=user_model)


@pytest.fixture
def flaky_receiver():
    """A ``clerk_user_synced`` receiver that raises on its first call only."""
    calls = []

    def receiver(sender, user, created, source, **kwargs):
        calls.append((user.pk, created, source))
        if len(calls) == 1:
            raise RuntimeError("the CRM is down")

    clerk_user_synced.connect(receiver, weak=False)
    yield calls
    clerk_user_synced.disconnect(receiver)


@pytest.fixture
def unique_email_index(transactional_db):
    """A real unique index on the user table's non-empty emails, as projects add."""
    table = get_user_model()._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE UNIQUE INDEX clerk_test_unique_email ON {table} (email) "
            "WHERE email <> ''"
        )
    yield
    with connection.cursor() as cursor:
        cursor.execute("DROP INDEX clerk_test_unique_email")


@pytest.fixture
def event_table_gone(transactional_db):
    """The event log's table is unreachable: the database cannot store deliveries."""
    table = WebhookEvent._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {table} RENAME TO {table}_away")
    yield
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {table}_away RENAME TO {table}")


@pytest.fixture
def atomic_requests(monkeypatch):
    """``ATOMIC_REQUESTS = True`` on the default database, as many projects set it."""
    monkeypatch.setitem(connection.settings_dict, "ATOMIC_REQUESTS", True)


# --- the signer is Svix's ------------------------------------------------------------


def test_signed_headers_reproduce_the_public_svix_test_vector():
    headers = signed_headers(
        SECRET, VECTOR_BODY, svix_id=VECTOR_ID, timestamp=VECTOR_TIMESTAMP
    )
    assert headers == {
        "svix-id": VECTOR_ID,
        "svix-timestamp": str(VECTOR_TIMESTAMP),
        "svix-signature": VECTOR_SIGNATURE,
    }


def test_signature_is_hmac_sha256_over_id_timestamp_and_raw_body():
    body = '{"first_name": "Zoë"}'.encode()
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    digest = hmac.new(key, b"msg_1.1700000000." + body, hashlib.sha256).digest()
    expected = "v1," + base64.b64encode(digest).decode()

    assert signature_for(body, "msg_1", 1700000000) == expected


def test_public_test_vector_replayed_today_is_refused_as_too_old(post, db):
    response = post(
        VECTOR_BODY,
        {
            "svix-id": VECTOR_ID,
            "svix-timestamp": str(VECTOR_TIMESTAMP),
            "svix-signature": VECTOR_SIGNATURE,
        },
    )

    assert response.status_code == 400
    assert "too old" in response.json()["reason"]
    assert WebhookEvent.objects.count() == 0


# --- 2xx: processed ------------------------------------------------------------------


def test_signed_user_created_is_processed(deliver, signals_received):
    response = deliver(load_event("user_created"), svix_id="msg_created")

    assert response.status_code == 200
    assert response.json() == {"status": "processed", "outcome": "created"}
    event = WebhookEvent.objects.get()
    assert (event.svix_id, event.event_type, event.clerk_id) == (
        "msg_created",
        "user.created",
        CLERK_ID,
    )
    assert (event.status, event.outcome, event.attempts) == ("processed", "created", 1)
    assert event.last_error == ""
    assert event.processed_at is not None
    user = get_user(CLERK_ID)
    assert (user.email, user.first_name, user.last_name) == (
        EMAIL,
        "Example",
        "Example",
    )
    assert [(name, kw["created"], kw["source"]) for name, kw in signals_received] == [
        ("synced", True, "webhook")
    ]
    assert EMAIL not in response.content.decode()
    assert SECRET not in response.content.decode()


@pytest.mark.parametrize(
    "names",
    [
        ("svix-id", "svix-timestamp", "svix-signature"),
        ("webhook-id", "webhook-timestamp", "webhook-signature"),
        ("SVIX-ID", "Svix-Timestamp", "sViX-sIgNaTuRe"),
    ],
    ids=["svix names", "Standard Webhooks names", "any letter case"],
)
def test_header_names_accepted(post, transactional_db, names):
    body = user_created_body()
    signed = signed_headers(SECRET, body, svix_id="msg_names")
    headers = dict(
        zip(
            names,
            (signed["svix-id"], signed["svix-timestamp"], signed["svix-signature"]),
            strict=False,
        )
    )

    response = post(body, headers)

    assert response.status_code == 200
    assert response.json() == {"status": "processed", "outcome": "created"}
    assert WebhookEvent.objects.get().svix_id == "msg_names"
    assert get_user(CLERK_ID).email == EMAIL


@pytest.mark.parametrize(
    "seconds", [-240, 240], ids=["4 minutes old", "4 minutes ahead"]
)
def test_timestamp_within_five_minutes_is_accepted(deliver, seconds):
    response = deliver(load_event("user_created"), timestamp=time.time() + seconds)

    assert response.status_code == 200
    assert WebhookEvent.objects.get().status == "processed"


@pytest.mark.parametrize(
    "path", ["/api/webhooks/clerk", "/api/webhooks/clerk/"], ids=["no slash", "slash"]
)
def test_url_is_served_with_and_without_trailing_slash(
    post, transactional_db, settings, path
):
    # Svix does not follow redirects: APPEND_SLASH's 301 would be a failed delivery.
    settings.APPEND_SLASH = True
    assert "django.middleware.common.CommonMiddleware" in settings.MIDDLEWARE
    body = user_created_body()

    response = post(body, signed_headers(SECRET, body), path=path)

    assert response.status_code == 200
    assert WebhookEvent.objects.get().status == "processed"


@pytest.mark.skipif(
    django.VERSION < (5, 1), reason="LoginRequiredMiddleware is new in Django 5.1"
)
def test_reachable_under_login_required_middleware(
    client, deliver, settings, webhook_url
):
    settings.MIDDLEWARE = [
        *settings.MIDDLEWARE,
        "django.contrib.auth.middleware.LoginRequiredMiddleware",
    ]

    response = deliver(load_event("user_created"))

    assert response.status_code == 200
    assert response.json()["outcome"] == "created"
    # Not redirected to a login page either when the method is wrong.
    assert client.get(webhook_url).status_code == 405


def test_works_under_atomic_requests(deliver, atomic_requests, signals_received):
    response = deliver(load_event("user_created"))

    assert response.status_code == 200
    assert WebhookEvent.objects.get().status == "processed"
    assert len(signals_received) == 1


def test_failure_record_survives_atomic_requests(
    deliver, atomic_requests, flaky_receiver
):
    # Were the view wrapped in the request's transaction, the receiver would run only
    # at the end of the request, outside the code that records the failure.
    response = deliver(load_event("user_created"), svix_id="msg_atomic")

    assert response.status_code == 500
    event = WebhookEvent.objects.get(svix_id="msg_atomic")
    assert (event.status, event.attempts, event.signal_pending) == ("failed", 1, True)
    assert "the CRM is down" in event.last_error

    retry = deliver(load_event("user_created"), svix_id="msg_atomic")

    assert retry.status_code == 200
    assert len(flaky_receiver) == 2


@pytest.mark.parametrize(
    "limit_offset", [0, 1], ids=["exactly at the limit", "under it"]
)
def test_body_up_to_upload_limit_is_accepted(deliver, settings, limit_offset):
    body = user_created_body()
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = len(body) + limit_offset

    assert deliver(body).status_code == 200


# --- 2xx: ignored --------------------------------------------------------------------


def _envelope_without(key):
    envelope = load_event("user_created")
    del envelope[key]
    return to_body(envelope)


def _user_event_without_id(event_type):
    envelope = load_event("user_created")
    envelope["type"] = event_type
    del envelope["data"]["id"]
    return to_body(envelope)


IGNORED = {
    "not JSON": (b"<html>not json</html>", "body is not JSON"),
    "truncated JSON": (user_created_body()[:-20], "body is not JSON"),
    "empty body": (b"", "body is not JSON"),
    "JSON array": (b'[{"type": "user.created"}]', "body is not a JSON object"),
    "JSON string": (b'"user.created"', "body is not a JSON object"),
    "no type": (_envelope_without("type"), "envelope without type or data"),
    "no data": (_envelope_without("data"), "envelope without type or data"),
    "data is null": (
        to_body({"type": "user.updated", "data": None}),
        "envelope without type or data",
    ),
    "type is not a string": (
        to_body({"type": 7, "data": {}}),
        "envelope without type or data",
    ),
    "unhandled type": (
        to_body(load_event("session_created")),
        "unhandled event type 'session.created'",
    ),
    "user.created without data.id": (
        _user_event_without_id("user.created"),
        "user.created without a user id",
    ),
    "user.updated with a numeric id": (
        to_body(load_event("user_updated", id=12345)),
        "user.updated without a user id",
    ),
    "user.deleted without id": (
        to_body(
            {
                "type": "user.deleted",
                "object": "event",
                "data": {"deleted": True, "object": "user"},
            }
        ),
        "user.deleted without a user id",
    ),
}


@pytest.mark.parametrize("body, reason", IGNORED.values(), ids=IGNORED.keys())
def test_verified_but_unusable_event_is_stored_as_ignored(
    deliver, signals_received, body, reason
):
    response = deliver(body, svix_id="msg_ignored")

    assert response.status_code == 200
    assert response.json()["status"] == "ignored"
    assert reason in response.json()["outcome"]
    event = WebhookEvent.objects.get()
    assert (event.svix_id, event.status, event.attempts) == (
        "msg_ignored",
        "ignored",
        1,
    )
    assert reason in event.outcome
    assert bytes(event.body) == body
    assert ClerkUserLink.objects.count() == 0
    assert get_user_model().objects.count() == 0
    assert signals_received == []


def test_unhandled_event_type_is_recorded_with_its_type_and_object_id(deliver):
    deliver(load_event("session_created"))

    event = WebhookEvent.objects.get()
    assert (event.event_type, event.clerk_id) == (
        "session.created",
        "sess_2XjN0000000000000000000000",
    )


def test_redelivery_of_ignored_event_is_a_duplicate(deliver):
    deliver(load_event("session_created"), svix_id="msg_session")

    again = deliver(load_event("session_created"), svix_id="msg_session")

    assert again.status_code == 200
    assert again.json() == {
        "status": "ignored",
        "duplicate": True,
        "outcome": "unhandled event type 'session.created'",
    }
    assert WebhookEvent.objects.get().attempts == 1


# --- bodies are verified and stored exactly as received ------------------------------


@pytest.mark.parametrize(
    "ensure_ascii", [True, False], ids=["\\u escapes", "raw UTF-8"]
)
def test_non_ascii_names_verify_and_are_stored_byte_exact(deliver, ensure_ascii):
    envelope = load_event("user_created", first_name="Zoë 🦊", last_name="Łukasiewicz")
    # Odd but legal formatting: re-serialising the JSON would break the signature.
    body = json.dumps(envelope, ensure_ascii=ensure_ascii, indent=3).encode()
    assert (b"\\u0141ukasiewicz" in body) is ensure_ascii
    assert ("Łukasiewicz".encode() in body) is not ensure_ascii

    response = deliver(body)

    assert response.status_code == 200
    assert bytes(WebhookEvent.objects.get().body) == body
    user = get_user(CLERK_ID)
    assert (user.first_name, user.last_name) == ("Zoë 🦊", "Łukasiewicz")


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json; charset=utf-8",
        "text/plain",
        "application/x-www-form-urlencoded",
    ],
)
def test_body_is_read_raw_whatever_the_content_type(
    client, webhook_url, transactional_db, content_type
):
    body = user_created_body(first_name="Zoë")

    response = client.post(
        webhook_url,
        body,
        content_type=content_type,
        headers=signed_headers(SECRET, body),
    )

    assert response.status_code == 200
    assert bytes(WebhookEvent.objects.get().body) == body
    assert get_user(CLERK_ID).first_name == "Zoë"
    assert not response.cookies  # no session or CSRF cookie for Svix to ignore


# --- 400: cannot be shown to come from Clerk -----------------------------------------


@pytest.mark.parametrize("header", ["svix-id", "svix-timestamp", "svix-signature"])
@pytest.mark.parametrize("how", ["absent", "empty"])
def test_missing_header_is_400_and_nothing_stored(post, db, header, how):
    body = user_created_body()
    headers = signed_headers(SECRET, body)
    if how == "absent":
        del headers[header]
    else:
        headers[header] = ""
    before = row_counts()

    response = post(body, headers)

    assert response.status_code == 400
    assert response.json() == {
        "status": "rejected",
        "reason": "missing svix-id, svix-timestamp or svix-signature",
    }
    assert row_counts() == before
    assert_no_sync_rows()


def test_wrong_secret_is_400(post, db):
    body = user_created_body()

    response = post(body, signed_headers(OTHER_SECRET, body))

    assert response.status_code == 400
    assert response.json()["reason"] == "no signature matches CLERK_WEBHOOK_SECRET"
    assert_no_sync_rows()


ALTERATIONS = {
    "one character changed": lambda b: b.replace(b'"Example"', b'"Exampl3"', 1),
    "re-serialised JSON": lambda b: json.dumps(
        json.loads(b), separators=(",", ":")
    ).encode(),
    "trailing newline added": lambda b: b + b"\n",
    "truncated": lambda b: b[:-1],
}


@pytest.mark.parametrize("alter", ALTERATIONS.values(), ids=ALTERATIONS.keys())
def test_body_altered_after_signing_is_400(post, db, alter):
    body = user_created_body()
    headers = signed_headers(SECRET, body)
    altered = alter(body)
    assert altered != body

    response = post(altered, headers)

    assert response.status_code == 400
    assert response.json()["reason"] == "no signature matches CLERK_WEBHOOK_SECRET"
    assert_no_sync_rows()


@pytest.mark.parametrize(
    "seconds, words",
    [(-360, "too old"), (360, "too new")],
    ids=["6 minutes old", "6 minutes ahead"],
)
def test_timestamp_outside_five_minutes_is_400(post, db, seconds, words):
    body = user_created_body()

    response = post(body, signed_headers(SECRET, body, timestamp=time.time() + seconds))

    assert response.status_code == 400
    reason = response.json()["reason"]
    assert "timestamp" in reason.lower()
    assert words in reason
    assert_no_sync_rows()


@pytest.mark.parametrize(
    "timestamp",
    [
        "yesterday",
        "1614265330.5",
        "-1",
        "١٦١٤٢٦٥٣٣٠",  # Arabic-Indic digits: str.isdigit() says yes
        "9" * 30,
        str(int(time.time() * 1000)),  # milliseconds instead of seconds
    ],
    ids=[
        "words",
        "fraction",
        "negative",
        "non-ASCII digits",
        "absurdly large",
        "milliseconds",
    ],
)
def test_malformed_timestamp_is_400_naming_the_timestamp(post, db, timestamp):
    body = user_created_body()
    headers = signed_headers(SECRET, body)
    headers["svix-timestamp"] = timestamp

    response = post(body, headers)

    assert response.status_code == 400
    assert "timestamp" in response.json()["reason"].lower()
    assert_no_sync_rows()


@pytest.mark.parametrize("length, status", [(255, 200), (256, 400)])
def test_svix_id_up_to_the_column_length_is_accepted(
    post, transactional_db, length, status
):
    body = user_created_body()
    svix_id = "msg_" + "x" * (length - 4)

    response = post(body, signed_headers(SECRET, body, svix_id=svix_id))

    assert response.status_code == status
    if status == 200:
        assert WebhookEvent.objects.get().svix_id == svix_id
    else:
        assert response.json()["reason"] == "svix-id too long"
        assert_no_sync_rows()


def test_body_that_is_not_utf8_is_400_not_500(post, db):
    # Signed correctly over the raw bytes, which svix's verifier cannot even decode.
    body = b'{"type": "user.created", "data": {"first_name": "Zo\xeb"}}'
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    timestamp = str(int(time.time()))
    digest = hmac.new(key, f"msg_latin1.{timestamp}.".encode() + body, hashlib.sha256)
    headers = {
        "svix-id": "msg_latin1",
        "svix-timestamp": timestamp,
        "svix-signature": "v1," + base64.b64encode(digest.digest()).decode(),
    }

    response = post(body, headers)

    assert response.status_code == 400
    assert response.json()["reason"] == "body is not UTF-8"
    assert_no_sync_rows()


def test_unsigned_curl_style_request_writes_nothing_anywhere(
    client, webhook_url, transactional_db
):
    invented = {
        "type": "user.created",
        "object": "event",
        "data": clerk_user("user_attacker", email="attacker@example.com"),
    }
    before = row_counts()

    # As curl would send it: no signature, no CSRF token, no cookies.
    response = client.post(
        webhook_url, json.dumps(invented), content_type="application/json"
    )

    assert (
        response.status_code == 400
    )  # not 403: CSRF does not apply, the signature does
    assert response.json()["status"] == "rejected"
    assert row_counts() == before
    assert_no_sync_rows()


# svix's own verifier raises plain ValueError / binascii.Error on most of these: each
# must still be a clean 400, and must not hide a valid signature next to it.
MALFORMED_SIGNATURES = {
    "bare version": "v1",
    "no version": "garbage",
    "three parts": "v1,a,b",
    "non-ASCII": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1Oé=",
    "non-ASCII version": "vé,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    "bad base64 characters": "v1,!!!!not*base64!!!!",
    "bad padding": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE",
    "excess padding": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE==",
    "URL-safe alphabet": "v1,g0hM9SsE-OTPJTGt_tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    "not 32 bytes": "v1," + base64.b64encode(b"\0" * 16).decode(),
    "empty signature": "v1,",
    "empty version": "," + base64.b64encode(b"\0" * 32).decode(),
    "comma only": ",",
    "unknown version v1a (ed25519)": "v1a," + base64.b64encode(b"\0" * 64).decode(),
    "unknown version v2": "v2," + base64.b64encode(b"\0" * 32).decode(),
    "well formed, wrong value": "v1," + base64.b64encode(b"\0" * 32).decode(),
}

BROKEN_HEADERS = {
    **MALFORMED_SIGNATURES,
    "leading space": " v1,abc",
    "double space": "v1,abc  v1,def",
    "stray spaces only": "   ",
    "trailing space (empty entry)": "v1,abc ",
    "tab separated": "v1\t,abc",
    "all of the above": " ".join(MALFORMED_SIGNATURES.values()),
}


@pytest.mark.parametrize(
    "signature", BROKEN_HEADERS.values(), ids=BROKEN_HEADERS.keys()
)
def test_malformed_signature_header_is_400_never_500(post, db, signature):
    body = user_created_body()
    headers = signed_headers(SECRET, body)
    headers["svix-signature"] = signature

    response = post(body, headers)

    assert response.status_code == 400
    assert response.json()["status"] == "rejected"
    assert_no_sync_rows()


LAYOUTS = {
    "valid first": "{valid} {other}",
    "valid last": "{other} {valid}",
    "valid in the middle, double spaces": "{other}  {valid}  {other}",
    "leading and trailing spaces": "  {other} {valid} ",
}


@pytest.mark.parametrize("layout", LAYOUTS.values(), ids=LAYOUTS.keys())
@pytest.mark.parametrize(
    "other", MALFORMED_SIGNATURES.values(), ids=MALFORMED_SIGNATURES.keys()
)
def test_valid_signature_among_malformed_entries_is_accepted(
    post, transactional_db, other, layout
):
    body = user_created_body()
    headers = signed_headers(SECRET, body)
    headers["svix-signature"] = layout.format(
        valid=headers["svix-signature"], other=other
    )

    response = post(body, headers)

    assert response.status_code == 200
    assert response.json() == {"status": "processed", "outcome": "created"}


# --- secrets: rotation and several instances -----------------------------------------


@pytest.mark.parametrize(
    "signing_secret", [SECRET, OTHER_SECRET], ids=["first", "second"]
)
def test_delivery_signed_by_any_configured_secret_is_accepted(
    post, transactional_db, settings, signing_secret
):
    settings.CLERK_WEBHOOK_SECRET = [SECRET, OTHER_SECRET]
    body = user_created_body()

    response = post(body, signed_headers(signing_secret, body))

    assert response.status_code == 200
    assert get_user(CLERK_ID).email == EMAIL


def test_delivery_signed_by_an_unlisted_secret_is_refused(post, db, settings):
    settings.CLERK_WEBHOOK_SECRET = [OTHER_SECRET]
    body = user_created_body()

    response = post(body, signed_headers(SECRET, body))

    assert response.status_code == 400
    assert_no_sync_rows()


@pytest.mark.parametrize(
    "configured",
    [SECRET, OTHER_SECRET, [OTHER_SECRET, SECRET]],
    ids=["only the old secret", "only the new secret", "both"],
)
def test_svix_multi_signature_header_during_rotation(
    post, transactional_db, settings, configured
):
    # While a secret rotates, Svix signs with both and sends both signatures.
    settings.CLERK_WEBHOOK_SECRET = configured
    body = user_created_body()
    now = int(time.time())
    old = signature_for(body, "msg_rotating", now, SECRET)
    new = signature_for(body, "msg_rotating", now, OTHER_SECRET)
    headers = {
        "svix-id": "msg_rotating",
        "svix-timestamp": str(now),
        "svix-signature": f"{old} {new}",
    }

    response = post(body, headers)

    assert response.status_code == 200
    assert WebhookEvent.objects.get().svix_id == "msg_rotating"


def test_unusable_entry_in_secret_list_does_not_block_the_good_one(
    post, transactional_db, settings
):
    settings.CLERK_WEBHOOK_SECRET = ["whsec_", SECRET]
    body = user_created_body()

    response = post(body, signed_headers(SECRET, body))

    assert response.status_code == 200


# --- 503: no usable secret, or no database -------------------------------------------


@pytest.mark.parametrize(
    "value",
    [None, "", [], ["whsec_"], ["", None], 123],
    ids=[
        "None",
        "empty string",
        "empty list",
        "empty key",
        "list of blanks",
        "not a string",
    ],
)
def test_no_usable_secret_is_503_naming_the_setting(post, db, settings, caplog, value):
    settings.CLERK_WEBHOOK_SECRET = value
    body = user_created_body()
    before = row_counts()

    response = post(body, signed_headers(SECRET, body))

    assert response.status_code == 503
    assert response.json()["status"] == "error"
    assert "CLERK_WEBHOOK_SECRET" in response.json()["reason"]
    assert row_counts() == before
    assert any(
        "CLERK_WEBHOOK_SECRET" in record.getMessage()
        and record.levelno == logging.ERROR
        for record in caplog.records
    )


def test_unset_secret_is_503(post, db, settings):
    del settings.CLERK_WEBHOOK_SECRET
    body = user_created_body()

    response = post(body, signed_headers(SECRET, body))

    assert response.status_code == 503
    assert response.json()["reason"] == "CLERK_WEBHOOK_SECRET is not set"
    assert_no_sync_rows()


def test_database_unavailable_is_503(deliver, event_table_gone):
    response = deliver(load_event("user_created"))

    assert response.status_code == 503
    assert response.json() == {"status": "error", "reason": "database unavailable"}
    assert ClerkUserLink.objects.count() == 0
    assert get_user_model().objects.count() == 0


# --- 405 and 413 ---------------------------------------------------------------------


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete", "head", "options"])
def test_only_post_is_allowed(client, webhook_url, db, method):
    body = user_created_body()
    headers = signed_headers(SECRET, body)
    if method in ("get", "head", "options"):
        response = getattr(client, method)(webhook_url, headers=headers)
    else:
        response = getattr(client, method)(
            webhook_url, body, content_type="application/json", headers=headers
        )

    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert_no_sync_rows()


def test_body_over_upload_limit_is_413(post, db, settings):
    body = user_created_body()
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = len(body) - 1
    before = row_counts()

    response = post(body, signed_headers(SECRET, body))

    assert response.status_code == 413
    assert response.json() == {"status": "rejected", "reason": "body too large"}
    assert row_counts() == before


# --- duplicates: Svix retries and dashboard replays ----------------------------------


@pytest.mark.parametrize(
    "first_age",
    [0, 120],
    ids=["same delivery twice", "re-signed replay, new timestamp"],
)
def test_same_svix_id_has_one_effect(deliver, signals_received, user_saves, first_age):
    envelope = load_event("user_created")

    first = deliver(envelope, svix_id="msg_twice", timestamp=time.time() - first_age)
    second = deliver(envelope, svix_id="msg_twice")

    assert first.status_code == 200
    assert first.json() == {"status": "processed", "outcome": "created"}
    assert second.status_code == 200
    assert second.json() == {
        "status": "processed",
        "duplicate": True,
        "outcome": "created",
    }
    assert WebhookEvent.objects.get().attempts == 1
    assert get_user_model().objects.count() == 1
    assert len(user_saves) == 1
    assert len(signals_received) == 1


# --- 500: verified, stored, processing failed: Svix retries -------------------------


def test_raising_signal_receiver_is_500_and_retry_resends_only_the_signal(
    deliver, flaky_receiver, user_saves
):
    envelope = load_event("user_created")

    first = deliver(envelope, svix_id="msg_flaky")

    assert first.status_code == 500
    assert first.json() == {"status": "failed"}
    event = WebhookEvent.objects.get()
    assert (event.status, event.attempts, event.signal_pending) == ("failed", 1, True)
    assert event.last_error.startswith("Traceback")
    assert "RuntimeError: the CRM is down" in event.last_error
    # The change committed before the receiver ran; only the signal is outstanding.
    user = get_user(CLERK_ID)
    assert user.email == EMAIL
    assert user_saves == [user.pk]

    retry = deliver(envelope, svix_id="msg_flaky")

    assert retry.status_code == 200
    assert retry.json() == {"status": "processed", "outcome": "created"}
    event.refresh_from_db()
    assert (event.status, event.attempts, event.signal_pending) == (
        "processed",
        2,
        False,
    )
    assert event.last_error == ""
    assert flaky_receiver == [(user.pk, True, "webhook"), (user.pk, True, "webhook")]
    assert user_saves == [user.pk]  # the user row was not written again
    assert get_user_model().objects.count() == 1

    third = deliver(envelope, svix_id="msg_flaky")

    assert third.json()["duplicate"] is True
    assert len(flaky_receiver) == 2


def _source_querying_a_missing_table(clerk_user):
    with connection.cursor() as cursor:
        cursor.execute("SELECT first_name FROM clerk_test_table_that_does_not_exist")
    return clerk_user["first_name"]


def _source_raising_operational_error(clerk_user):
    raise OperationalError("database is locked")


@pytest.mark.parametrize(
    "source",
    [_source_querying_a_missing_table, _source_raising_operational_error],
    ids=["failing SQL", "OperationalError"],
)
def test_database_error_during_sync_is_500_then_retry_applies_once(
    deliver, signals_received, user_saves, source
):
    broken_map = {
        "email": "primary_email",
        "first_name": source,
        "last_name": "last_name",
        "username": "username",
    }
    envelope = load_event("user_created")

    with override_settings(CLERK_SYNC_FIELD_MAP=broken_map):
        first = deliver(envelope, svix_id="msg_db_error")

    assert first.status_code == 500
    event = WebhookEvent.objects.get()
    assert (event.status, event.attempts, event.signal_pending) == ("failed", 1, False)
    assert event.outcome.startswith("error: ")
    assert event.last_error.startswith("Traceback")
    assert "Error" in event.outcome and source.__name__ in event.last_error
    # Everything the failed attempt did was rolled back.
    assert ClerkUserLink.objects.count() == 0
    assert get_user_model().objects.count() == 0
    assert signals_received == []

    retry = deliver(envelope, svix_id="msg_db_error")

    assert retry.status_code == 200
    assert retry.json() == {"status": "processed", "outcome": "created"}
    event.refresh_from_db()
    assert (event.status, event.outcome, event.attempts) == ("processed", "created", 2)
    assert event.last_error == ""
    assert get_user(CLERK_ID).first_name == "Example"
    assert len(user_saves) == 1
    assert [name for name, _ in signals_received] == ["synced"]


def test_raising_deleted_receiver_is_500_and_retry_resends_the_deletion(deliver):
    calls = []

    def receiver(sender, user, clerk_id, source, **kwargs):
        calls.append((user.pk, user.is_active, clerk_id, source))
        if len(calls) == 1:
            raise RuntimeError("the mailing list is down")

    assert deliver(load_event("user_created")).status_code == 200
    user_pk = get_user(CLERK_ID).pk
    clerk_user_deleted.connect(receiver, weak=False)
    try:
        first = deliver(load_event("user_deleted"), svix_id="msg_gone")
        event = WebhookEvent.objects.get(svix_id="msg_gone")
        failed = (event.status, event.outcome, event.attempts, event.signal_pending)
        retry = deliver(load_event("user_deleted"), svix_id="msg_gone")
    finally:
        clerk_user_deleted.disconnect(receiver)

    assert first.status_code == 500
    assert failed == ("failed", "deleted", 1, True)
    assert retry.status_code == 200
    assert retry.json() == {"status": "processed", "outcome": "deleted"}
    assert calls == [(user_pk, False, CLERK_ID, "webhook")] * 2
    assert ClerkUserLink.objects.get(clerk_id=CLERK_ID).is_tombstone
    assert get_user(CLERK_ID) is None


# --- 409: a permanent conflict -------------------------------------------------------


def test_unique_clash_is_409_abort_and_replay_after_fix_processes(
    deliver, unique_email_index, signals_received
):
    user_model = get_user_model()
    local = user_model.objects.create_user("ada-local", email=EMAIL)
    envelope = load_event("user_created")

    response = deliver(envelope, svix_id="msg_clash")

    assert response.status_code == 409
    assert response["webhook-delivery"] == "abort-message"
    assert response.json()["status"] == "failed"
    assert EMAIL not in response.content.decode()
    event = WebhookEvent.objects.get()
    assert (event.status, event.attempts) == ("failed", 1)
    assert event.outcome.startswith("permanent: SyncConflict: Clerk user " + CLERK_ID)
    assert "IntegrityError" in event.last_error
    assert user_model.objects.count() == 1
    assert ClerkUserLink.objects.count() == 0
    assert signals_received == []

    # A retry before anyone fixes it conflicts again, and is counted.
    again = deliver(envelope, svix_id="msg_clash")

    assert again.status_code == 409
    event.refresh_from_db()
    assert (event.status, event.attempts) == ("failed", 2)

    local.email = "ada-old@example.org"
    local.save()
    replay = deliver(envelope, svix_id="msg_clash")

    assert replay.status_code == 200
    assert replay.json() == {"status": "processed", "outcome": "created"}
    event.refresh_from_db()
    assert (event.status, event.outcome, event.attempts) == ("processed", "created", 3)
    assert event.last_error == ""
    synced = get_user(CLERK_ID)
    assert synced.email == EMAIL and synced.pk != local.pk
    assert user_model.objects.count() == 2
    assert len(signals_received) == 1


# --- rejections leak nothing ---------------------------------------------------------


def _rejection(name):
    """Build one rejected request: ``(body, headers, settings changes, status)``."""
    body = user_created_body()  # carries EMAIL
    headers = signed_headers(SECRET, body)
    changes = {}
    status = 400
    if name == "unsigned":
        headers = {}
    elif name == "wrong secret":
        headers = signed_headers(OTHER_SECRET, body)
    elif name == "altered body":
        body = body.replace(b"Example", b"Mallory")
    elif name == "stale timestamp":
        headers = signed_headers(SECRET, body, timestamp=time.time() - 600)
    elif name == "malformed signature":
        headers["svix-signature"] = "v1,a,b " + SECRET
    elif name == "no secret":
        changes = {"CLERK_WEBHOOK_SECRET": None}
        status = 503
    elif name == "body too large":
        changes = {"DATA_UPLOAD_MAX_MEMORY_SIZE": 100}
        status = 413
    return body, headers, changes, status


@pytest.mark.parametrize(
    "name",
    [
        "unsigned",
        "wrong secret",
        "altered body",
        "stale timestamp",
        "malformed signature",
        "no secret",
        "body too large",
    ],
)
def test_rejection_is_logged_with_its_reason_but_without_secret_or_email(
    post, db, caplog, name
):
    caplog.set_level(logging.DEBUG)
    body, headers, changes, status = _rejection(name)

    with override_settings(**changes):
        response = post(body, headers)

    assert response.status_code == status
    ours = [r for r in caplog.records if r.name == "django_clerk_sync.webhooks"]
    assert len(ours) == 1
    assert ours[0].levelno >= logging.WARNING
    if status == 400:
        assert response.json()["reason"] in ours[0].getMessage()
    texts = [response.content.decode(), caplog.text] + [
        r.getMessage() for r in caplog.records
    ]
    for text in texts:
        assert SECRET.removeprefix("whsec_") not in text
        assert EMAIL not in text
        assert "@" not in text
    assert_no_sync_rows()


def test_the_named_url_is_the_documented_one_with_its_slash(webhook_url):
    assert webhook_url == "/api/webhooks/clerk/"


def test_process_event_inside_a_transaction_waits_for_its_commit(
    deliver, signals_received
):
    """Inside an outer transaction (a TestCase, a shell session in atomic()), the
    change is made and the signal is sent when that transaction commits."""
    from django.db import transaction

    from django_clerk_sync.events import process_event, store_delivery

    event, _ = store_delivery("msg_in_atomic", to_body(load_event("user_created")))
    with transaction.atomic():
        assert process_event(event).status == "processed"
        assert get_user("user_29w83sxmDNGwOuEthce5gg56FcC") is not None
        assert signals_received == []
    assert [kind for kind, _ in signals_received] == ["synced"]


@pytest.mark.parametrize(
    "configured, status, problem",
    [
        (f'"{SECRET}"', 503, "entry 0 is wrapped in quotes"),
        (
            "whsec_" + base64.b64encode(b"ten bytes!").decode(),
            400,
            "entry 0 decodes to 10 bytes",
        ),
    ],
)
def test_a_refusal_log_names_what_is_wrong_with_the_configured_secret(
    client, webhook_url, transactional_db, caplog, settings, configured, status, problem
):
    """A mangled secret verifies nothing: the log says why, without showing it."""
    settings.CLERK_WEBHOOK_SECRET = configured
    body = to_body(load_event("user_created"))
    with caplog.at_level(logging.WARNING, logger="django_clerk_sync"):
        response = client.post(
            webhook_url,
            body,
            content_type="application/json",
            headers=signed_headers(SECRET, body),
        )
    assert response.status_code == status
    assert problem in caplog.text
    assert configured.removeprefix("whsec_").strip('"') not in caplog.text
    assert WebhookEvent.objects.count() == 0
