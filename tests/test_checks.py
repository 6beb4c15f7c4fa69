"""System checks: every ``django_clerk_sync`` check id, failing and passing.

``manage.py check`` is how users meet these, so a few tests go through
``call_command("check")``; the rest call ``run_checks()`` and look only at this
package's messages. (E021 needs a user model without ``is_active``: it is tested in
tests/custom_user.)
"""

import base64

import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from .conftest import SECRET, load_event

NOT_CALLABLE = "a module attribute that is not a function"


def a_source(clerk_user):
    return clerk_user.get("id")


def a_policy(user):
    user.delete()


def clerk_messages():
    """``(id, message)`` of every message this package's checks report."""
    return [
        (m.id, m.msg) for m in run_checks() if m.id.startswith("django_clerk_sync.")
    ]


def secret_of(length):
    return "whsec_" + base64.b64encode(b"k" * length).decode()


def test_the_test_settings_pass_every_check():
    assert clerk_messages() == []


def test_manage_py_check_passes_a_valid_configuration(capsys):
    call_command("check")

    assert "System check identified no issues" in capsys.readouterr().out


# --- CLERK_WEBHOOK_SECRET ---------------------------------------------------------


@pytest.mark.parametrize("unset", [None, "", [], ()], ids=repr)
def test_w001_no_secret(settings, unset):
    settings.CLERK_WEBHOOK_SECRET = unset

    assert clerk_messages() == [
        (
            "django_clerk_sync.W001",
            "CLERK_WEBHOOK_SECRET is not set: the Clerk webhook endpoint answers 503 "
            "to every delivery.",
        )
    ]


def test_w001_when_the_setting_is_absent_is_a_warning_not_an_error(settings, capsys):
    del settings.CLERK_WEBHOOK_SECRET

    call_command("check")  # warnings do not fail the command

    err = capsys.readouterr().err
    assert "django_clerk_sync.W001" in err
    assert "Signing Secret (whsec_...)" in err  # the hint says where to find it


@pytest.mark.parametrize(
    "value", [42, SECRET.encode(), {"primary": SECRET}], ids=["int", "bytes", "dict"]
)
def test_e001_secret_of_the_wrong_type(settings, value):
    settings.CLERK_WEBHOOK_SECRET = value

    assert clerk_messages() == [
        (
            "django_clerk_sync.E001",
            "CLERK_WEBHOOK_SECRET must be a string or a list of strings.",
        )
    ]


def test_e001_the_endpoint_refuses_rather_than_crashes(deliver, settings):
    settings.CLERK_WEBHOOK_SECRET = 42

    response = deliver(load_event("user_created"))

    assert response.status_code == 503
    assert "CLERK_WEBHOOK_SECRET" in response.json()["reason"]


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        (f'"{SECRET}"', "is wrapped in quotes (remove them from the environment file)"),
        (f"'{SECRET}'", "is wrapped in quotes (remove them from the environment file)"),
        (
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            "looks like a signature (v1,...), not the signing secret",
        ),
        (f"{SECRET}\n", "contains whitespace"),
        (f" {SECRET}", "contains whitespace"),
        (SECRET[:12] + " " + SECRET[12:], "contains whitespace"),
        ("foo", "is not a signing secret (they start with whsec_)"),
        ("whsec_not*base64!", "is not valid base64 after its whsec_ prefix"),
        (SECRET[:-1], "is not valid base64 after its whsec_ prefix"),  # bad padding
        (secret_of(16), "decodes to 16 bytes; Svix secrets are 24 to 64 bytes"),
        (secret_of(65), "decodes to 65 bytes; Svix secrets are 24 to 64 bytes"),
    ],
    ids=[
        "double-quoted",
        "single-quoted",
        "signature",
        "trailing-newline",
        "leading-space",
        "inner-space",
        "no-prefix-not-base64",
        "bad-base64",
        "bad-padding",
        "too-short",
        "too-long",
    ],
)
def test_e002_bad_secret(settings, secret, problem):
    settings.CLERK_WEBHOOK_SECRET = secret

    assert clerk_messages() == [
        ("django_clerk_sync.E002", f"CLERK_WEBHOOK_SECRET {problem}.")
    ]


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", "looks like a signature"),
        ("", "is empty"),
        (None, "is not a string (NoneType)"),
    ],
    ids=["signature", "empty", "none"],
)
def test_e002_names_the_bad_entry_of_a_list(settings, bad, problem):
    settings.CLERK_WEBHOOK_SECRET = [SECRET, bad]

    [(check_id, message)] = clerk_messages()
    assert check_id == "django_clerk_sync.E002"
    assert message.startswith(f"CLERK_WEBHOOK_SECRET (entry 1) {problem}")


