"""The sync rules, as a Clerk webhook delivery exercises them.

Every test posts Svix-signed deliveries to the real endpoint (``deliver``), on a
real database with real commits, and looks at the Django users, the
``ClerkUserLink`` rows and the signals that result.
"""

import logging
from datetime import datetime, timezone

import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from django_clerk_sync import get_user
from django_clerk_sync.models import ClerkUserLink
from django_clerk_sync.signals import clerk_user_deleted, clerk_user_synced
from django_clerk_sync.testing import clerk_user, deleted_user, event

from .conftest import load_event

User = get_user_model()

# The Clerk ids of the captured fixtures (user_created, _updated, _deleted; phone only).
EXAMPLE_ID = "user_29w83sxmDNGwOuEthce5gg56FcC"
PHONE_ONLY_ID = "user_2gkP0neOnlyPh0neUser00000aa"
CREATED_AT = 1654012591835  # user_created's updated_at
UPDATED_AT = 1654012599835  # user_updated's updated_at


def processed(response, outcome):
    """The endpoint answered 2xx and reports ``outcome``."""
    assert response.status_code == 200, response.content
    assert response.json() == {"status": "processed", "outcome": outcome}
    return True


def link(clerk_id):
    return ClerkUserLink.objects.get(clerk_id=clerk_id)


def synced(signals):
    return [kwargs for name, kwargs in signals if name == "synced"]


def deleted(signals):
    return [kwargs for name, kwargs in signals if name == "deleted"]


def anonymise(user):
    """A ``CLERK_SYNC_ON_DELETE`` policy named by a "module.path:function" string."""
    user.email = ""
    user.first_name = "Deleted"
    user.last_name = "User"
    user.is_active = False
    user.save()


# --- Upsert by Clerk id, never by email -------------------------------------------


def test_two_clerk_users_with_the_same_email_become_two_django_users(deliver):
    for clerk_id in ("user_a", "user_b"):
        same_email = clerk_user(clerk_id, email="same@example.org")
        assert processed(deliver(event("user.created", same_email)), "created")

    first, second = get_user("user_a"), get_user("user_b")
    assert first.pk != second.pk
    assert first.email == second.email == "same@example.org"
    assert User.objects.count() == 2


def test_a_local_user_with_the_same_email_is_never_adopted(deliver):
    local = User.objects.create_user(
        "local", email="example@example.org", first_name="Local"
    )

    assert processed(deliver(load_event("user_created")), "created")

    synced_user = get_user(EXAMPLE_ID)
    assert synced_user.pk != local.pk
    local.refresh_from_db()
    assert (local.username, local.first_name) == ("local", "Local")
    assert not ClerkUserLink.objects.filter(user=local).exists()


def test_user_updated_for_a_never_seen_user_creates_them(deliver, signals_received):
    assert processed(deliver(load_event("user_updated")), "created")

    user = get_user(EXAMPLE_ID)
    assert (user.email, user.first_name, user.last_name, user.username) == (
        "new-primary@example.org",
        "Example",
        "Renamed",
        "example",
    )
    assert [kwargs["created"] for kwargs in synced(signals_received)] == [True]


def test_a_django_user_removed_locally_comes_back_with_the_next_current_payload(
    deliver,
):
    deliver(load_event("user_updated"))
    get_user(EXAMPLE_ID).delete()  # an admin removed the row; Clerk still has the user
    assert get_user(EXAMPLE_ID) is None

    assert processed(deliver(load_event("user_created")), "stale")  # older: ignored
    assert User.objects.count() == 0

    assert processed(deliver(load_event("user_updated")), "created")  # not older
    assert get_user(EXAMPLE_ID).email == "new-primary@example.org"


# --- Ordering: Clerk's updated_at decides ---------------------------------------


def test_a_newer_update_is_applied(deliver, signals_received):
    deliver(load_event("user_created"))

    assert processed(deliver(load_event("user_updated")), "updated")

    assert get_user(EXAMPLE_ID).last_name == "Renamed"
    assert link(EXAMPLE_ID).clerk_updated_at == UPDATED_AT
    assert [kwargs["created"] for kwargs in synced(signals_received)] == [True, False]


