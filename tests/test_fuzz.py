"""Fuzzing the two doors anyone can knock on: the webhook endpoint and the session-token
middleware. Bounded and deterministic: Hypothesis with ``derandomize=True`` (the same
examples on every run) and no example database.

Every request goes through Django's test client (CSRF checks on for the webhook), with
real svix signing, a real database and the Clerk simulator serving the signing keys
over loopback. Nothing of ours is mocked.

What must hold, whatever arrives:

- the webhook answers 2xx or 4xx, never 5xx (a correctly signed but hostile body may
  be a 409 permanent failure, which docs/webhooks.md lists; a 500 is for transient
  failures only, and hostile input is not one);
- a request that cannot be verified writes nothing: the event log, the links and the
  user table keep their row counts ("no table growth from attackers");
- a body over ``DATA_UPLOAD_MAX_MEMORY_SIZE`` is refused before it is read;
- a token that is not a valid session token authenticates nobody, creates no user,
  and never makes a request fail.
"""

import asyncio
import base64
import hashlib
import hmac
import io
import json
import time
import tracemalloc

import pytest
from asgiref.sync import async_to_sync
from cryptography.hazmat.primitives.asymmetric import rsa
from django.contrib.auth import get_user_model
from django.http.cookie import parse_cookie
from django.test import AsyncClient, Client
from django.urls import reverse

pytest.importorskip(
    "hypothesis",
    reason="needs Hypothesis (the test extra): pip install 'hypothesis>=6.100'",
)
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from django_clerk_sync import sync, tokens
from django_clerk_sync.models import ClerkUserLink, WebhookEvent
from django_clerk_sync.testing import clerk_user, signed_headers
from django_clerk_sync.testing import event as clerk_event

from .conftest import SECRET
from .token_support import FRONTEND, clerk_env, fresh_verifiers, sim  # noqa: F401  (fixtures)

User = get_user_model()

