"""The Clerk simulator, exercised over real HTTP the way the backfill and the
middleware will use it: Clerk's paging quirks, auth, rate limits, faults, JWKS and
session tokens, and webhook delivery to a live Django server."""

import base64
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from django.test import override_settings
from django.urls import reverse

from django_clerk_sync import get_user, tokens
from django_clerk_sync.simulator import ClerkSimulator

from .conftest import SECRET

REPO_ROOT = Path(__file__).resolve().parent.parent
KEY = "sk_test_simulator"


# One RSA key for the module's simulators keeps the file fast; rotation tests make their own.
SHARED_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def sim():
    with ClerkSimulator(
        secret_key=KEY, rate_limit=None, private_key=SHARED_KEY
    ) as simulator:
        yield simulator


def call(sim, path, *, key=KEY, method="GET"):
    """``(status, headers, parsed JSON)`` for one request; never raises for a status."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    request = urllib.request.Request(sim.url + path, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.headers, json.loads(error.read())


def ids(users):
    return [user["id"] for user in users]


def assert_clerk_error(body, code):
    assert body["errors"][0]["code"] == code
    assert {"message", "long_message", "code", "meta"} <= set(body["errors"][0])


# --------------------------------------------------------------------- /v1/users


def test_default_page_is_10_users_newest_first(sim):
    added = sim.add_users(25)

    status, _, page = call(sim, "/v1/users")

    assert status == 200
    assert isinstance(page, list)  # a bare array, no envelope
    assert ids(page) == ids(added[::-1][:10])
    assert page[0]["object"] == "user" and "primary_email_address_id" in page[0]


@pytest.mark.parametrize("limit", ["0", "501", "-5", "abc", "", "2.5"])
def test_an_out_of_range_or_bad_limit_silently_gives_10(sim, limit):
    sim.add_users(25)
    assert len(call(sim, f"/v1/users?limit={limit}")[2]) == 10


def test_limits_1_and_500_are_honoured(sim):
    sim.add_users(501)
    assert len(call(sim, "/v1/users?limit=1")[2]) == 1
    assert len(call(sim, "/v1/users?limit=500")[2]) == 500


def test_offset_paging_in_created_at_order_sees_every_user_once(sim):
    added = sim.add_users(23)
    for order_by in ["%2Bcreated_at", "created_at"]:
        seen, offset = [], 0
        while True:
            page = call(sim, f"/v1/users?order_by={order_by}&limit=5&offset={offset}")[
                2
            ]
            seen += ids(page)
            offset += 5
            if len(page) < 5:
                break
        assert seen == ids(added)


def test_newest_first_offset_paging_shifts_while_users_sign_up(sim):
    sim.add_users(10)
    first = call(sim, "/v1/users?limit=5")[2]
    sim.add_user(email="new1@example.com")
    sim.add_user(email="new2@example.com")
    second = call(sim, "/v1/users?limit=5&offset=5")[2]
    # The two sign-ups pushed the last two users of page 1 onto page 2.
    assert ids(second)[:2] == ids(first)[3:]


def test_created_at_after_and_before_are_strict(sim):
    for created_at in [1000, 2000, 3000, 4000]:
        sim.add_user(created_at=created_at)
    page = call(sim, "/v1/users?created_at_after=1000&created_at_before=4000")[2]
    assert [user["created_at"] for user in page] == [3000, 2000]
    assert call(sim, "/v1/users/count?created_at_after=1000")[2]["total_count"] == 3


def test_starting_after_cursor_in_both_orders(sim):
    added = sim.add_users(12)
    cursor = added[4]["id"]

    ascending = call(
        sim, f"/v1/users?order_by=%2Bcreated_at&starting_after={cursor}&limit=3"
    )
    descending = call(sim, f"/v1/users?starting_after={cursor}&limit=3")

    assert ids(ascending[2]) == ids(added[5:8])
    assert ids(descending[2]) == ids(added[1:4][::-1])


def test_cursor_of_a_user_deleted_since_still_marks_its_place(sim):
    added = sim.add_users(6)
    sim.delete_user(added[2]["id"])
    page = call(
        sim, f"/v1/users?order_by=%2Bcreated_at&starting_after={added[2]['id']}"
    )[2]
    assert ids(page) == ids(added[3:])


def test_starting_after_with_offset_or_an_unknown_id_is_a_400(sim):
    user = sim.add_user()
    status, _, body = call(sim, f"/v1/users?starting_after={user['id']}&offset=0")
    assert status == 400
    assert_clerk_error(body, "form_param_value_invalid")
    assert call(sim, "/v1/users?starting_after=user_nobody")[0] == 400


def test_user_id_filters_and_count(sim):
    added = sim.add_users(8)
    wanted = [added[1]["id"], added[6]["id"]]

    page = call(sim, f"/v1/users?user_id[]={wanted[0]}&user_id[]={wanted[1]}")[2]
    single = call(sim, f"/v1/users?user_id={wanted[0]}")[2]

    assert ids(page) == wanted[::-1]
    assert ids(single) == wanted[:1]
    assert call(sim, "/v1/users/count")[2] == {
        "object": "total_count",
        "total_count": 8,
    }
    assert call(sim, f"/v1/users/count?user_id[]={wanted[0]}")[2]["total_count"] == 1


def test_one_user_by_id_or_a_clerk_shaped_404(sim):
    user = sim.add_user("user_ada", email="ada@example.com")
    assert call(sim, "/v1/users/user_ada")[2] == user
    status, _, body = call(sim, "/v1/users/user_nobody")
    assert status == 404
    assert_clerk_error(body, "resource_not_found")


def test_updates_and_deletes_are_live(sim):
    user = sim.add_user("user_ada", email="ada@example.com")
    updated = sim.update_user("user_ada", first_name="Ada", email="ada@new.example")
    assert updated["updated_at"] > user["updated_at"]
    served = call(sim, "/v1/users/user_ada")[2]
    assert served["first_name"] == "Ada"
    assert served["email_addresses"][0]["email_address"] == "ada@new.example"

    sim.delete_user("user_ada")
    assert call(sim, "/v1/users")[2] == [] and sim.users == []


def test_add_users_mix_is_realistic_and_deterministic():
    with ClerkSimulator(rate_limit=None) as one, ClerkSimulator(rate_limit=None) as two:
        users = one.add_users(200, seed=7)
        again = two.add_users(200, seed=7)

    def content(user):
        return {
            k: v
            for k, v in user.items()
            if k not in ("created_at", "updated_at", "last_sign_in_at")
        }

    assert [content(u) for u in users] == [content(u) for u in again]
    assert len(set(ids(users))) == 200
    created = [user["created_at"] for user in users]
    assert created == sorted(set(created))  # strictly increasing

    def primary(user):
        return [
            e
            for e in user["email_addresses"]
            if e["id"] == user["primary_email_address_id"]
        ]

    phone_only = [u for u in users if not u["email_addresses"] and u["phone_numbers"]]
    several = [u for u in users if len(u["email_addresses"]) > 1]
    assert phone_only and all(u["primary_email_address_id"] is None for u in phone_only)
    assert several and all(len(primary(u)) == 1 for u in several)
    assert any(primary(u)[0] is not u["email_addresses"][0] for u in several)
    assert {u["username"] is None for u in users} == {True, False}
    assert any(u["image_url"] == "" for u in users)
    assert any(u["private_metadata"] is None for u in users)
    emails = [e["email_address"] for u in users for e in u["email_addresses"]]
    assert len(emails) == len(set(emails))


# --------------------------------------------------------------------- auth, limits, faults


@pytest.mark.parametrize(
    "authorization", [None, "Bearer sk_test_wrong", "Basic " + KEY, KEY, "Bearer"]
)
def test_backend_api_needs_the_secret_key(sim, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    request = urllib.request.Request(sim.url + "/v1/users", headers=headers)
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=5)
    assert error.value.code == 401
    assert_clerk_error(json.loads(error.value.read()), "authentication_invalid")
    assert call(sim, "/v1/jwks", key=None)[0] == 401


def test_over_the_rate_limit_is_429_with_retry_after_until_the_window_passes():
    with ClerkSimulator(rate_limit=(3, 0.5)) as sim:
        assert [call(sim, "/v1/users")[0] for _ in range(3)] == [200] * 3

        status, headers, body = call(sim, "/v1/users/count")

        assert status == 429
        assert headers["Retry-After"] == "1"  # whole seconds, rounded up
        assert_clerk_error(body, "too_many_requests")
        # Neither JWKS path is rate-limited.
        assert call(sim, "/v1/jwks")[0] == 200
        assert call(sim, "/.well-known/jwks.json", key=None)[0] == 200
        time.sleep(0.55)
        assert call(sim, "/v1/users")[0] == 200


def test_fail_next_then_recovery(sim):
    sim.fail_next(2, status=503)
    sim.fail_next(1, status=429)
    statuses = [call(sim, "/v1/users")[:2] for _ in range(4)]
    assert [status for status, _ in statuses] == [503, 503, 429, 200]
    assert statuses[2][1]["Retry-After"] == "1"
    assert_clerk_error(call(sim, "/v1/users", key=None)[2], "authentication_invalid")

    sim.fail_next(1, status=500, path_prefix="/.well-known/")
    assert call(sim, "/v1/jwks")[0] == 200  # another prefix: untouched
    status, _, body = call(sim, "/.well-known/jwks.json")
    assert status == 500
    assert_clerk_error(body, "internal_clerk_error")


def test_delay_slows_every_answer(sim):
    sim.delay = 0.3
    started = time.monotonic()
    assert call(sim, "/.well-known/jwks.json")[0] == 200
    assert time.monotonic() - started >= 0.3


def test_unavailable_server_drops_connections_unanswered(sim):
    sim.available = False
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(sim.jwks_url, timeout=5)
    assert sim.requests[-1].status is None

    sim.available = True
    assert call(sim, "/.well-known/jwks.json")[0] == 200


def test_requests_are_recorded_and_counted(sim):
    call(sim, "/v1/users?limit=5&user_id[]=a&user_id[]=b")
    call(sim, "/v1/users/count")
    call(sim, "/.well-known/jwks.json")

    assert sim.requests[0] == (
        "GET",
        "/v1/users",
        {"limit": "5", "user_id[]": ["a", "b"]},
        200,
    )
    assert sim.request_count() == 3
    assert sim.request_count("/v1/users") == 2
    sim.reset_counts()
    assert sim.request_count() == 0


@pytest.mark.parametrize(
    "path, status",
    [
        ("/v1/users?offset=abc", 400),
        ("/v1/users?offset=-1", 400),
        ("/v1/users?created_at_after=yesterday", 400),
        ("/v1/users?order_by=-email_address", 400),
        ("/v1/users?%ff%fe=%ff&limit=%00", 200),
        ("/v1/users/user_a/extra", 404),
        ("/v1/organizations", 404),
        ("/", 404),
    ],
)
def test_odd_requests_get_clerk_shaped_answers(sim, path, status):
    answer = call(sim, path)
    assert answer[0] == status
    if status != 200:
        assert answer[2]["errors"]


def test_other_methods_and_garbage_request_lines_get_json(sim):
    status, _, body = call(sim, "/v1/users", method="POST")
    assert status == 404 and body["errors"]
    with socket.create_connection(("127.0.0.1", sim.port), timeout=5) as raw:
        raw.sendall(b"\xff\xfe NONSENSE\r\n\r\n")
        answer = raw.makefile("rb").read()
    # An unparseable request line gets an HTTP/0.9-style answer: the body alone.
    assert json.loads(answer)["errors"][0]["code"] == "bad_request"


def test_concurrent_readers_and_writers(sim):
    sim.add_users(50)

    def read(_):
        return call(sim, "/v1/users?limit=20")[0]

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = pool.map(read, range(64))
        for _ in range(50):
            sim.add_user()
        assert set(results) == {200}
    assert call(sim, "/v1/users/count")[2]["total_count"] == 100


def test_stop_leaves_no_threads_or_sockets():
    before = set(threading.enumerate())
    sim = ClerkSimulator(rate_limit=None).start()
    port = sim.port
    sim.delay = 30  # a response waiting on the delay must not hold stop() up
    waiting = threading.Thread(target=lambda: call_quietly(sim.url + "/v1/users"))
    waiting.start()
    time.sleep(0.1)

    started = time.monotonic()
    sim.stop()
    sim.stop()  # twice is fine
    waiting.join(5)

    assert time.monotonic() - started < 2
    assert set(threading.enumerate()) <= before
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    with pytest.raises(RuntimeError, match="not running"):
        sim.url  # noqa: B018 - the property raises


def call_quietly(url):
    try:
        urllib.request.urlopen(url, timeout=5).read()
    except (OSError, urllib.error.URLError):
        pass


# --------------------------------------------------------------------- keys and tokens


def test_both_jwks_paths_serve_the_signing_key(sim):
    public = call(sim, "/.well-known/jwks.json", key=None)[2]
    backend = call(sim, "/v1/jwks")[2]
    assert public == backend == {"keys": sim.jwks_keys()}
    (key,) = public["keys"]
    assert key["kid"] == "ins_2simulator000000000000000" == sim.kid
    assert (key["use"], key["kty"], key["alg"], key["e"]) == (
        "sig",
        "RSA",
        "RS256",
        "AQAB",
    )


def test_minted_token_verifies_against_the_served_jwks_like_a_clerk_token(sim):
    token = sim.mint_session_token("user_ada", sid="sess_1", iat=int(time.time()))

    signing_key = jwt.PyJWKClient(sim.jwks_url).get_signing_key_from_jwt(token)
    claims = jwt.decode(token, signing_key.key, algorithms=["RS256"], issuer=sim.issuer)

    assert jwt.get_unverified_header(token) == {
        "alg": "RS256",
        "cat": "cl_B7d4PD111AAA",
        "kid": sim.instance_id,
        "typ": "JWT",
    }
    assert claims["nbf"] == claims["iat"] - 10
    assert claims["exp"] == claims["iat"] + 60
    assert (
        claims["sub"],
        claims["sid"],
        claims["azp"],
        claims["v"],
        claims["fva"],
    ) == ("user_ada", "sess_1", "http://localhost:3000", 2, [0, -1])
    assert claims["jti"] and "sts" not in claims and "aud" not in claims


def test_token_options_azp_claims_headers(sim):
    token = sim.mint_session_token(
        "user_ada",
        azp=None,
        lifetime=5,
        claims={"sts": "pending", "fva": None, "o": {"id": "org_1", "rol": "admin"}},
        headers={"cat": "cl_template", "kid": None},
    )
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(
        token, sim.public_key_pem, algorithms=["RS256"]
    )  # networkless PEM

    assert "azp" not in claims and "fva" not in claims
    assert claims["sts"] == "pending" and claims["o"]["id"] == "org_1"
    assert claims["exp"] - claims["iat"] == 5
    assert header["cat"] == "cl_template" and "kid" not in header
    assert claims["sid"].startswith("sess_")


def test_a_token_signed_by_an_unrelated_key_fails(sim):
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = sim.mint_session_token("user_ada", key=other)
    assert jwt.get_unverified_header(token)["kid"] == sim.kid
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, sim.public_key_pem, algorithms=["RS256"])


def test_rotate_key_can_keep_the_kid(sim):
    old_token = sim.mint_session_token("user_ada")
    old_jwks = call(sim, "/.well-known/jwks.json")[2]

    assert sim.rotate_key(keep_kid=True) == sim.instance_id
    new_jwks = call(sim, "/.well-known/jwks.json")[2]
    (new_key,) = new_jwks["keys"]

    assert (
        new_key["kid"] == old_jwks["keys"][0]["kid"]
        and new_key["n"] != old_jwks["keys"][0]["n"]
    )
    public = jwt.PyJWK(new_key).key
    jwt.decode(sim.mint_session_token("user_ada"), public, algorithms=["RS256"])
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(old_token, public, algorithms=["RS256"])

    new_kid = sim.rotate_key(keep_kid=False)
    assert new_kid != sim.instance_id
    assert [k["kid"] for k in call(sim, "/v1/jwks")[2]["keys"]] == [new_kid]


def test_publishable_key_encodes_the_frontend_host_as_clerk_does(sim):
    prefix, encoded = sim.publishable_key[:8], sim.publishable_key[8:]
    assert prefix == "pk_test_"
    assert base64.b64decode(encoded).decode() == f"127.0.0.1:{sim.port}$"
    assert sim.issuer == sim.url and sim.jwks_url == sim.url + "/.well-known/jwks.json"


# --------------------------------------------------------------------- webhooks and CLI


def test_deliver_webhook_creates_the_user_in_a_live_django(
    sim, live_server, transactional_db
):
    url = live_server.url + reverse("django_clerk_sync:webhook")
    user = sim.add_user("user_ada", email="ada@example.com", first_name="Ada")

    status, _, body = sim.deliver_webhook(url, SECRET, "user.created", user)
    assert (status, json.loads(body)) == (
        200,
        {"status": "processed", "outcome": "created"},
    )
    assert get_user("user_ada").email == "ada@example.com"

    sim.delete_user("user_ada")
    status, _, body = sim.deliver_webhook(url, SECRET, "user.deleted", "user_ada")
    assert json.loads(body)["outcome"] == "deleted"
    assert get_user("user_ada") is None


def test_command_line_prints_what_to_configure_and_serves():
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "django_clerk_sync.simulator",
            "--port",
            "0",
            "--users",
            "3",
            "--rate-limit",
            "50/10",
            "--quiet",
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "END PUBLIC KEY" in line:
                break
        output = "".join(lines)
        url = output.split("CLERK_API_URL         = ")[1].split()[0]
        # The issuer a publishable key gives is https://, so the banner names the
        # setting the simulator's http:// tokens need.
        assert f"CLERK_JWT_ISSUER      = {url}\n" in output
        assert "CLERK_PUBLISHABLE_KEY = pk_test_" in output
        assert "CLERK_SECRET_KEY      = sk_test_simulator" in output
        assert "50 requests / 10 s" in output
        # The printed token is one the middleware accepts, set up as printed.
        token = output.split("valid 3600 s):\n")[1].split()[0]
        key = output[output.index("-----BEGIN PUBLIC KEY-----") :]
        with override_settings(
            CLERK_JWT_KEY=key,
            CLERK_JWT_ISSUER=url,
            CLERK_AUTHORIZED_PARTIES=["http://localhost:3000"],
        ):
            tokens.reset_verifiers()
            claims = tokens.get_verifier().verify(token)
        tokens.reset_verifiers()
        first_user = output.split("a session token for ")[1].split()[0]
        assert claims.user_id == first_user
        request = urllib.request.Request(
            url + "/v1/users/count",
            headers={"Authorization": "Bearer sk_test_simulator"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert json.loads(response.read())["total_count"] == 3
    finally:
        process.send_signal(2)  # Ctrl-C
        assert process.wait(timeout=10) == 0
        process.stdout.close()


def test_command_line_help_shows_the_defaults():
    result = subprocess.run(
        [sys.executable, "-m", "django_clerk_sync.simulator", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for default in [
        "(default: 8765)",
        "(default: 25)",
        "(default: 0)",
        "(default: 100/10)",
        "(default: sk_test_simulator)",
    ]:
        assert default in text