@pytest.mark.parametrize("late_type", ["user.created", "user.updated"])
def test_an_older_payload_arriving_late_is_stale_and_changes_nothing(
    deliver, signals_received, late_type
):
    deliver(load_event("user_updated"))
    before = User.objects.values().get()
    late = load_event("user_created", last_name="Stale", username="stale")
    late["type"] = late_type

    assert processed(deliver(late), "stale")

    assert User.objects.values().get() == before
    assert link(EXAMPLE_ID).clerk_updated_at == UPDATED_AT
    assert len(synced(signals_received)) == 1  # only the first delivery's


def test_the_same_updated_at_under_a_new_svix_id_is_unchanged_and_silent(
    deliver, signals_received
):
    deliver(load_event("user_created"), svix_id="msg_first")
    before = User.objects.values().get()

    # A dashboard "resend" of an equivalent payload arrives as a new message.
    again = deliver(load_event("user_created"), svix_id="msg_second")
    assert processed(again, "unchanged")

    assert User.objects.values().get() == before
    assert len(synced(signals_received)) == 1


def test_a_payload_without_updated_at_cannot_be_ordered_once_one_was_applied(deliver):
    deliver(load_event("user_created"))

    assert processed(deliver(load_event("user_updated", updated_at=None)), "stale")

    assert get_user(EXAMPLE_ID).last_name == "Example"


def test_a_first_payload_without_updated_at_is_applied(deliver):
    assert processed(deliver(load_event("user_created", updated_at=None)), "created")

    assert get_user(EXAMPLE_ID).email == "example@example.org"
    assert link(EXAMPLE_ID).clerk_updated_at is None


# --- Deletion ---------------------------------------------------------------------


def test_by_default_a_deleted_clerk_user_is_deactivated_and_kept(
    deliver, signals_received
):
    deliver(load_event("user_created"))
    pk = get_user(EXAMPLE_ID).pk

    assert processed(deliver(load_event("user_deleted")), "deleted")

    user = User.objects.get(pk=pk)
    assert user.is_active is False
    assert (user.email, user.first_name) == ("example@example.org", "Example")
    assert get_user(EXAMPLE_ID) is None
    assert link(EXAMPLE_ID).is_tombstone
    assert link(EXAMPLE_ID).user_id == pk
    [signal] = deleted(signals_received)
    assert signal["user"].pk == pk and signal["user"].is_active is False


def test_policy_delete_removes_the_row_and_keeps_the_tombstone(
    deliver, settings, signals_received
):
    settings.CLERK_SYNC_ON_DELETE = "delete"
    deliver(load_event("user_created"))

    assert processed(deliver(load_event("user_deleted")), "deleted")

    assert User.objects.count() == 0
    tombstone = link(EXAMPLE_ID)
    assert tombstone.is_tombstone and tombstone.user is None
    [signal] = deleted(signals_received)
    assert signal["clerk_id"] == EXAMPLE_ID
    assert signal["user"].email == "example@example.org"  # the instance, as it was


def test_a_callable_policy_is_called_with_the_user(deliver, settings):
    calls = []

    def policy(user):
        calls.append((user.pk, user.is_active))

    settings.CLERK_SYNC_ON_DELETE = policy
    deliver(load_event("user_created"))
    pk = get_user(EXAMPLE_ID).pk

    assert processed(deliver(load_event("user_deleted")), "deleted")

    assert calls == [(pk, True)]  # the policy decides; nothing else touched the user
    assert User.objects.get(pk=pk).is_active is True
    assert link(EXAMPLE_ID).is_tombstone