FUZZ = settings(
    derandomize=True,  # the same examples on every run and every machine
    database=None,
    deadline=None,
    # Fixtures are shared by the examples of a test on purpose; each assertion is
    # about what one request changed.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

HEADERS = ("id", "timestamp", "signature")


def label(text):
    """Count a kind of example (``pytest --hypothesis-show-statistics`` lists them)."""
    if currently_in_test_context():
        event(text)


def sync_rows():
    return (
        WebhookEvent.objects.count(),
        ClerkUserLink.objects.count(),
        User.objects.count(),
    )


@pytest.fixture
def post(client, webhook_url):
    """POST ``body`` with exactly ``headers`` (CSRF checks on, as in production)."""

    def post(body, headers, **extra):
        return client.post(
            webhook_url,
            body,
            content_type="application/json",
            headers=headers,
            **extra,
        )

    return post


# --- webhook: requests that cannot be verified ----------------------------------------

GENUINE_BODY = clerk_event(
    "user.created",
    clerk_user("user_fuzzgenuine", email="fuzz@example.org", first_name="Fuzz"),
)

# What a WSGI server hands over: header bytes read as latin-1.
latin1_text = st.text(st.characters(max_codepoint=255), max_size=40)
utf8_as_latin1 = st.text(max_size=20).map(
    lambda text: text.encode("utf-8").decode("latin-1")
)
huge_values = st.sampled_from(
    [
        "v1," + "A" * 100_000,
        "9" * 100_000,
        "msg_" + "x" * 1_000_000,
        "v1,x " * 50_000,
        " " * 100_000,
        "é" * 50_000,
    ]
)


def mutated(text, data):
    """``text`` with one character replaced, inserted or removed."""
    if not text:
        return data.draw(latin1_text)
    at = data.draw(st.integers(0, len(text) - 1))
    how = data.draw(st.sampled_from(["replace", "insert", "remove"]))
    char = data.draw(st.characters(max_codepoint=255))
    if how == "remove":
        return text[:at] + text[at + 1 :]
    return text[:at] + char + text[at + (how == "replace") :]


def header_value(genuine, data):
    kind = data.draw(
        st.sampled_from(
            ["absent", "genuine", "mutated", "latin-1", "utf-8", "huge", "blank"]
        )
    )
    if kind == "absent":
        return None
    if kind == "genuine":
        return genuine
    if kind == "mutated":
        return mutated(genuine, data)
    if kind == "latin-1":
        return data.draw(latin1_text)
    if kind == "utf-8":
        return data.draw(utf8_as_latin1)
    if kind == "huge":
        return data.draw(huge_values)
    return data.draw(st.sampled_from(["", " ", "\t", "\x00", "v1,", "v1, ", ","]))


def body_value(genuine, data):
    kind = data.draw(
        st.sampled_from(
            [
                "genuine",
                "bit flip",
                "truncated",
                "extended",
                "invalid UTF-8",
                "random bytes",
                "deep",
            ]
        )
    )
    label(f"body: {kind}")
    if kind == "genuine":
        return genuine
    if kind == "bit flip":
        bit = data.draw(st.integers(0, len(genuine) * 8 - 1))
        flipped = bytearray(genuine)
        flipped[bit // 8] ^= 1 << (bit % 8)
        return bytes(flipped)
    if kind == "truncated":
        return genuine[: data.draw(st.integers(0, len(genuine) - 1))]
    if kind == "extended":
        return genuine + data.draw(st.binary(min_size=1, max_size=20))
    if kind == "invalid UTF-8":
        at = data.draw(st.integers(0, len(genuine)))
        bad = data.draw(
            st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80"])
        )
        return genuine[:at] + bad + genuine[at:]
    if kind == "random bytes":
        return data.draw(st.binary(max_size=300))
    return data.draw(
        st.sampled_from([b"[" * 100_000, b'{"a":' * 50_000, b"[" * 5000 + b"]" * 5000])
    )


def could_verify(body, headers):
    """Whether any signature header carries the HMAC of ``body`` under any of the ids
    and timestamps sent: only then may a request verify (HMAC-SHA256 is not guessed)."""
    key = base64.b64decode(SECRET.removeprefix("whsec_"))

    def values(name):
        return [
            value
            for header, value in headers.items()
            if header.lower() in (f"svix-{name}", f"webhook-{name}") and value
        ]

    signatures = " ".join(values("signature"))
    for msg_id in values("id"):
        for timestamp in values("timestamp"):
            signed = f"{msg_id}.{timestamp}.".encode("utf-8", "replace") + body
            digest = hmac.new(key, signed, hashlib.sha256).digest()
            if base64.b64encode(digest).decode() in signatures:
                return True
    return False


@settings(FUZZ, max_examples=400)
@given(data=st.data())
def test_unverifiable_deliveries_are_400_and_write_nothing(
    post, transactional_db, data
):
    genuine = signed_headers(SECRET, GENUINE_BODY)
    headers = {}
    for name in HEADERS:
        names = [("svix-",), ("webhook-",), ("SVIX-",), ("svix-", "webhook-")]
        for prefix in data.draw(st.sampled_from(names)):
            value = header_value(genuine[f"svix-{name}"], data)
            if value is not None:
                headers[prefix + name] = value
    body = body_value(GENUINE_BODY, data)
    verifiable = could_verify(body, headers)
    label("could verify" if verifiable else "cannot verify")
    before = sync_rows()

    response = post(body, headers)

    assert response.status_code < 500, response.content
    if not verifiable:
        assert response.status_code == 400, response.content
        assert response.json()["status"] == "rejected"
        assert sync_rows() == before


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000, b'{"data":' * 100_000, b"\xff" * 1000, b"\x00" * 1000, b""],
    ids=["deep array", "deep object", "invalid UTF-8", "NUL bytes", "empty"],
)
def test_unsigned_hostile_bodies_are_400_and_write_nothing(
    post, transactional_db, body
):
    headers = signed_headers(SECRET, GENUINE_BODY)  # the signature of another body
    before = sync_rows()

    response = post(body, headers)

    assert response.status_code == 400
    assert sync_rows() == before


# --- webhook: correctly signed, hostile bodies ----------------------------------------

