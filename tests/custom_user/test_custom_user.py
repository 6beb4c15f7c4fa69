"""The sync with an email-as-username user model (``custom_user.EmailUser``).

Run in its own session, with its own settings:
``python -m pytest --ds=tests.custom_user.settings tests/custom_user``.
"""

from datetime import date

import pytest
from django.contrib.auth import get_user_model
from django.core.checks import run_checks

from django_clerk_sync import get_user
from django_clerk_sync.models import ClerkUserLink, WebhookEvent
from django_clerk_sync.testing import clerk_user, event

from ..conftest import load_event
from .models import EmailUser

EXAMPLE_ID = "user_29w83sxmDNGwOuEthce5gg56FcC"
PHONE_ONLY_ID = "user_2gkP0neOnlyPh0neUser00000aa"


def processed(response, outcome):
    assert response.status_code == 200, response.content
    assert response.json() == {"status": "processed", "outcome": outcome}
    return True


def clerk_messages():
    return [
        (m.id, m.msg) for m in run_checks() if m.id.startswith("django_clerk_sync.")
    ]


def test_this_suite_runs_with_the_custom_user_model():
    assert get_user_model() is EmailUser
    assert not hasattr(EmailUser, "username")


def test_the_default_configuration_passes_the_checks():
    assert clerk_messages() == []


def test_create_update_delete(deliver, signals_received):
    assert processed(deliver(load_event("user_created")), "created")
    user = get_user(EXAMPLE_ID)
    assert (user.email, user.full_name, user.is_active) == (
        "example@example.org",
        "",
        True,
    )
    assert not user.has_usable_password()

    # The default map adapts: only the email (also the login) is written.
    assert processed(deliver(load_event("user_updated")), "updated")
    user.refresh_from_db()
    assert (user.email, user.full_name) == ("new-primary@example.org", "")

    assert processed(deliver(load_event("user_deleted")), "deleted")
    user.refresh_from_db()
    assert user.is_active is False
    assert get_user(EXAMPLE_ID) is None

    assert [name for name, _ in signals_received] == ["synced", "synced", "deleted"]


def test_policy_delete_removes_the_custom_user(deliver, settings):
    settings.CLERK_SYNC_ON_DELETE = "delete"
    deliver(load_event("user_created"))

    assert processed(deliver(load_event("user_deleted")), "deleted")

    assert EmailUser.objects.count() == 0
    assert ClerkUserLink.objects.get(clerk_id=EXAMPLE_ID).is_tombstone


def test_a_phone_only_user_gets_the_clerk_id_as_their_unique_email(deliver):
    assert processed(deliver(load_event("user_created_phone_only")), "created")
    other_id = "user_2gkAnotherPhoneOnlyUser000"
    other = load_event("user_created_phone_only", id=other_id)
    assert processed(deliver(other), "created")

    assert get_user(PHONE_ONLY_ID).email == PHONE_ONLY_ID
    assert get_user(other_id).email == other_id


def test_a_phone_only_user_who_adds_an_email_gets_it(deliver):
    deliver(load_event("user_created_phone_only"))
    with_email = clerk_user(
        PHONE_ONLY_ID, email="added@example.org", updated_at=1716883200456 + 1
    )

    assert processed(deliver(event("user.updated", with_email)), "updated")

    assert get_user(PHONE_ONLY_ID).email == "added@example.org"


def test_an_email_swap_delivered_out_of_order_is_retried_until_it_applies(
    deliver, signals_received
):
    """In Clerk, B moves from b@ to b2@, then A takes b@; Svix delivers A's update
    first. Clerk keeps emails unique, so the clash with another Clerk user is a
    change still on its way: 500 (Svix retries), never a 409 that drops it."""
    deliver(
        event("user.created", clerk_user("user_a", email="a@example.org", updated_at=1))
    )
    deliver(
        event("user.created", clerk_user("user_b", email="b@example.org", updated_at=1))
    )
    a_takes_b = event(
        "user.updated", clerk_user("user_a", email="b@example.org", updated_at=3)
    )

    response = deliver(a_takes_b, svix_id="msg_swap")

    assert response.status_code == 500
    assert "webhook-delivery" not in response
    stored = WebhookEvent.objects.get(svix_id="msg_swap")
    assert (stored.status, stored.attempts) == ("failed", 1)
    assert stored.outcome.startswith("error: IntegrityError")
    # The admin lists outcomes: PostgreSQL's message would show the email there.
    assert "b@example.org" not in stored.outcome
    assert get_user("user_a").email == "a@example.org"  # nothing half-applied

    deliver(
        event(
            "user.updated", clerk_user("user_b", email="b2@example.org", updated_at=2)
        )
    )
    retry = deliver(a_takes_b, svix_id="msg_swap")  # Svix's retry

    assert processed(retry, "updated")
    assert sorted(EmailUser.objects.values_list("email", flat=True)) == [
        "b2@example.org",
        "b@example.org",
    ]
    assert get_user("user_a").email == "b@example.org"


