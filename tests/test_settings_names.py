"""System check W002: a ``CLERK_`` setting this package does not read (a misspelling,
a renamed name) is reported with the name meant."""

import ast
import re
from io import StringIO
from pathlib import Path

import pytest
from django.core.checks import run_checks
from django.core.management import call_command

import django_clerk_sync
from django_clerk_sync.checks import (
    CLERK_SDK_SETTINGS,
    RENAMED_SETTINGS,
    known_setting_names,
)
from django_clerk_sync.conf import ClerkSyncSettings

PACKAGE = Path(django_clerk_sync.__file__).resolve().parent
DOCS = PACKAGE.parent / "docs"


def w002():
    return [m for m in run_checks() if m.id == "django_clerk_sync.W002"]


# --- the names the package reads, derived from its code ---------------------------


def test_every_settings_property_is_known():
    documented = {
        re.match(r"``(CLERK_\w+)``", prop.__doc__).group(1)
        for prop in vars(ClerkSyncSettings).values()
        if isinstance(prop, property)
    }
    assert len(documented) >= 20
    assert documented <= known_setting_names()


def test_every_name_the_package_reads_with_getattr_is_known():
    # Found another way than the check finds them: from the syntax trees.
    read = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", None) == "getattr"
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and str(node.args[1].value).startswith("CLERK_")
            ):
                read.add(node.args[1].value)
    assert {"CLERK_WEBHOOK_SECRET", "CLERK_SYNC_FIELD_MAP"} <= read
    assert read <= known_setting_names()


def test_every_setting_in_the_settings_table_is_known():
    table = (DOCS / "settings.md").read_text().split("## ", 1)[0]
    listed = set(re.findall(r"^\| \[?`(CLERK_\w+)`", table, re.M))
    assert len(listed) >= 20
    assert listed <= known_setting_names()


def test_clerks_own_names_and_renamed_names_are_not_known_settings():
    assert not known_setting_names() & (CLERK_SDK_SETTINGS | set(RENAMED_SETTINGS))
    assert set(RENAMED_SETTINGS.values()) <= known_setting_names()


# --- the check ------------------------------------------------------------------


def test_the_test_settings_raise_no_w002():
    assert w002() == []


def test_a_misspelled_setting_names_the_one_meant(settings):
    settings.CLERK_WEBHOOK_SECERT = "whsec_..."

    [warning] = w002()

    assert warning.msg == (
        "CLERK_WEBHOOK_SECERT is set, but this package reads no such setting, so it "
        "has no effect."
    )
    assert warning.hint.startswith("Did you mean CLERK_WEBHOOK_SECRET?")
    assert "SILENCED_SYSTEM_CHECKS" in warning.hint
    assert "whsec_" not in warning.msg + warning.hint  # values are never shown


@pytest.mark.parametrize(
    "typo, meant",
    [
        ("CLERK_SYNC_ON_DELETED", "CLERK_SYNC_ON_DELETE"),
        ("CLERK_JWT_LEEWAY_SECONDS", "CLERK_JWT_LEEWAY"),
        ("CLERK_AUTHORISED_PARTIES", "CLERK_AUTHORIZED_PARTIES"),
        ("CLERK_SYNC_FIELDMAP", "CLERK_SYNC_FIELD_MAP"),
    ],
)
def test_common_slips_find_their_setting(settings, typo, meant):
    setattr(settings, typo, 1)

    [warning] = w002()

    assert warning.msg.startswith(f"{typo} is set")
    assert warning.hint.startswith(f"Did you mean {meant}?")


def test_a_name_like_none_points_at_the_settings_page(settings):
    settings.CLERK_SOMETHING_ELSE_ENTIRELY = True

    [warning] = w002()

    assert warning.hint.startswith("docs/settings.md lists the settings")


def test_clerks_sdk_name_for_the_webhook_secret_says_what_to_set(settings):
    settings.CLERK_WEBHOOK_SECRET = None
    settings.CLERK_WEBHOOK_SIGNING_SECRET = "whsec_..."

    [warning] = w002()

    assert "this package reads CLERK_WEBHOOK_SECRET instead" in warning.msg
    assert warning.hint.startswith(
        "Rename CLERK_WEBHOOK_SIGNING_SECRET to CLERK_WEBHOOK_SECRET."
    )


def test_clerks_sdk_name_beside_ours_is_left_alone(settings):
    # Set for a JavaScript service sharing the settings, say.
    settings.CLERK_WEBHOOK_SIGNING_SECRET = settings.CLERK_WEBHOOK_SECRET

    assert w002() == []


def test_names_clerks_frontends_read_are_left_alone(settings):
    settings.CLERK_SIGN_IN_URL = "/sign-in"
    settings.CLERK_SIGN_UP_URL = "/sign-up"
    settings.CLERK_TELEMETRY_DISABLED = True
    settings.CLERK_TELEMETRY_SAMPLING_RATE = 0.1
    settings.CLERK_AFTER_SIGN_IN_URL = "/"
    settings.CLERK_FRONTEND_API = "clerk.example.com"

    assert w002() == []