# Raw JSON text, so escapes and numbers arrive exactly as written.
HOSTILE_JSON = [
    '"\\ud800"',  # a lone surrogate
    '"Zo\\udfff\\u0000e"',
    '"\\u0000"',
    '"' + "x" * 100_000 + '"',
    "9" * 5000,  # over Python's int digit limit
    "-" + "9" * 4200,
    str(2**64),
    "1e999999",
    "NaN",
    "-Infinity",
    "[" * 2000 + "]" * 2000,
    '{"a":' * 2000 + "1" + "}" * 2000,
    "true",
    "null",
    "[]",
    "{}",
    '"user_fuzz1"',
    '"user_fuzz1 "',
    '"user_\\u00e9"',
    '"' + "user_" + "a" * 300 + '"',
]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
# Strings as JSON escapes, so NUL and lone surrogates (valid JSON, not valid UTF-8
# once decoded) arrive as Clerk would relay them.
hostile_strings = st.lists(
    st.sampled_from(["\\ud800", "\\udfff", "\\u0000", "\\n", '\\"', "é", "x", " "]),
    min_size=1,
    max_size=12,
).map(lambda pieces: '"' + "".join(pieces) + '"')
raw_json = st.one_of(
    json_values.map(json.dumps), st.sampled_from(HOSTILE_JSON), hostile_strings
)

# The keys the sync path reads, and a few it does not.
DATA_KEYS = [
    "id",
    "first_name",
    "last_name",
    "username",
    "email_addresses",
    "primary_email_address_id",
    "updated_at",
    "created_at",
    "deleted",
    "unsafe_metadata",
    "public_metadata",
    "private_metadata",
]
TEXT_KEYS = ["first_name", "last_name", "username"]


def as_raw(mapping):
    return "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in mapping.items()) + "}"


@st.composite
def hostile_signed_bodies(draw):
    """Mostly ``user.*`` events for a few Clerk ids (so that creations, updates and
    deletions meet), with hostile values in the keys the sync path reads; sometimes
    a ``data`` or a whole body that is hostile itself."""
    clerk_id = draw(st.sampled_from(["user_fuzz1", "user_fuzz2", "user_fuzz3"]))
    email = draw(st.sampled_from([None, "a@example.org", "b@example.org"]))
    data = {
        key: json.dumps(value)
        for key, value in clerk_user(
            clerk_id,
            email=email,
            username=draw(st.sampled_from([None, "fuzz", "Fuzz"])),
            updated_at=draw(st.integers(0, 10**13)),
        ).items()
    }
    if email and draw(st.booleans()):
        entry = as_raw({"id": '"idn_x"', "email_address": draw(raw_json)})
        data["email_addresses"] = f"[{entry}]"
        data["primary_email_address_id"] = '"idn_x"'
    for key in draw(st.lists(st.sampled_from(TEXT_KEYS), max_size=3, unique=True)):
        data[key] = draw(st.one_of(hostile_strings, raw_json))
    for key in draw(st.lists(st.sampled_from(DATA_KEYS), max_size=3, unique=True)):
        data[key] = draw(raw_json)
    shape = draw(
        st.sampled_from(["user object"] * 4 + ["data replaced", "body replaced"])
    )
    label(f"signed body: {shape}")
    if shape == "body replaced":
        return draw(raw_json).encode("utf-8")
    event_type = draw(
        st.sampled_from(["user.created", "user.updated"] * 3 + ["user.deleted"]).map(
            json.dumps
        )
        | st.sampled_from(['"session.created"', '"user.createdx"'])
        | raw_json
    )
    envelope = {
        "object": '"event"',
        "type": event_type,
        "data": as_raw(data) if shape == "user object" else draw(raw_json),
    }
    return as_raw(envelope).encode("utf-8")


def assert_acceptable_answer_to_a_signed_delivery(response, svix_id, body):
    """2xx, or the documented 409 permanent failure; and the delivery is stored."""
    assert response.status_code in (200, 409), response.content
    stored = WebhookEvent.objects.get(svix_id=svix_id)
    assert bytes(stored.body) == body
    if response.status_code == 409:
        label("409 permanent failure")
        assert response["webhook-delivery"] == "abort-message"
        assert response.json()["status"] == "failed"
        assert stored.status == "failed"
        assert stored.outcome.startswith("permanent: ")
    else:
        label(f"200 {response.json()['status']}")
        assert response.json()["status"] in ("processed", "ignored")
        assert stored.status == response.json()["status"]


_signed = iter(range(10**9))


