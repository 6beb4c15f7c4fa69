"""Any order, any duplicates: one Clerk user's history ends as Clerk's newest word.

Hypothesis draws the history of one Clerk user (a ``user.created``, updates with
strictly increasing ``updated_at`` and other names, emails and usernames, maybe a
``user.deleted`` somewhere after the creation), then delivers it in any order with
any duplicates: the same ``svix-id`` again (a Svix retry) and the same payload
re-signed under a fresh ``svix-id`` (a dashboard resend). Every delivery is a real
Svix-signed POST through Django's test client with CSRF checks on.

After every delivery the response, the ``ClerkUserLink`` and the Django user are
compared with a small model of the rules in docs/sync-rules.md; at the end, the state
is compared with what in-order delivery gives: the newest ``updated_at`` wins, and a
deletion is final.

Each example uses a fresh Clerk id, fresh ``svix-id``s and usernames of its own (a
Clerk instance keeps usernames unique), so examples share the database without
seeing each other; counts are taken as differences from the example's start.
"""

import itertools
from dataclasses import dataclass
from typing import Optional

import pytest
from django.contrib.auth import get_user_model
from django.test import override_settings

pytest.importorskip(
    "hypothesis",
    reason="needs Hypothesis (the test extra): pip install 'hypothesis>=6.100'",
)
from hypothesis import HealthCheck, given, settings
from hypothesis import event as label
from hypothesis import strategies as st

from django_clerk_sync import get_user
from django_clerk_sync.models import ClerkUserLink, WebhookEvent
from django_clerk_sync.testing import clerk_user, deleted_user, event

User = get_user_model()

_examples = itertools.count()


@dataclass(frozen=True)
class Version:
    """What one Clerk payload says about the user (``None`` is Clerk's ``null``)."""

    first_name: str | None
    last_name: str | None
    email: str | None
    username: str | None


@dataclass(frozen=True)
class Synced:
    """A ``user.created`` or ``user.updated``."""

    event_type: str
    version: Version
    updated_at: int


@dataclass(frozen=True)
class Deleted:
    """A ``user.deleted``: no ``updated_at``."""


versions = st.builds(
    Version,
    first_name=st.sampled_from([None, "Ada", "Grace", "Zoë", "李"]),
    last_name=st.sampled_from([None, "Lovelace", "Hopper", "O'Brien"]),
    email=st.sampled_from(
        [None, "ada@example.org", "grace@example.org", "zoë@exämple.org"]
    ),
    # Suffixed with the example's number when used (see clerk_username).
    username=st.sampled_from([None, "ada", "grace", "ada_l"]),
)


def clerk_username(version, example):
    # Unique within this example's Clerk instance, as Clerk keeps them.
    return f"{version.username}-{example}" if version.username else None


@st.composite
def histories_and_deliveries(draw):
    """``(history, deliveries)``: the events in Clerk's order, and the order they
    arrive in as ``(history index, copy)`` pairs; copy 0 is the event's own
    ``svix-id``, copy n > 0 a fresh ``svix-id`` for the same payload."""
    updates = draw(st.integers(0, 5))
    drawn = draw(st.lists(versions, min_size=updates + 1, max_size=updates + 1))
    start = draw(st.integers(1_600_000_000_000, 1_800_000_000_000))
    steps = draw(st.lists(st.integers(1, 10**7), min_size=updates, max_size=updates))
    times = list(itertools.accumulate([start, *steps]))
    history = [
        Synced("user.created" if n == 0 else "user.updated", version, at)
        for n, (version, at) in enumerate(zip(drawn, times, strict=False))
    ]
    if draw(st.booleans()):
        history.insert(draw(st.integers(1, len(history))), Deleted())

    deliveries = [(n, 0) for n in draw(st.permutations(range(len(history))))]
    extras = draw(
        st.lists(
            st.tuples(
                st.integers(0, len(history) - 1), st.booleans(), st.integers(0, 10**6)
            ),
            max_size=6,
        )
    )
    for copy, (n, fresh_id, where) in enumerate(extras, start=1):
        deliveries.insert(where % (len(deliveries) + 1), (n, copy if fresh_id else 0))
    return history, deliveries


class Model:
    """What the rules say the link and the Django user hold after each delivery."""

    def __init__(self, clerk_id, example, policy):
        self.clerk_id = clerk_id
        self.example = example
        self.policy = policy
        self.link_exists = False
        self.applied_at = None  # the link's clerk_updated_at
        self.fields = None  # the Django user's (first, last, email, username)
        self.deleted = False
        self.outcomes = {}  # svix-id -> outcome of its first delivery

    def expected_fields(self, version):
        return (
            version.first_name or "",
            version.last_name or "",
            version.email or "",
            # No Clerk username: one derived from the Clerk id.
            clerk_username(version, self.example) or self.clerk_id,
        )

    def deliver(self, item, svix_id):
        """The JSON answer expected; updates the model."""
        if svix_id in self.outcomes:
            outcome = self.outcomes[svix_id]
            return {"status": "processed", "duplicate": True, "outcome": outcome}
        if isinstance(item, Deleted):
            outcome = "already deleted" if self.deleted else "deleted"
            self.deleted = self.link_exists = True
        elif self.deleted:
            outcome = "tombstoned"
        elif not self.link_exists:
            outcome = "created"
            self.link_exists = True
            self.fields = self.expected_fields(item.version)
            self.applied_at = item.updated_at
        elif item.updated_at < self.applied_at:
            outcome = "stale"
        else:
            fields = self.expected_fields(item.version)
            outcome = "updated" if fields != self.fields else "unchanged"
            self.fields = fields
            self.applied_at = item.updated_at
        self.outcomes[svix_id] = outcome
        return {"status": "processed", "outcome": outcome}

    @property
    def user_row_expected(self):
        removed = self.deleted and self.policy == "delete"
        return self.fields is not None and not removed


