"""django_clerk_sync.testing and the pytest plugin, through their public surface: the
real webhook endpoint, the real middleware, the simulator over loopback, and a user
project's own pytest session (pytester) using the plugin's fixtures."""

import base64
import io
import json
import textwrap

import pytest
from asgiref.sync import async_to_sync
from cryptography.hazmat.primitives.asymmetric import rsa
from django.conf import settings as django_settings
from django.core.management import call_command
from django.test import AsyncClient, Client, TestCase, override_settings
from django.urls import NoReverseMatch

from django_clerk_sync import get_user, tokens
from django_clerk_sync.models import WebhookEvent
from django_clerk_sync.testing import (
    TEST_ORIGIN,
    TEST_WEBHOOK_SECRET,
    TestKeys,
    auth_header,
    clerk_simulator,
    clerk_user,
    deleted_user,
    event,
    post_webhook,
    simulator_settings,
)

from .token_support import MIDDLEWARE_WITH_CLERK, fresh_verifiers, token_views  # noqa: F401  (fixtures)

pytest_plugins = ["pytester"]


def payload_of(token):
    segment = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def header_of(token):
    segment = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def whoami(token=None, **headers):
    if token is not None:
        headers.update(auth_header(token))
    response = Client().get("/whoami/", headers=headers)
    assert response.status_code == 200, response.content
    return response.json()


# --- post_webhook --------------------------------------------------------------------


def test_post_webhook_signs_with_the_configured_secret_and_creates_the_user(
    transactional_db, signals_received
):
    client = Client(enforce_csrf_checks=True)
    body = event("user.created", clerk_user("user_2helper", email="ada@example.com"))

    response = post_webhook(client, body, svix_id="msg_helper")

    assert response.json() == {"status": "processed", "outcome": "created"}
    assert get_user("user_2helper").email == "ada@example.com"
    assert [kind for kind, _ in signals_received] == ["synced"]
    # The same svix id again is a retry.
    retry = post_webhook(client, body, svix_id="msg_helper")
    assert retry.json()["duplicate"] is True


def test_post_webhook_takes_an_envelope_dict_and_extra_headers(db):
    envelope = json.loads(event("user.deleted", deleted_user("user_2gone")))

    response = post_webhook(
        Client(),
        envelope,
        headers={"svix-signature": "v1," + base64.b64encode(bytes(32)).decode()},
    )

    # The caller's headers win over the signed ones: here, a forged signature.
    assert response.status_code == 400
    assert response.json()["reason"] == "no signature matches CLERK_WEBHOOK_SECRET"


def test_post_webhook_takes_any_bytes_like_body_and_refuses_other_types(db):
    body = event("user.created", clerk_user("user_2bytes"))

    response = post_webhook(Client(), bytearray(body))

    assert response.status_code == 200
    assert response.json()["outcome"] == "created"
    with pytest.raises(TypeError, match="takes an envelope .* not list"):
        post_webhook(Client(), [body])


def test_post_webhook_with_another_secret_or_an_old_timestamp_is_refused(db):
    body = event("user.created", clerk_user("user_2refused"))

    wrong_secret = post_webhook(Client(), body, secret=TEST_WEBHOOK_SECRET)
    too_old = post_webhook(Client(), body, timestamp=0)

    assert (wrong_secret.status_code, too_old.status_code) == (400, 400)
    assert get_user("user_2refused") is None


def test_post_webhook_through_the_async_client(transactional_db):
    body = event("user.created", clerk_user("user_2async", email="async@example.com"))

    async def post():
        return await post_webhook(AsyncClient(), body)

    response = async_to_sync(post)()

    assert response.json() == {"status": "processed", "outcome": "created"}
    assert get_user("user_2async").email == "async@example.com"


def test_post_webhook_without_any_secret_says_which_setting(settings, db):
    del settings.CLERK_WEBHOOK_SECRET

    with pytest.raises(ValueError, match="set CLERK_WEBHOOK_SECRET"):
        post_webhook(Client(), event("user.created", clerk_user()))
    assert WebhookEvent.objects.count() == 0


urlpatterns = []  # this module as a URLconf without the webhook


def test_post_webhook_without_the_urls_included_says_so(settings):
    settings.ROOT_URLCONF = __name__

    with pytest.raises(NoReverseMatch, match=r'include\("django_clerk_sync.urls"\)'):
        post_webhook(Client(), event("user.created", clerk_user()))