def test_a_policy_named_by_a_dotted_string_is_imported_and_called(deliver, settings):
    settings.CLERK_SYNC_ON_DELETE = "tests.test_sync_rules:anonymise"
    deliver(load_event("user_created"))
    pk = get_user(EXAMPLE_ID).pk

    assert processed(deliver(load_event("user_deleted")), "deleted")

    user = User.objects.get(pk=pk)
    assert (user.email, user.first_name, user.last_name, user.is_active) == (
        "",
        "Deleted",
        "User",
        False,
    )


@pytest.mark.parametrize("policy", ["deactivate", "delete"])
@pytest.mark.parametrize(
    "late", ["user_created", "user_updated"], ids=["late-created", "late-updated"]
)
def test_a_deleted_clerk_user_is_never_resurrected(
    deliver, settings, signals_received, policy, late
):
    settings.CLERK_SYNC_ON_DELETE = policy
    deliver(load_event("user_created"))
    deliver(load_event("user_deleted"))
    before = list(User.objects.values())

    # Even a payload newer than anything applied so far.
    assert processed(deliver(load_event(late, updated_at=UPDATED_AT + 1)), "tombstoned")

    assert list(User.objects.values()) == before
    assert get_user(EXAMPLE_ID) is None
    assert len(synced(signals_received)) == 1  # the creation only


def test_deleting_an_unknown_clerk_id_twice_writes_one_tombstone(
    deliver, signals_received
):
    body = event("user.deleted", deleted_user("user_never_seen"))

    assert processed(deliver(body), "deleted")
    first_deleted_at = link("user_never_seen").deleted_at
    assert processed(deliver(body), "already deleted")  # a new svix-id: not a duplicate

    assert ClerkUserLink.objects.filter(clerk_id="user_never_seen").count() == 1
    assert link("user_never_seen").deleted_at == first_deleted_at
    assert link("user_never_seen").user is None
    assert len(deleted(signals_received)) == 1

    # The creation arriving after its deletion is ignored.
    late = clerk_user("user_never_seen", email="late@example.org")
    assert processed(deliver(event("user.created", late)), "tombstoned")
    assert User.objects.count() == 0
    assert synced(signals_received) == []


# --- Clerk's nulls ----------------------------------------------------------------


def test_a_phone_only_user_gets_empty_strings_and_a_username_from_the_clerk_id(deliver):
    assert processed(deliver(load_event("user_created_phone_only")), "created")

    user = get_user(PHONE_ONLY_ID)
    assert (user.email, user.first_name, user.last_name) == ("", "", "")
    assert user.username == PHONE_ONLY_ID
    assert not user.has_usable_password()


def test_users_without_a_clerk_username_get_distinct_usernames(deliver):
    deliver(event("user.created", clerk_user("user_one", email="one@example.org")))
    deliver(event("user.created", clerk_user("user_two", email="two@example.org")))

    assert (get_user("user_one").username, get_user("user_two").username) == (
        "user_one",
        "user_two",
    )


def test_a_derived_username_that_is_taken_gets_a_numbered_suffix(deliver):
    User.objects.create_user(PHONE_ONLY_ID.upper())  # taken, case-insensitively

    deliver(load_event("user_created_phone_only"))

    assert get_user(PHONE_ONLY_ID).username == f"{PHONE_ONLY_ID}-2"


def test_the_clerk_username_is_used_when_free(deliver):
    deliver(load_event("user_updated"))

    assert get_user(EXAMPLE_ID).username == "example"


def test_a_clerk_username_taken_by_another_local_user_falls_back_to_the_clerk_id(
    deliver,
):
    other = User.objects.create_user("Example")  # differs only in case

    deliver(load_event("user_updated"))

    assert get_user(EXAMPLE_ID).username == EXAMPLE_ID
    other.refresh_from_db()
    assert other.username == "Example"


def test_a_user_keeps_their_own_clerk_username_on_later_updates(deliver):
    deliver(load_event("user_updated"))

    later = load_event("user_updated", updated_at=UPDATED_AT + 1, last_name="Again")
    assert processed(deliver(later), "updated")

    assert get_user(EXAMPLE_ID).username == "example"