def payload_for(item, clerk_id, example):
    if isinstance(item, Deleted):
        return event("user.deleted", deleted_user(clerk_id))
    version = item.version
    return event(
        item.event_type,
        clerk_user(
            clerk_id,
            email=version.email,
            first_name=version.first_name,
            last_name=version.last_name,
            username=clerk_username(version, example),
            created_at=1_500_000_000_000,
            updated_at=item.updated_at,
        ),
    )


def state_of(clerk_id):
    """``(link, user)`` as stored now (``None`` for what does not exist)."""
    links = ClerkUserLink.objects.select_related("user")
    link = links.filter(clerk_id=clerk_id).first()
    return link, (link.user if link is not None else None)


def fields_of(user):
    return (user.first_name, user.last_name, user.email, user.username)


def assert_matches(model, clerk_id, user_pk):
    link, user = state_of(clerk_id)
    assert ClerkUserLink.objects.filter(clerk_id=clerk_id).count() == (
        1 if model.link_exists else 0
    )
    if not model.link_exists:
        return
    assert link.clerk_updated_at == model.applied_at
    assert link.is_tombstone is model.deleted
    if model.user_row_expected:
        assert user is not None and user.pk == user_pk
        assert fields_of(user) == model.fields
        assert user.is_active is not (model.deleted and model.policy == "deactivate")
        assert not user.has_usable_password()
    else:
        assert user is None
        if user_pk is not None:  # policy "delete": the row itself is gone
            assert not User.objects.filter(pk=user_pk).exists()
    expected_lookup = None if model.deleted else user
    assert get_user(clerk_id) == expected_lookup


@settings(
    max_examples=100,
    derandomize=True,  # the same examples on every run and every machine
    database=None,
    deadline=None,
    # The fixtures are shared by all examples on purpose: each example has its own
    # Clerk id, svix-ids and usernames, and counts only its own rows.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    case=histories_and_deliveries(),
    policy=st.sampled_from(["deactivate", "delete"]),
)
def test_any_order_and_any_duplicates_end_as_in_order_delivery(
    deliver, signals_received, case, policy
):
    history, deliveries = case
    example = next(_examples)
    clerk_id = f"user_prop{example}"
    signals_received.clear()
    users_before = User.objects.count()
    events_before = WebhookEvent.objects.count()
    payloads = [payload_for(item, clerk_id, example) for item in history]
    model = Model(clerk_id, example, policy)
    user_pk = at_deletion = None

    with override_settings(CLERK_SYNC_ON_DELETE=policy):
        for n, copy in deliveries:
            svix_id = f"msg_prop{example}_{n}_{copy}"
            response = deliver(payloads[n], svix_id=svix_id)

            assert response.status_code == 200, response.content
            assert response.json() == model.deliver(history[n], svix_id)
            if user_pk is None and model.fields is not None:
                user_pk = state_of(clerk_id)[1].pk
            assert_matches(model, clerk_id, user_pk)
            if model.deleted:
                # Once deleted, nothing that arrives later changes anything stored.
                link, user = state_of(clerk_id)
                stored = (link.deleted_at, user and (fields_of(user), user.is_active))
                at_deletion = at_deletion or stored
                assert stored == at_deletion

    for outcome in sorted(set(model.outcomes.values())):
        label(f"outcome {outcome}")  # pytest --hypothesis-show-statistics lists them
    if len(deliveries) > len(set(deliveries)):
        label("a svix-id delivered twice")

    # What in-order delivery gives, independently of the model above.
    link, user = state_of(clerk_id)
    synced_events = [item for item in history if isinstance(item, Synced)]
    newest = max(synced_events, key=lambda item: item.updated_at)
    if not any(isinstance(item, Deleted) for item in history):
        assert fields_of(user) == model.expected_fields(newest.version)
        assert link.clerk_updated_at == newest.updated_at
        assert user.is_active and get_user(clerk_id) == user
    else:
        assert link.is_tombstone and get_user(clerk_id) is None
        if policy == "deactivate":
            assert user is None or user.is_active is False
        else:
            assert user is None and User.objects.count() == users_before

    # Exactly one Django user for the Clerk id (none if it was deleted first, or
    # deleted with the "delete" policy), one stored event per svix-id, all processed.
    assert User.objects.count() - users_before == int(model.user_row_expected)
    ours = WebhookEvent.objects.filter(svix_id__startswith=f"msg_prop{example}_")
    assert ours.count() == WebhookEvent.objects.count() - events_before
    assert ours.count() == len(set(deliveries))
    assert set(ours.values_list("status", flat=True)) == {"processed"}
    assert set(ours.values_list("attempts", flat=True)) == {1}
    # One signal per effective change, in order, never one for a duplicate.
    assert [kind for kind, _ in signals_received] == [
        "deleted" if o == "deleted" else "synced"
        for o in model.outcomes.values()
        if o in ("created", "updated", "deleted")
    ]