@settings(FUZZ, max_examples=250)
@given(body=hostile_signed_bodies())
def test_signed_hostile_bodies_are_never_a_5xx(deliver, body):
    svix_id = f"msg_fuzz_{next(_signed)}"

    response = deliver(body, svix_id=svix_id)
    again = deliver(body, svix_id=svix_id)  # Svix's retry, or a dashboard replay

    assert_acceptable_answer_to_a_signed_delivery(response, svix_id, body)
    assert again.status_code == response.status_code
    if again.status_code == 200:
        assert again.json()["duplicate"] is True


@pytest.fixture
def admin_client(db):
    client = Client()
    client.force_login(User.objects.create_superuser("fuzz-admin", "", "pw"))
    return client


def assert_shown_in_the_admin(admin_client, svix_id):
    """The stored delivery's admin page opens: an operator can look at it."""
    stored = WebhookEvent.objects.get(svix_id=svix_id)
    page = admin_client.get(
        reverse("admin:django_clerk_sync_webhookevent_change", args=[stored.pk])
    )
    assert page.status_code == 200
    assert svix_id.encode() in page.content


def _deepest_parsable():
    """The deepest array nesting ``json.loads`` parses from this test's frame."""
    low, high = 1, 100_000
    while low < high:
        middle = (low + high + 1) // 2
        try:
            json.loads("[" * middle + "]" * middle)
            low = middle
        except RecursionError:
            high = middle - 1
    return low


@pytest.mark.parametrize(
    "where",
    ["first_name", "username", "email_addresses", "updated_at", "unsafe_metadata"],
)
def test_signed_nesting_at_every_depth_near_the_parser_limit(
    deliver, admin_client, where
):
    """Nesting the parser just manages, reaching code that recurses again (the JSON
    encoder writing a list into a text field, the admin pretty-printing the body):
    2xx or 409, never a 500, and the stored event can be looked at."""
    limit = _deepest_parsable()
    assert limit < 100_000  # the parser has a limit to test around
    statuses = set()
    for depth in range(max(1, limit - 120), limit + 10, 3):
        nested = "[" * depth + "]" * depth
        data = {
            key: json.dumps(value)
            for key, value in clerk_user(f"user_deep{depth}", first_name="Ada").items()
        }
        data[where] = nested
        body = as_raw(
            {"object": '"event"', "type": '"user.created"', "data": as_raw(data)}
        ).encode()
        svix_id = f"msg_deep_{where}_{depth}"

        response = deliver(body, svix_id=svix_id)

        assert_acceptable_answer_to_a_signed_delivery(response, svix_id, body)
        assert_shown_in_the_admin(admin_client, svix_id)
        statuses.add(response.status_code)

    assert statuses == {200, 409}  # both sides of the limit were reached


# --- webhook: bodies over DATA_UPLOAD_MAX_MEMORY_SIZE ---------------------------------


class Stream(io.RawIOBase):
    """A ``wsgi.input`` of ``size`` bytes made on demand, that counts what is read and
    fails the test if more than ``allowed`` bytes are asked for."""

    def __init__(self, size, allowed):
        self.size, self.allowed, self.read_so_far = size, allowed, 0

    def readable(self):
        return True

    def read(self, n=-1):
        wanted = self.size - self.read_so_far if n is None or n < 0 else n
        wanted = min(wanted, self.size - self.read_so_far)
        if self.read_so_far + wanted > self.allowed:
            raise AssertionError(f"read {self.read_so_far + wanted} bytes of the body")
        self.read_so_far += wanted
        return b"{" * wanted

    def readline(self, size=-1):
        return self.read(size)


@pytest.mark.parametrize(
    "size", [2_621_441, 10**9, 10**15], ids=["one byte over", "1 GB", "1 PB"]
)
def test_a_body_over_the_upload_limit_is_refused_before_it_is_read(
    post, transactional_db, settings, size
):
    assert settings.DATA_UPLOAD_MAX_MEMORY_SIZE == 2_621_440  # Django's default
    stream = Stream(size, allowed=0)
    before = sync_rows()

    response = post(
        b"",
        signed_headers(SECRET, GENUINE_BODY),
        CONTENT_LENGTH=str(size),
        **{"wsgi.input": stream},
    )

    assert response.status_code == 413
    assert response.json() == {"status": "rejected", "reason": "body too large"}
    assert stream.read_so_far == 0
    assert sync_rows() == before