@pytest.mark.parametrize("image_url", ["", None])
def test_a_user_without_an_image_is_synced(deliver, image_url):
    payload = load_event("user_created", image_url=image_url, has_image=False)

    assert processed(deliver(payload), "created")

    assert get_user(EXAMPLE_ID).email == "example@example.org"


def test_unknown_keys_in_the_clerk_user_are_ignored(deliver):
    payload = load_event(
        "user_created",
        legal_accepted_at=1654012591514,
        passkeys=[{"id": "pk_1", "name": "Laptop"}],
        some_future_field={"nested": {"deeply": [1, 2, 3]}},
    )

    assert processed(deliver(payload), "created")

    assert get_user(EXAMPLE_ID).first_name == "Example"


# --- Primary email ----------------------------------------------------------------


def test_the_primary_email_is_the_one_primary_email_address_id_names(deliver):
    payload = load_event("user_updated")
    emails = [e["email_address"] for e in payload["data"]["email_addresses"]]
    assert emails == ["example@example.org", "new-primary@example.org"]

    deliver(payload)

    assert get_user(EXAMPLE_ID).email == "new-primary@example.org"


@pytest.mark.parametrize(
    "primary_id", [None, "idn_not_in_the_list"], ids=["no-primary", "dangling-primary"]
)
def test_without_a_matching_primary_no_email_is_guessed(deliver, primary_id):
    deliver(load_event("user_updated", primary_email_address_id=primary_id))

    assert get_user(EXAMPLE_ID).email == ""


# --- Timestamps -------------------------------------------------------------------


def test_clerk_updated_at_in_milliseconds_is_stored_on_the_link(deliver):
    deliver(load_event("user_created"))
    assert link(EXAMPLE_ID).clerk_updated_at == CREATED_AT

    deliver(load_event("user_updated"))
    assert link(EXAMPLE_ID).clerk_updated_at == UPDATED_AT


def test_clerk_millisecond_times_land_in_datetime_fields_as_utc(deliver, settings):
    settings.CLERK_SYNC_FIELD_MAP = {
        "email": "primary_email",
        "date_joined": "created_at",  # 1654012591514
        "last_login": "last_sign_in_at",
    }

    deliver(load_event("user_created"))

    user = get_user(EXAMPLE_ID)
    expected = datetime(2022, 5, 31, 15, 56, 31, 514000, tzinfo=timezone.utc)
    assert user.date_joined == expected
    assert user.last_login == expected


def test_a_null_clerk_time_leaves_a_nullable_datetime_empty(deliver, settings):
    settings.CLERK_SYNC_FIELD_MAP = {"last_login": "last_sign_in_at"}

    deliver(load_event("user_created_phone_only"))  # last_sign_in_at: null

    assert get_user(PHONE_ONLY_ID).last_login is None


# --- Signals ----------------------------------------------------------------------


@pytest.fixture
def receivers():
    """Receivers that record their exact arguments and the transaction state."""
    calls = []

    def on_synced(**kwargs):
        calls.append(("synced", kwargs, connection.in_atomic_block))

    def on_deleted(**kwargs):
        calls.append(("deleted", kwargs, connection.in_atomic_block))

    clerk_user_synced.connect(on_synced, weak=False)
    clerk_user_deleted.connect(on_deleted, weak=False)
    yield calls
    clerk_user_synced.disconnect(on_synced)
    clerk_user_deleted.disconnect(on_deleted)


def test_clerk_user_synced_arguments(deliver, receivers):
    payload = load_event("user_created")

    deliver(payload)

    user = get_user(EXAMPLE_ID)
    assert receivers == [
        (
            "synced",
            {
                "signal": clerk_user_synced,
                "sender": User,
                "user": user,
                "clerk_user": payload["data"],
                "created": True,
                "source": "webhook",
            },
            False,  # sent after the commit, outside any transaction
        )
    ]
    assert receivers[0][1]["user"].email == "example@example.org"  # as saved