def test_e002_fails_manage_py_check_with_the_fix_in_the_hint(settings):
    settings.CLERK_WEBHOOK_SECRET = f'"{SECRET}"'

    with pytest.raises(SystemCheckError) as failure:
        call_command("check")

    report = str(failure.value)
    assert "django_clerk_sync.E002" in report
    assert "CLERK_WEBHOOK_SECRET is wrapped in quotes" in report
    assert "Webhooks -> your endpoint -> Signing Secret" in report


@pytest.mark.parametrize(
    "value",
    [
        SECRET,
        [SECRET, secret_of(32)],  # rotation
        (SECRET,),
        secret_of(24),
        secret_of(64),
        base64.b64encode(b"k" * 32).decode(),  # without the prefix, as svix accepts
    ],
    ids=["string", "list", "tuple", "24-bytes", "64-bytes", "no-prefix"],
)
def test_valid_secrets_pass(settings, value):
    settings.CLERK_WEBHOOK_SECRET = value

    assert clerk_messages() == []


# --- CLERK_SYNC_FIELD_MAP ---------------------------------------------------------


@pytest.mark.parametrize(
    "value", [["email"], "primary_email", (("email", "primary_email"),)]
)
def test_e010_field_map_not_a_dict(settings, value):
    settings.CLERK_SYNC_FIELD_MAP = value

    assert clerk_messages() == [
        (
            "django_clerk_sync.E010",
            "CLERK_SYNC_FIELD_MAP must be a dict of {user field: source}.",
        )
    ]


@pytest.mark.parametrize("field", ["plan", "clerk_link", "logentry"])
def test_e011_unknown_field(settings, field):
    settings.CLERK_SYNC_FIELD_MAP = {"email": "primary_email", field: "external_id"}

    assert clerk_messages() == [
        (
            "django_clerk_sync.E011",
            f"CLERK_SYNC_FIELD_MAP names {field!r}, which is not a field of auth.User.",
        )
    ]


def test_e011_hint_lists_the_fields_that_can_be_written(settings):
    settings.CLERK_SYNC_FIELD_MAP = {"plan": "public_metadata.plan"}

    [message] = [m for m in run_checks() if m.id == "django_clerk_sync.E011"]
    assert message.hint == (
        "Use one of: date_joined, email, first_name, is_active, is_staff, "
        "is_superuser, last_login, last_name, username."
    )


@pytest.mark.parametrize("field", ["password", "id", "groups", "user_permissions"])
def test_e012_fields_that_may_not_be_written(settings, field):
    settings.CLERK_SYNC_FIELD_MAP = {field: "external_id"}

    assert clerk_messages() == [
        (
            "django_clerk_sync.E012",
            f"CLERK_SYNC_FIELD_MAP may not write auth.User.{field}.",
        )
    ]


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("tests.no_such_module:plan", "No module named 'tests.no_such_module'"),
        (
            "tests.test_checks:no_such_function",
            "module 'tests.test_checks' has no attribute 'no_such_function'",
        ),
        (
            "tests.test_checks:NOT_CALLABLE",
            "'tests.test_checks:NOT_CALLABLE' is not callable",
        ),
        (42, "a source must be a non-empty string or a callable, not 42"),
        ("", "a source must be a non-empty string or a callable, not ''"),
        (None, "a source must be a non-empty string or a callable, not None"),
    ],
    ids=["no-module", "no-attribute", "not-callable", "int", "empty", "none"],
)
def test_e013_unusable_source(settings, source, problem):
    settings.CLERK_SYNC_FIELD_MAP = {"first_name": source}

    assert clerk_messages() == [
        ("django_clerk_sync.E013", f"CLERK_SYNC_FIELD_MAP['first_name']: {problem}.")
    ]