def test_refusing_a_huge_body_takes_no_memory_to_speak_of(post, transactional_db):
    size = 256 * 1024 * 1024
    post(b"", signed_headers(SECRET, GENUINE_BODY))  # warm up imports and caches
    tracemalloc.start()
    try:
        response = post(
            b"",
            signed_headers(SECRET, GENUINE_BODY),
            CONTENT_LENGTH=str(size),
            **{"wsgi.input": Stream(size, allowed=size)},
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert response.status_code == 413
    assert peak < size // 64  # a few hundred KB at most, against 256 MB offered


def asgi_post(path, headers, *, chunks, chunk):
    """POST through Django's own ASGI handler, as uvicorn or daphne call it: ``chunks``
    body messages of the same ``chunk`` bytes, no Content-Length (a chunked upload).
    Returns ``(status, body)``."""
    from django.core.handlers.asgi import ASGIHandler

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/json")]
        + [(name.encode(), value.encode("latin-1")) for name, value in headers.items()],
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
    }
    remaining = chunks
    sent = []

    async def receive():
        nonlocal remaining
        if remaining:
            remaining -= 1
            return {"type": "http.request", "body": chunk, "more_body": remaining > 0}
        await asyncio.Event().wait()  # the client waits for the answer

    async def send(message):
        sent.append(message)

    async_to_sync(ASGIHandler())(scope, receive, send)
    [start] = [m for m in sent if m["type"] == "http.response.start"]
    body = b"".join(
        m.get("body", b"") for m in sent if m["type"] == "http.response.body"
    )
    return start["status"], body