# --- TestKeys ------------------------------------------------------------------------


def test_a_test_key_token_has_clerks_claims_and_header():
    keys = TestKeys()
    token = keys.token("user_2claims", session_id="sess_2claims", expires_in=30)

    claims = payload_of(token)
    assert set(claims) == {
        "azp",
        "exp",
        "fva",
        "iat",
        "iss",
        "jti",
        "nbf",
        "sid",
        "sts",
        "sub",
        "v",
    }
    assert claims["sub"] == "user_2claims"
    assert claims["sid"] == "sess_2claims"
    assert claims["azp"] == TEST_ORIGIN
    assert claims["iss"] == keys.issuer
    assert (claims["exp"] - claims["iat"], claims["iat"] - claims["nbf"]) == (30, 10)
    assert (claims["v"], claims["sts"]) == (2, "active")
    assert header_of(token) == {
        "alg": "RS256",
        "cat": tokens.SESSION_TOKEN_CAT,
        "kid": keys.kid,
        "typ": "JWT",
    }
    # Overrides, and None removing a claim.
    other = payload_of(keys.token("user_2claims", azp=None, sts="pending", iat=1000))
    assert "azp" not in other
    assert (other["sts"], other["iat"], other["exp"]) == ("pending", 1000, 1060)


def test_one_key_per_process_unless_another_is_given():
    assert TestKeys().public_key_pem == TestKeys().public_key_pem
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert TestKeys(other).public_key_pem != TestKeys().public_key_pem


def test_the_middleware_accepts_test_tokens_only_while_the_settings_apply(
    token_views, db
):
    keys = TestKeys()
    token = keys.token("user_2trusted", session_id="sess_2trusted")

    with keys.settings():
        inside = whoami(token)
        assert django_settings.CLERK_JWT_KEY == keys.public_key_pem

    assert inside["authenticated"] is True
    assert (inside["clerk_user_id"], inside["session_id"]) == (
        "user_2trusted",
        "sess_2trusted",
    )
    assert get_user("user_2trusted") is not None  # first sight created it
    outside = whoami(token)
    assert outside["authenticated"] is False
    assert outside["rejection"] == tokens.Reason.NOT_CONFIGURED


def test_tokens_the_settings_do_not_trust_are_refused(token_views, db):
    keys = TestKeys()
    stranger = TestKeys(rsa.generate_private_key(public_exponent=65537, key_size=2048))

    with keys.settings():
        forged = whoami(stranger.token("user_2forged"))
        foreign = whoami(keys.token("user_2foreign", azp="https://evil.example.com"))
        expired = whoami(keys.token("user_2late", iat=1_000_000))
        pending = whoami(keys.token("user_2pending", sts="pending"))

    assert forged["rejection"] == tokens.Reason.BAD_SIGNATURE
    assert foreign["rejection"] == tokens.Reason.WRONG_PARTY
    assert expired["rejection"] == tokens.Reason.EXPIRED
    assert pending["rejection"] == tokens.Reason.PENDING_SESSION
    assert not any(r["authenticated"] for r in (forged, foreign, expired, pending))


@override_settings(ROOT_URLCONF="tests.token_urls", MIDDLEWARE=MIDDLEWARE_WITH_CLERK)
@TestKeys().settings()
class TestKeysAsAClassDecorator(TestCase):
    def test_a_token_authenticates(self):
        token = TestKeys().token("user_2decorated")

        response = self.client.get("/whoami/", headers=auth_header(token))

        self.assertEqual(response.json()["clerk_user_id"], "user_2decorated")
        self.assertTrue(response.json()["authenticated"])


# --- clerk_simulator -----------------------------------------------------------------


def test_clerk_simulator_points_backfill_and_middleware_at_it(token_views, db):
    before = {name: getattr(django_settings, name, None) for name in ("CLERK_API_URL",)}

    with clerk_simulator(rate_limit=None) as sim:
        assert simulator_settings(sim)["CLERK_API_URL"] == django_settings.CLERK_API_URL
        sim.add_users(3, seed=1)
        call_command("clerk_backfill", stdout=io.StringIO())
        body = whoami(sim.mint_session_token(sim.users[0]["id"]))
        jwks_requests = sim.request_count("/.well-known/jwks.json")

    assert all(get_user(user["id"]) for user in sim.users)
    assert body["authenticated"] is True
    assert body["clerk_user_id"] == sim.users[0]["id"]
    assert jwks_requests == 1
    assert {"CLERK_API_URL": getattr(django_settings, "CLERK_API_URL", None)} == before
    with pytest.raises(RuntimeError, match="not running"):
        sim.url  # noqa: B018  (stopped on exit)