def test_a_valid_field_map_passes(settings):
    settings.CLERK_SYNC_FIELD_MAP = {
        "email": "primary_email",
        "first_name": "full_name",
        "last_name": "public_metadata.plan",
        "username": "tests.test_checks:a_source",
        "is_staff": lambda clerk_user: False,
        "date_joined": "created_at",
    }

    assert clerk_messages() == []


# --- CLERK_SYNC_ON_DELETE ---------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "problem"),
    [
        ("remove", "'remove' is not a deletion policy"),
        ("Deactivate", "'Deactivate' is not a deletion policy"),
        (None, "None is not a deletion policy"),
        ("tests.no_such_module:policy", "No module named 'tests.no_such_module'"),
        (
            "tests.test_checks:NOT_CALLABLE",
            "'tests.test_checks:NOT_CALLABLE' is not callable",
        ),
    ],
    ids=["unknown", "wrong-case", "none", "no-module", "not-callable"],
)
def test_e020_bad_deletion_policy(settings, policy, problem):
    settings.CLERK_SYNC_ON_DELETE = policy

    assert clerk_messages() == [
        ("django_clerk_sync.E020", f"CLERK_SYNC_ON_DELETE: {problem}.")
    ]


@pytest.mark.parametrize(
    "policy",
    ["deactivate", "delete", a_policy, "tests.test_checks:a_policy"],
    ids=["deactivate", "delete", "callable", "dotted-string"],
)
def test_valid_deletion_policies_pass(settings, policy):
    settings.CLERK_SYNC_ON_DELETE = policy

    assert clerk_messages() == []


@pytest.mark.parametrize(
    "key, problem",
    [
        (
            "sk_test_abc\u200b",
            "contains a non-ASCII character (often an invisible one pasted with it)",
        ),
        (" sk_live_abc", "contains whitespace or an invisible character"),
        ("pk_live_abc", "does not start with sk_test_ or sk_live_"),
        (123, "is not a string (int)"),  # set, so never "is not set"
    ],
)
def test_e038_a_malformed_secret_key(settings, key, problem):
    settings.CLERK_SECRET_KEY = key
    errors = [e for e in run_checks() if e.id == "django_clerk_sync.E038"]
    assert [e.msg for e in errors] == [f"CLERK_SECRET_KEY {problem}."]
    assert str(key).strip() not in errors[0].msg + errors[0].hint


@pytest.mark.parametrize("key", [None, "", "sk_test_abc", "sk_live_XYZ123"])
def test_e038_passes_for_a_good_or_absent_key(settings, key):
    settings.CLERK_SECRET_KEY = key
    assert not [e for e in run_checks() if e.id == "django_clerk_sync.E038"]


# --- Backend API and JWKS endpoints (E040-E045) ------------------------------------


def ids_of(check_id):
    return [m for m in run_checks() if m.id == f"django_clerk_sync.{check_id}"]


@pytest.mark.parametrize(
    "url, problem",
    [
        (8765, "is not a string (int)"),
        (["x"], "is not a string (list)"),
        ("api.clerk.com", "is not an http(s) URL with a host"),
        ("127.0.0.1:18765", "is not an http(s) URL with a host"),
        ("ftp://api.clerk.com", "is not an http(s) URL with a host"),
        ("http://[::1", "is not a well-formed URL"),
        ("http://127.0.0.1:port", "is not a well-formed URL"),
    ],
)
def test_e040_an_api_url_that_is_not_an_http_url(settings, url, problem):
    settings.CLERK_API_URL = url
    (error,) = ids_of("E040")
    assert error.msg.startswith(f"CLERK_API_URL {problem}: {url!r}.")
    assert "https://api.clerk.com" in error.hint


