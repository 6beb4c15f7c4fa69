"""``CLERK_SYNC_FIELD_MAP``: which Clerk data lands in which user field.

The suite's user model is ``auth.User``, which has no "plan" or "avatar" field, so
these tests point its text fields (``first_name``, ``last_name``) at the sources
under test. Every test syncs through a signed webhook delivery.
"""

from datetime import datetime

import pytest
from django.contrib.auth import get_user_model

from django_clerk_sync import get_user

from .conftest import load_event

User = get_user_model()

EXAMPLE_ID = "user_29w83sxmDNGwOuEthce5gg56FcC"

NOT_CALLABLE = "a module attribute that is not a function"


def plan_label(clerk_user):
    """A source named by ``"tests.test_field_map:plan_label"``."""
    plan = (clerk_user.get("public_metadata") or {}).get("plan") or "free"
    return f"{plan.title()} plan"


def synced_user(deliver, fixture="user_updated", **changes):
    """Deliver a captured event; return the Django user it synced, fresh from the DB."""
    payload = load_event(fixture, **changes)
    response = deliver(payload)
    assert response.status_code == 200, response.content
    return get_user(payload["data"]["id"])


def test_the_default_map_fills_email_names_and_username(deliver, settings):
    assert not hasattr(settings, "CLERK_SYNC_FIELD_MAP")

    user = synced_user(deliver)

    assert (user.email, user.first_name, user.last_name, user.username) == (
        "new-primary@example.org",
        "Example",
        "Renamed",
        "example",
    )


def test_a_map_replaces_the_default_and_leaves_other_fields_alone(deliver, settings):
    deliver(load_event("user_created"))  # default map
    settings.CLERK_SYNC_FIELD_MAP = {"first_name": "public_metadata.plan"}

    user = synced_user(deliver)  # email, last name and username all changed in Clerk

    assert user.first_name == "pro"
    assert (user.email, user.last_name, user.username) == (
        "example@example.org",
        "Example",
        EXAMPLE_ID,
    )


def test_a_map_without_the_username_still_gives_new_users_one(deliver, settings):
    settings.CLERK_SYNC_FIELD_MAP = {"email": "primary_email"}

    user = synced_user(deliver)

    assert (user.email, user.username, user.first_name) == (
        "new-primary@example.org",
        EXAMPLE_ID,
        "",
    )


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("public_metadata.plan", "pro"),
        ("public_metadata.team.role", "owner"),
        ("external_id", ""),  # null in user_updated
        ("public_metadata.missing", ""),
        ("public_metadata.plan.deeper", ""),  # "pro" is not an object
        ("private_metadata.anything", ""),  # private_metadata is null
        ("no_such_key", ""),
        ("public_metadata.team", '{"role": "owner"}'),  # objects are stored as JSON
        ("created_at", "1654012591514"),  # numbers as text in a text field
    ],
)
def test_a_dotted_path_reads_into_the_clerk_user(deliver, settings, path, expected):
    settings.CLERK_SYNC_FIELD_MAP = {"first_name": path}

    assert synced_user(deliver).first_name == expected


@pytest.mark.parametrize(
    ("source", "fixture", "expected"),
    [
        ("primary_email", "user_updated", "new-primary@example.org"),
        ("primary_email", "user_created_phone_only", ""),
        ("primary_phone", "user_created_phone_only", "+15555550100"),
        ("primary_phone", "user_updated", ""),
        ("full_name", "user_updated", "Example Renamed"),
        ("full_name", "user_created_phone_only", ""),
        ("image_url", "user_updated", "https://img.clerk.com/xxxxxx"),
        ("image_url", "user_created_phone_only", ""),
    ],
)
def test_computed_sources(deliver, settings, source, fixture, expected):
    settings.CLERK_SYNC_FIELD_MAP = {"last_name": source}

    assert synced_user(deliver, fixture).last_name == expected


@pytest.mark.parametrize(
    ("first_name", "last_name", "expected"),
    [
        ("Ada", None, "Ada"),
        (None, "Lovelace", "Lovelace"),
        ("  Ada ", " Lovelace  ", "Ada Lovelace"),
        ("", "", ""),
    ],
)
def test_full_name_skips_missing_parts(
    deliver, settings, first_name, last_name, expected
):
    settings.CLERK_SYNC_FIELD_MAP = {"last_name": "full_name"}

    user = synced_user(deliver, first_name=first_name, last_name=last_name)

    assert user.last_name == expected


def test_image_url_null_is_empty(deliver, settings):
    settings.CLERK_SYNC_FIELD_MAP = {"last_name": "image_url"}

    assert synced_user(deliver, image_url=None).last_name == ""


def test_a_callable_receives_the_whole_clerk_user(deliver, settings):
    seen = []

    def initials(clerk_user):
        seen.append(clerk_user)
        return clerk_user["first_name"][0] + clerk_user["last_name"][0]

    settings.CLERK_SYNC_FIELD_MAP = {"first_name": initials}
    payload = load_event("user_updated")

    deliver(payload)

    assert get_user(EXAMPLE_ID).first_name == "ER"
    assert seen == [payload["data"]]


def test_a_function_named_by_a_dotted_string(deliver, settings):
    settings.CLERK_SYNC_FIELD_MAP = {
        "first_name": "tests.test_field_map:plan_label",
        "last_name": "last_name",
    }

    assert synced_user(deliver).first_name == "Pro plan"
    assert synced_user(deliver, "user_created_phone_only").first_name == "Free plan"


def test_a_map_change_takes_effect_without_a_restart(deliver, settings):
    settings.CLERK_SYNC_FIELD_MAP = {"first_name": "public_metadata.plan"}
    deliver(load_event("user_created"))
    assert get_user(EXAMPLE_ID).first_name == ""

    settings.CLERK_SYNC_FIELD_MAP = {"first_name": "public_metadata.team.role"}
    deliver(load_event("user_updated"))

    assert get_user(EXAMPLE_ID).first_name == "owner"


def test_clerk_times_in_a_datetime_field_without_time_zone_support(deliver, settings):
    settings.USE_TZ = False
    settings.CLERK_SYNC_FIELD_MAP = {"date_joined": "created_at"}

    deliver(load_event("user_created"))

    # Naive, in TIME_ZONE (UTC in this suite), as Django stores it with USE_TZ=False.
    assert get_user(EXAMPLE_ID).date_joined == datetime(2022, 5, 31, 15, 56, 31, 514000)