def test_a_package_installed_without_sources_warns_about_nothing(
    settings, tmp_path, monkeypatch
):
    # Compiled-only or zipped installs: no .py to read the names from. Every real
    # setting would be reported ("CLERK_WEBHOOK_SECRET ... has no effect") otherwise.
    from django_clerk_sync import checks

    monkeypatch.setattr(checks, "__file__", str(tmp_path / "checks.pyc"))
    checks.known_setting_names.cache_clear()
    try:
        settings.CLERK_WEBHOOK_SECERT = "whsec_typo"
        assert checks.known_setting_names() is None
        assert w002() == []
    finally:
        monkeypatch.undo()
        checks.known_setting_names.cache_clear()


def test_every_setting_of_the_package_is_accepted(settings):
    for name in known_setting_names():
        if not hasattr(settings, name):
            setattr(settings, name, None)

    assert w002() == []


def test_manage_py_check_shows_the_warning_and_still_passes(settings):
    settings.CLERK_SECRETKEY = "sk_test_..."
    out = StringIO()

    call_command("check", stdout=out, stderr=out)

    assert "django_clerk_sync.W002" in out.getvalue()
    assert "Did you mean CLERK_SECRET_KEY?" in out.getvalue()


def test_silencing_w002_silences_it(settings):
    settings.CLERK_SECRETKEY = "sk_test_..."
    settings.SILENCED_SYSTEM_CHECKS = ["django_clerk_sync.W002"]
    out = StringIO()

    call_command("check", stdout=out, stderr=out)

    assert "W002" not in out.getvalue()


# --- settings are read live ---------------------------------------------------------

#: Values of every shape a setting takes: for each setting, one of them is usable
#: and not its default, so the property's answer must change when it is set.
CANDIDATES = [
    False,
    True,
    7,
    (7, 1),
    "delete",
    "fetch",
    "inline",
    "celery",
    "default",
    "https://x.example",
    ["https://x.example"],
    {"email": "primary_email"},
]


def _setting_properties():
    for attribute, prop in vars(ClerkSyncSettings).items():
        if isinstance(prop, property):
            yield re.match(r"``(CLERK_\w+)``", prop.__doc__).group(1), attribute


@pytest.mark.parametrize("name, attribute", list(_setting_properties()))
def test_each_setting_is_read_when_used(settings, name, attribute):
    from django_clerk_sync.conf import clerk_settings

    if hasattr(settings, name):
        delattr(settings, name)
    default = repr(getattr(clerk_settings, attribute))
    answers = set()
    for value in CANDIDATES:
        setattr(settings, name, value)
        try:
            answers.add(repr(getattr(clerk_settings, attribute)))
        except Exception:  # a shape this setting does not take
            continue
    assert answers - {default}, f"no value of {name} changes clerk_settings.{attribute}"


def import_time_reads(source):
    """Lines of ``source`` that read a ``CLERK_`` setting or ``clerk_settings`` in a
    statement run on import: module and class bodies, decorators, default arguments."""
    found = []
    pending = list(ast.parse(source).body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            pending += node.decorator_list + node.args.defaults
            pending += [d for d in node.args.kw_defaults if d is not None]
            continue
        if isinstance(node, ast.Lambda):
            continue
        owner = getattr(getattr(node, "value", None), "id", None)
        if isinstance(node, ast.Attribute) and (
            owner == "clerk_settings"
            or (
                owner in ("settings", "django_settings")
                and node.attr.startswith("CLERK_")
            )
        ):
            found.append(node.lineno)
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", None) == "getattr"
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and str(node.args[1].value).startswith("CLERK_")
        ):
            found.append(node.lineno)
        pending += ast.iter_child_nodes(node)
    return sorted(found)


def test_the_import_time_scan_finds_reads():
    source = """
TIMEOUT = getattr(settings, "CLERK_HTTP_TIMEOUT", 5)
class Verifier:
    leeway = clerk_settings.JWT_LEEWAY
def fetch(timeout=settings.CLERK_HTTP_TIMEOUT):
    return clerk_settings.API_URL, getattr(settings, "CLERK_API_URL", None)
"""
    assert import_time_reads(source) == [2, 4, 5]


def test_no_module_reads_a_clerk_setting_at_import_time():
    offenders = {
        path.name: lines
        for path in PACKAGE.rglob("*.py")
        if (lines := import_time_reads(path.read_text()))
    }
    assert offenders == {}


def test_w002_runs_under_the_compatibility_tag(settings):
    settings.CLERK_SECRETKEY = "sk_test_..."

    ids = [m.id for m in run_checks(tags=["compatibility"])]

    assert "django_clerk_sync.W002" in ids