@pytest.mark.parametrize(
    "url, problem",
    [
        (123, "is not a string (int)"),
        ("not a url", "is not an http(s) URL (it contains whitespace)"),
        ("file:///etc/passwd", "is not an http(s) URL with a host"),
    ],
)
def test_e041_a_jwks_url_that_is_not_an_http_url(settings, url, problem):
    settings.CLERK_JWKS_URL = url
    (error,) = ids_of("E041")
    assert error.msg.startswith(f"CLERK_JWKS_URL {problem}: {url!r}.")
    assert "Remove it" in error.hint


@pytest.mark.parametrize("issuer", [123, ["https://clerk.example.com"], b"https://x"])
def test_e042_an_issuer_that_is_not_a_string(settings, issuer):
    settings.CLERK_JWT_ISSUER = issuer
    (error,) = ids_of("E042")
    assert error.msg.startswith(
        f"CLERK_JWT_ISSUER must be a string, not {type(issuer).__name__};"
    )


@pytest.mark.parametrize(
    "limit, problem",
    [
        (100, "is not a pair (requests, seconds)"),
        ("100/10", "is not a pair (requests, seconds)"),
        ((100, 10, 1), "is not a pair (requests, seconds)"),
        ((0, 10), "does not allow a whole number of requests, 1 or more"),
        ((-1, 10), "does not allow a whole number of requests, 1 or more"),
        ((0.5, 10), "does not allow a whole number of requests, 1 or more"),
        ((True, 10), "does not allow a whole number of requests, 1 or more"),
        ((100, 0), "does not have a window of a positive number of seconds"),
        ((100, float("nan")), "does not have a window of a positive number of seconds"),
        ((100, "10"), "does not have a window of a positive number of seconds"),
    ],
)
def test_e043_an_unusable_rate_limit(settings, limit, problem):
    settings.CLERK_API_RATE_LIMIT = limit
    (error,) = ids_of("E043")
    assert error.msg.startswith(f"CLERK_API_RATE_LIMIT {limit!r} {problem}.")
    assert "(1000, 10)" in error.hint


@pytest.mark.parametrize("retries", ["5", -1, 2.5, True])
def test_e044_unusable_max_retries(settings, retries):
    settings.CLERK_API_MAX_RETRIES = retries
    (error,) = ids_of("E044")
    assert error.msg.startswith(
        f"CLERK_API_MAX_RETRIES must be a whole number, 0 or more, not {retries!r}."
    )


@pytest.mark.parametrize(
    "alias, problem",
    [
        ("nonexistent", "is not an alias in CACHES"),
        (3, "is not the alias of a cache (a non-empty string)"),
    ],
)
def test_e045_a_jwks_cache_that_is_not_a_caches_alias(settings, alias, problem):
    settings.CLERK_JWKS_CACHE = alias
    (error,) = ids_of("E045")
    assert error.msg.startswith(f"CLERK_JWKS_CACHE {problem}: {alias!r}.")
    assert "'default'" in error.hint  # the aliases to choose from


def test_e040_to_e045_fail_manage_py_check_with_the_setting_named(settings):
    settings.CLERK_API_URL = "api.clerk.com"
    settings.CLERK_API_RATE_LIMIT = (0, 10)
    with pytest.raises(SystemCheckError) as failed:
        call_command("check")
    assert "django_clerk_sync.E040" in str(failed.value)
    assert "django_clerk_sync.E043" in str(failed.value)


def test_usable_endpoint_settings_pass(settings):
    settings.CLERK_API_URL = "http://127.0.0.1:8765/"
    settings.CLERK_JWKS_URL = "https://clerk.example.com/.well-known/jwks.json"
    settings.CLERK_JWT_ISSUER = "https://clerk.example.com"
    settings.CLERK_API_RATE_LIMIT = [1000, 10.5]
    settings.CLERK_API_MAX_RETRIES = 0
    settings.CLERK_JWKS_CACHE = "default"
    assert clerk_messages() == []