def test_clerk_user_synced_is_sent_once_per_effective_change(deliver, signals_received):
    deliver(load_event("user_created"), svix_id="msg_created")
    deliver(load_event("user_created"), svix_id="msg_created")  # Svix retry: duplicate
    deliver(load_event("user_created"))  # same content, new message: unchanged
    deliver(load_event("user_updated"))  # a change
    deliver(load_event("user_created"))  # stale

    assert [(name, kwargs["created"]) for name, kwargs in signals_received] == [
        ("synced", True),
        ("synced", False),
    ]


def test_clerk_user_synced_receivers_see_the_committed_user(deliver):
    seen = []

    def receiver(user, **kwargs):
        committed = User.objects.filter(pk=user.pk, last_name="Renamed").exists()
        seen.append((connection.in_atomic_block, committed))

    clerk_user_synced.connect(receiver, weak=False)
    try:
        deliver(load_event("user_updated"))
    finally:
        clerk_user_synced.disconnect(receiver)

    assert seen == [(False, True)]


def test_clerk_user_deleted_arguments(deliver, receivers):
    deliver(load_event("user_created"))
    pk = get_user(EXAMPLE_ID).pk
    receivers.clear()

    deliver(load_event("user_deleted"))

    [(name, kwargs, in_atomic_block)] = receivers
    assert (name, in_atomic_block) == ("deleted", False)
    user = kwargs.pop("user")
    assert kwargs == {
        "signal": clerk_user_deleted,
        "sender": User,
        "clerk_id": EXAMPLE_ID,
        "source": "webhook",
    }
    assert (user.pk, user.is_active) == (pk, False)  # after the policy ran


def test_clerk_user_deleted_for_an_unknown_id_has_no_user(deliver, receivers):
    deliver(event("user.deleted", deleted_user("user_unknown")))

    assert receivers == [
        (
            "deleted",
            {
                "signal": clerk_user_deleted,
                "sender": User,
                "user": None,
                "clerk_id": "user_unknown",
                "source": "webhook",
            },
            False,
        )
    ]


# --- Over-long values -------------------------------------------------------------


def test_an_over_long_value_is_truncated_and_logged_without_the_value(deliver, caplog):
    long_name = "Bartholomew" * 30  # 330 characters; first_name holds 150
    caplog.set_level(logging.WARNING, logger="django_clerk_sync.sync")

    response = deliver(load_event("user_created", first_name=long_name))

    assert processed(response, "created")

    assert get_user(EXAMPLE_ID).first_name == long_name[:150]
    [record] = [r for r in caplog.records if r.name == "django_clerk_sync.sync"]
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert EXAMPLE_ID in message and "'first_name'" in message
    assert "330" in message and "150" in message
    assert "Bartholomew" not in message


def test_an_over_long_value_redelivered_is_unchanged(deliver):
    payload = load_event("user_created", first_name="x" * 300)
    deliver(payload)

    assert processed(deliver(payload), "unchanged")


# --- Edges: long ids, impossible times ----------------------------


def test_a_derived_username_fits_the_username_field(deliver):
    long_id = "user_" + "x" * 200  # longer than auth.User.username (150)
    assert processed(deliver(event("user.created", clerk_user(long_id))), "created")
    assert processed(
        deliver(event("user.created", clerk_user(long_id[:-1] + "y"))), "created"
    )

    usernames = sorted(User.objects.values_list("username", flat=True))
    assert [len(name) for name in usernames] == [150, 150]
    assert usernames[0] != usernames[1]


def test_a_clerk_time_out_of_range_is_left_empty(deliver, settings, caplog):
    settings.CLERK_SYNC_FIELD_MAP = {"last_login": "last_sign_in_at"}
    payload = clerk_user("user_far_future", last_sign_in_at=10**18)
    with caplog.at_level(logging.WARNING, logger="django_clerk_sync"):
        assert processed(deliver(event("user.created", payload)), "created")
    assert get_user("user_far_future").last_login is None
    assert "not a representable time" in caplog.text