def test_a_chunked_asgi_body_over_the_limit_is_refused_without_reading_it_all(
    webhook_url, transactional_db
):
    """Under ASGI a chunked upload has no Content-Length to refuse it by: the server
    spools it (to disk past FILE_UPLOAD_MAX_MEMORY_SIZE), and the view must not then
    read it into memory."""
    before = sync_rows()
    chunk = b"{" * (1024 * 1024)
    headers = signed_headers(SECRET, GENUINE_BODY)
    asgi_post(webhook_url, headers, chunks=1, chunk=b"{}")  # imports, middleware
    tracemalloc.start()
    try:
        status, body = asgi_post(webhook_url, headers, chunks=64, chunk=chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert (status, json.loads(body)) == (
        413,
        {"status": "rejected", "reason": "body too large"},
    )
    # The spool's in-memory part (FILE_UPLOAD_MAX_MEMORY_SIZE) and a chunk or two,
    # not the 64 MB sent.
    assert peak < 8 * len(chunk)
    assert sync_rows() == before


@pytest.mark.parametrize(
    "declared, sent", [(None, 10**9), (100, 10**9)], ids=["no length", "understated"]
)
def test_only_the_declared_length_is_ever_read(post, transactional_db, declared, sent):
    """Without a Content-Length, or with one smaller than what is sent, no more than
    the declared bytes are read: the rest never reaches memory, and what was read does
    not verify."""
    stream = Stream(sent, allowed=declared or 0)
    extra = {"wsgi.input": stream}
    if declared is not None:
        extra["CONTENT_LENGTH"] = str(declared)
    before = sync_rows()

    response = post(b"", signed_headers(SECRET, GENUINE_BODY), **extra)

    assert response.status_code == 400
    assert stream.read_so_far == (declared or 0)
    assert sync_rows() == before


# --- session tokens -------------------------------------------------------------------

CLERK_ID = "user_2fuzzlinked"
OTHER_ID = "user_2fuzzother"
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def b64url(data):
    if not isinstance(data, bytes):
        data = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment_bytes(segment):
    """A segment's bytes, read as leniently as base64 allows (``None`` if it is not
    base64url at all)."""
    try:
        standard = segment.translate(str.maketrans("-_", "+/"))
        return base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except (ValueError, TypeError):
        return None


def same_token(candidate, original):
    """Whether ``candidate`` spells exactly the bytes ``original`` does. Base64 leaves
    the unused low bits of a segment's last character free, so a few one-character
    changes still say the same signed thing: that is not a forgery."""
    parts = candidate.split(".")
    if len(parts) != 3:
        return False
    decoded = [segment_bytes(part) for part in parts]
    return None not in decoded and decoded == [
        segment_bytes(part) for part in original.split(".")
    ]


@pytest.fixture
def linked_users(db):
    for clerk_id, username in ((CLERK_ID, "ada"), (OTHER_ID, "grace")):
        sync.sync_user(clerk_user(clerk_id, username=username), source="webhook")


@pytest.fixture
def tokens_of(sim):
    """Valid tokens (an hour long, so every example sees them valid) and an attacker's
    key."""
    return {
        "ada": sim.mint_session_token(CLERK_ID, lifetime=3600),
        "grace": sim.mint_session_token(OTHER_ID, lifetime=3600),
        "stranger": sim.mint_session_token("user_2stranger", lifetime=3600),
        "attacker key": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    }


def reencoded(token, *, header=None, payload=None):
    """``token`` with its header or payload changed and re-encoded, not re-signed."""
    h, p, s = token.split(".")
    if header is not None:
        h = b64url({**json.loads(segment_bytes(h)), **header})
    if payload is not None:
        p = b64url({**json.loads(segment_bytes(p)), **payload})
    return f"{h}.{p}.{s}"


HEADER_CHANGES = [
    {"alg": "none"},
    {"alg": "HS256"},
    {"alg": "RS512"},
    {"alg": "rs256"},
    {"alg": None},
    {"kid": "ins_2someoneelse"},
    {"kid": ""},
    {"kid": 7},
    {"kid": None},
    {"kid": "../../../etc/passwd"},
    {"cat": "cl_B7d4PD222AAA"},
    {"cat": None},
    {"crit": ["exp"]},
    {"jku": "https://evil.example.com/jwks.json"},
    {"typ": "at+jwt"},
]
PAYLOAD_CHANGES = [
    {"sub": OTHER_ID},
    {"sub": "user_2stranger"},
    {"exp": 4102444800},
    {"iss": "https://evil.example.com"},
    {"azp": "https://evil.example.com"},
    {"sts": "active"},
    {"sid": "sess_2other"},
]


@st.composite
def hostile_tokens(draw, tokens_of, sim):
    ada = tokens_of["ada"]
    kind = draw(
        st.sampled_from(
            [
                "one character",
                "several characters",
                "segments rearranged",
                "segments mixed",
                "header re-encoded",
                "payload re-encoded",
                "foreign key",
                "foreign key, jwk header",
                "HS256 with the public key",
                "random text",
                "random bytes",
                "giant",
            ]
        )
    )
    label(f"token: {kind}")
    if kind in ("one character", "several characters"):
        token = ada
        for _ in range(1 if kind == "one character" else draw(st.integers(2, 5))):
            at = draw(st.integers(0, len(token) - 1))
            char = draw(st.sampled_from(B64URL + ".=+/ é\x00") | st.characters())
            how = draw(st.sampled_from(["replace", "insert", "remove"]))
            if how == "remove":
                token = token[:at] + token[at + 1 :]
            else:
                token = token[:at] + char + token[at + (how == "replace") :]
        return token
    if kind == "segments rearranged":
        parts = ada.split(".")
        order = draw(
            st.lists(st.integers(0, 2), min_size=1, max_size=5).filter(
                lambda o: o != [0, 1, 2]
            )
        )
        return ".".join(parts[i] for i in order)
    if kind == "segments mixed":
        sources = [tokens_of[name].split(".") for name in ("ada", "grace", "stranger")]
        # Every token of the instance has the same header; a payload with its own
        # signature is simply that token, so the signature comes from another one.
        header, payload = draw(st.integers(0, 2)), draw(st.integers(0, 2))
        signature = draw(st.sampled_from([n for n in range(3) if n != payload]))
        return ".".join(
            (sources[header][0], sources[payload][1], sources[signature][2])
        )
    if kind == "header re-encoded":
        return reencoded(ada, header=draw(st.sampled_from(HEADER_CHANGES)))
    if kind == "payload re-encoded":
        return reencoded(ada, payload=draw(st.sampled_from(PAYLOAD_CHANGES)))
    if kind == "foreign key":
        return sim.mint_session_token(
            draw(st.sampled_from([CLERK_ID, "user_2stranger"])),
            key=tokens_of["attacker key"],
        )
    if kind == "foreign key, jwk header":
        # The attacker's key named in the header (a JWS "jwk" header) is never used.
        numbers = tokens_of["attacker key"].public_key().public_numbers()
        jwk = {
            "kty": "RSA",
            "kid": sim.kid,
            "n": b64url(numbers.n.to_bytes(256, "big")),
            "e": b64url(numbers.e.to_bytes(3, "big")),
        }
        return sim.mint_session_token(
            CLERK_ID, headers={"jwk": jwk}, key=tokens_of["attacker key"]
        )
    if kind == "HS256 with the public key":
        h = b64url({"alg": "HS256", "cat": tokens.SESSION_TOKEN_CAT, "kid": sim.kid})
        p = ada.split(".")[1]
        mac = hmac.new(
            sim.public_key_pem.encode(), f"{h}.{p}".encode(), hashlib.sha256
        ).digest()
        return f"{h}.{p}.{b64url(mac)}"
    if kind == "random text":
        return draw(st.text(max_size=200))
    if kind == "random bytes":
        return draw(st.binary(max_size=400)).decode("latin-1")
    size = draw(st.sampled_from([16 * 1024 - 1, 16 * 1024, 16 * 1024 + 1, 10**6]))
    return (ada * (size // len(ada) + 1))[:size]


def whoami(client, **extra):
    response = client.get("/whoami/", **extra)
    assert response.status_code == 200, response.content
    return response.json()


def awhoami(headers):
    """The same, through Django's ASGI handler and the middleware's async path."""

    async def get():
        return await AsyncClient().get("/awhoami/", headers=headers)

    response = async_to_sync(get)()
    assert response.status_code == 200, response.content
    return response.json()


def wsgi_text(token):
    return token.encode("utf-8", "surrogatepass").decode("latin-1")


REASONS = set(vars(tokens.Reason).values())


@settings(FUZZ, max_examples=400)
@given(data=st.data())
def test_hostile_tokens_authenticate_nobody_and_never_fail_a_request(
    sim, clerk_env, linked_users, tokens_of, data
):
    """Anything in the Authorization header or a session cookie, under WSGI and ASGI:
    the request is answered, nobody is authenticated and no user is created, unless
    the bytes are exactly those of Ada's valid token."""
    token = data.draw(hostile_tokens(tokens_of, sim))
    where = data.draw(st.sampled_from(["bearer", "cookie", "suffixed cookie"]))
    value = wsgi_text(token)  # servers hand header bytes over as latin-1
    if where == "bearer":
        headers = {"Authorization": f"Bearer {value}"}
        seen = value.strip()  # what the server takes from the header
    else:
        name = "__session"
        if where == "suffixed cookie":
            name += "_" + tokens.session_cookie_suffix(sim.publishable_key)
        headers = {"Cookie": f"{name}={value}"}
        seen = parse_cookie(headers["Cookie"]).get(name, "")
    before = (User.objects.count(), ClerkUserLink.objects.count())

    if data.draw(st.sampled_from(["WSGI", "ASGI"]), label="handler") == "WSGI":
        body = whoami(Client(), headers=headers)
    else:
        body = awhoami(headers)

    assert (User.objects.count(), ClerkUserLink.objects.count()) == before
    assert body["rejection"] is None or body["rejection"] in REASONS
    if same_token(seen, tokens_of["ada"]) and body["authenticated"]:
        # The same signed bytes, spelled differently: Ada's own token.
        label("an equivalent spelling of the valid token")
        assert (body["user"], body["clerk_user_id"]) == ("ada", CLERK_ID)
        return
    assert body["authenticated"] is False, (seen[:200], body)
    assert body["user"] is None and body["clerk_user_id"] is None
    assert body["session_id"] is None


def signed_token(sim, payload_text, header=None):
    """A token whose payload is ``payload_text`` exactly, signed with the instance's
    own key: what Clerk could send, with claims as odd as a user's metadata copied
    into a customised session token."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    header = header or {"alg": "RS256", "cat": tokens.SESSION_TOKEN_CAT, "kid": sim.kid}
    signing_input = f"{b64url(header)}.{b64url(payload_text.encode('utf-8'))}"
    signature = sim.private_key.sign(
        signing_input.encode(), padding.PKCS1v15(), hashes.SHA256()
    )
    return f"{signing_input}.{b64url(signature)}"


def nested(depth, kind, innermost="1"):
    if kind == "arrays":
        return "[" * depth + innermost + "]" * depth
    return '{"a":' * depth + innermost + "}" * depth


claim_values = st.one_of(
    json_values.map(json.dumps),
    st.sampled_from([text for text in HOSTILE_JSON if len(text) < 4000]),
    hostile_strings,
)
CLAIM_NAMES = [
    *("sub", "sid", "exp", "iat", "nbf", "azp", "sts", "act", "o", "iss", "v"),
    *("org_id", "org_slug", "org_role", "fea", "pla", "fva", "jti"),
]


@st.composite
def signed_claims(draw, sim):
    """Raw JSON text for a payload: valid claims, some replaced by hostile values,
    and custom claims (nested as deep as a token has room for)."""
    now = int(time.time())
    claims = {
        "azp": json.dumps(FRONTEND),
        "exp": str(now + 3600),
        "iat": str(now),
        "nbf": str(now - 10),
        "iss": json.dumps(sim.issuer),
        "sid": '"sess_2fuzz"',
        "sub": json.dumps(draw(st.sampled_from([CLERK_ID, OTHER_ID, "user_2fresh"]))),
        "v": "2",
    }
    for name in draw(st.lists(st.sampled_from(CLAIM_NAMES), max_size=3, unique=True)):
        claims[name] = draw(claim_values)
    custom = st.lists(st.sampled_from(["meta", "act", "o", "fea"]), max_size=2)
    for name in draw(custom):
        claims[name] = nested(
            draw(st.sampled_from([2, 50, 300, 450, 500, 600, 700, 900, 1200, 5000])),
            draw(st.sampled_from(["arrays", "objects"])),
            innermost=draw(st.sampled_from(["1", '"x"', "{}"])),
        )
    return as_raw(claims)


@settings(FUZZ, max_examples=200)
@given(data=st.data())
def test_signed_tokens_with_hostile_claims_never_fail_a_request(
    sim, clerk_env, linked_users, data
):
    """Only Clerk signs; but Clerk copies what users write (metadata, names) into
    customised session tokens. Whatever the claims, a view that reads every shortcut
    of ``request.clerk`` and the claims themselves answers, and only a token naming
    a Clerk user in ``sub`` authenticates, as that user."""
    payload = data.draw(signed_claims(sim))
    token = signed_token(sim, payload)

    response = Client().get("/claims/", HTTP_AUTHORIZATION=f"Bearer {token}")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["rejection"] is None or body["rejection"] in REASONS
    label(f"rejection: {body['rejection']}")
    if body["authenticated"]:
        sub = json.loads(payload)["sub"]
        assert body["clerk_user_id"] == sub
        assert {"sub", "sid", "exp", "iat"} <= set(body["claim_names"])
    else:
        assert "claim_names" not in body


def test_the_unmutated_tokens_do_authenticate(sim, clerk_env, linked_users, tokens_of):
    """The fuzzing above starts from tokens that really work: it would notice."""
    ada = whoami(Client(), HTTP_AUTHORIZATION=f"Bearer {tokens_of['ada']}")
    cookie = whoami(Client(), HTTP_COOKIE=f"__session={tokens_of['grace']}")

    assert (ada["user"], ada["clerk_user_id"]) == ("ada", CLERK_ID)
    assert (cookie["user"], cookie["clerk_user_id"]) == ("grace", OTHER_ID)


@pytest.mark.parametrize(
    "extra",
    [
        {"HTTP_AUTHORIZATION": "Bearer " + "a" * 10**6},
        {"HTTP_AUTHORIZATION": "Bearer " + "a." * 500_000},
        {"HTTP_AUTHORIZATION": "B" * 10**6},
        {"HTTP_COOKIE": "__session=" + "a" * 10**6},
        {"HTTP_COOKIE": "; ".join(f"c{n}={n}" for n in range(20_000))},
        {"HTTP_COOKIE": "__session=" + "é\x00\x7f" * 1000},
    ],
    ids=[
        "1 MB bearer",
        "1 MB of segments",
        "1 MB scheme",
        "1 MB cookie",
        "20,000 cookies",
        "odd cookie bytes",
    ],
)
def test_giant_and_odd_token_carriers(sim, clerk_env, linked_users, extra):
    before = User.objects.count()

    body = whoami(Client(), **extra)

    assert body["authenticated"] is False and body["clerk_user_id"] is None
    assert User.objects.count() == before
    assert sim.request_count() == 0  # nothing in them was worth fetching keys for