# --- the pytest plugin in a user's project -------------------------------------------

PROJECT_SETTINGS = """
SECRET_KEY = "test-only"
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django_clerk_sync",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_clerk_sync.middleware.ClerkAuthenticationMiddleware",
]
ROOT_URLCONF = "project_urls"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
"""

PROJECT_URLS = """
from django.http import JsonResponse
from django.urls import include, path


def me(request):
    return JsonResponse({"user": request.user.get_username() or None})


urlpatterns = [path("me/", me), path("hooks/", include("django_clerk_sync.urls"))]
"""

PROJECT_TESTS = """
import base64

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command

from django_clerk_sync import get_user
from django_clerk_sync.signals import clerk_user_synced
from django_clerk_sync.testing import auth_header, event


def test_a_webhook_creates_the_user_and_fires_the_signal(
    clerk_webhook, clerk_user_payload
):
    synced = []
    clerk_user_synced.connect(lambda sender, **kw: synced.append(kw), weak=False)
    body = event("user.created", clerk_user_payload("user_2p", email="p@example.com"))

    response = clerk_webhook(body)

    assert response.json() == {"status": "processed", "outcome": "created"}
    assert get_user("user_2p").email == "p@example.com"
    assert len(synced) == 1


@pytest.mark.django_db(transaction=True)
def test_a_webhook_with_real_commits(clerk_webhook, clerk_user_payload):
    body = event("user.created", clerk_user_payload("user_2t"))
    assert clerk_webhook(body).status_code == 200
    other_secret = "whsec_" + base64.b64encode(b"another-secret-of-32-bytes-long!").decode()
    assert clerk_webhook(body, secret=other_secret).status_code == 400


def test_the_middleware_trusts_clerk_keys(settings, clerk_keys, client, db):
    # A change made after clerk_keys applied its settings, undone before them.
    settings.CLERK_SYNC_FIRST_SIGHT = "create"
    token = clerk_keys.token("user_2k")

    assert client.get("/me/", headers=auth_header(token)).json() == {"user": "user_2k"}


def test_nothing_is_left_trusted_by_the_test_before(client, db):
    assert not getattr(django_settings, "CLERK_JWT_KEY", None)
    assert not hasattr(django_settings, "CLERK_SYNC_FIRST_SIGHT")


def test_the_simulator_serves_the_backfill_and_the_keys(clerk_simulator, client, db):
    clerk_simulator.add_users(2, seed=0)
    call_command("clerk_backfill")
    first = clerk_simulator.users[0]["id"]

    token = clerk_simulator.mint_session_token(first)
    body = client.get("/me/", headers=auth_header(token)).json()

    assert all(get_user(u["id"]) for u in clerk_simulator.users)
    assert body["user"] == get_user(first).get_username()


def test_settings_are_restored_after_the_simulator():
    assert not hasattr(django_settings, "CLERK_API_URL")
"""


def test_the_plugin_fixtures_work_in_a_users_project(pytester, monkeypatch):
    # The project's own settings, from its pytest.ini: not this suite's.
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE", raising=False)
    pytester.makefile(
        ".ini",
        pytest="[pytest]\nDJANGO_SETTINGS_MODULE = project_settings\npythonpath = .\n",
    )
    pytester.makepyfile(
        project_settings=PROJECT_SETTINGS,
        project_urls=PROJECT_URLS,
        test_project=PROJECT_TESTS,
    )

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")

    result.assert_outcomes(passed=6)


def test_fixtures_that_need_pytest_django_say_so_without_it(pytester):
    pytester.makepyfile(
        test_without_django=textwrap.dedent(
            """
            def test_webhook(clerk_webhook):
                pass
            """
        )
    )

    # In this process: nothing of pytest-django runs, so nothing of this session's
    # Django is touched.
    result = pytester.runpytest_inprocess("-p", "no:django", "-p", "no:cacheprovider")

    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "*clerk_webhook_secret fixture needs pytest-django*: pip install pytest-django."
        ]
    )