def test_a_local_user_outside_clerk_holding_the_email_is_a_409_until_resolved(
    deliver, signals_received
):
    local = EmailUser.objects.create_user("same@example.org", password="x")
    created = event("user.created", clerk_user("user_second", email="same@example.org"))

    response = deliver(created, svix_id="msg_conflict")

    assert response.status_code == 409
    assert response["webhook-delivery"] == "abort-message"
    stored = WebhookEvent.objects.get(svix_id="msg_conflict")
    assert (stored.status, stored.attempts) == ("failed", 1)
    assert stored.outcome.startswith("permanent: SyncConflict: Clerk user user_second")
    assert "IntegrityError" in stored.last_error
    # Nothing of the failed attempt stays: no user, no link, no signal.
    assert EmailUser.objects.count() == 1
    assert not ClerkUserLink.objects.filter(clerk_id="user_second").exists()
    assert signals_received == []

    local.delete()  # someone resolves the conflict
    response = deliver(created, svix_id="msg_conflict")  # dashboard replay

    assert processed(response, "created")
    assert get_user("user_second").email == "same@example.org"
    stored.refresh_from_db()
    assert (stored.status, stored.attempts, stored.last_error) == ("processed", 2, "")


def test_a_local_user_holding_the_email_is_a_conflict_not_an_adoption(deliver):
    local = EmailUser.objects.create_user("example@example.org", password="x")

    response = deliver(load_event("user_created"))

    assert response.status_code == 409
    assert get_user(EXAMPLE_ID) is None
    local.refresh_from_db()
    assert local.has_usable_password()  # untouched
    assert not ClerkUserLink.objects.filter(user=local).exists()


def test_a_field_map_with_full_name(deliver, settings):
    settings.CLERK_SYNC_FIELD_MAP = {"email": "primary_email", "full_name": "full_name"}

    deliver(load_event("user_created"))
    assert get_user(EXAMPLE_ID).full_name == "Example Example"

    deliver(load_event("user_updated"))
    user = get_user(EXAMPLE_ID)
    assert (user.email, user.full_name) == (
        "new-primary@example.org",
        "Example Renamed",
    )


def test_a_field_map_without_the_email_still_gives_a_unique_login(deliver, settings):
    settings.CLERK_SYNC_FIELD_MAP = {"full_name": "full_name"}

    deliver(load_event("user_created"))

    user = get_user(EXAMPLE_ID)
    assert (user.email, user.full_name) == (EXAMPLE_ID, "Example Example")


def test_e011_names_the_custom_model(settings):
    settings.CLERK_SYNC_FIELD_MAP = {"email": "primary_email", "first_name": "x"}

    assert clerk_messages() == [
        (
            "django_clerk_sync.E011",
            "CLERK_SYNC_FIELD_MAP names 'first_name', which is not a field of "
            "custom_user.EmailUser.",
        )
    ]


def test_e021_deactivate_needs_an_is_active_field(settings):
    settings.AUTH_USER_MODEL = "custom_user.HandleUser"

    assert clerk_messages() == [
        (
            "django_clerk_sync.E021",
            'CLERK_SYNC_ON_DELETE is "deactivate" but custom_user.HandleUser has no '
            "is_active field.",
        )
    ]


@pytest.mark.parametrize(
    "policy", ["delete", "tests.custom_user.test_custom_user:forget"]
)
def test_e021_passes_with_a_policy_that_does_not_deactivate(settings, policy):
    settings.AUTH_USER_MODEL = "custom_user.HandleUser"
    settings.CLERK_SYNC_ON_DELETE = policy

    assert clerk_messages() == []


def forget(user):
    user.delete()


def test_a_clerk_time_in_a_date_field_is_its_utc_date(deliver, settings):
    settings.CLERK_SYNC_FIELD_MAP = {
        "email": "primary_email",
        "member_since": "created_at",  # 1654012591514: 2022-05-31 15:56:31.514 UTC
    }

    deliver(load_event("user_created"))

    assert get_user(EXAMPLE_ID).member_since == date(2022, 5, 31)


@pytest.mark.django_db(transaction=True)
def test_a_page_falling_back_to_one_user_at_a_time_logs_no_email(caplog):
    """A page whose bulk insert clashes on a unique email is applied user by user;
    the log says why without the database's text, which quotes the email on
    PostgreSQL ("Key (email)=(...) already exists")."""
    import logging

    from django_clerk_sync import sync

    caplog.set_level(logging.DEBUG, logger="django_clerk_sync")
    EmailUser.objects.create_user("local@example.org")

    results = sync.sync_users(
        [
            clerk_user("user_clash", email="local@example.org", updated_at=1),
            clerk_user("user_fine", email="fine@example.org", updated_at=1),
        ],
        source="backfill",
    )

    assert {r.clerk_id: r.outcome for r in results} == {
        "user_clash": sync.FAILED,
        "user_fine": sync.CREATED,
    }
    assert any(
        "fell back to one user at a time" in r.getMessage() for r in caplog.records
    )
    assert not [
        r.getMessage() for r in caplog.records if "@example.org" in r.getMessage()
    ]
