"""The one path through which every change from Clerk reaches the Django users.

Webhooks (and later the middleware and the backfill) call :func:`sync_user` and
:func:`delete_user`; the rules live here once:

- upsert by Clerk user id, never by email;
- ordering: a payload whose ``updated_at`` is older than the one applied is stale;
- deletion leaves a tombstone, and nothing brings a tombstoned id back;
- signals are sent once per effective change, after the transaction commits.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import timezone as dt_timezone
from typing import TYPE_CHECKING, Any, Final

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connections, router, transaction
from django.db.models import (
    CharField,
    DateField,
    DateTimeField,
    EmailField,
    TextField,
    Value,
)
from django.db.models.functions import Lower
from django.utils import timezone
from django.utils.crypto import RANDOM_STRING_CHARS

from .conf import clerk_settings
from .field_map import current_map, import_callable, mapped_values
from .models import ClerkUserLink
from .signals import clerk_user_deleted, clerk_user_synced

if TYPE_CHECKING:
    from django.contrib.auth.models import _User
    from django.db.models import Field
    from django.dispatch import Signal

    from .field_map import ClerkUser, FieldMap

logger = logging.getLogger("django_clerk_sync.sync")

CREATED: Final = "created"
UPDATED: Final = "updated"
UNCHANGED: Final = "unchanged"
STALE: Final = "stale"
TOMBSTONED: Final = "tombstoned"  # an update for a Clerk id that was deleted: skipped
DELETED: Final = "deleted"
ALREADY_DELETED: Final = "already deleted"


FAILED: Final = "failed"  # bulk sync only: this one user could not be applied


@dataclass(frozen=True)
class SyncResult:
    clerk_id: str
    outcome: str
    user: _User | None = None
    detail: str = ""

    @property
    def changed(self) -> bool:
        return self.outcome in (CREATED, UPDATED, DELETED)


class InvalidClerkUser(ValueError):
    """The payload has no usable Clerk user id: there is nothing to sync."""


class PermanentFailure(Exception):
    """Processing this event fails the same way however often it is retried."""


class SyncConflict(PermanentFailure):
    """The Django user cannot be saved as Clerk describes it (for example, a local
    user outside Clerk already holds the same unique email). Retrying will not help
    until someone resolves the conflict."""


class SignalReceiverError(Exception):
    """A ``clerk_user_synced`` / ``clerk_user_deleted`` receiver raised after the
    change was committed."""


def clean_clerk_id(value: object) -> str:
    if (
        not isinstance(value, str)
        or not value.strip()
        or len(value) > 255
        or not value.isprintable()
        or not value.isascii()  # Clerk ids are user_ + base62
    ):
        raise InvalidClerkUser(f"no usable Clerk user id ({type(value).__name__})")
    return value


def _updated_at_ms(clerk_user: ClerkUser) -> int | None:
    value = clerk_user.get("updated_at")
    if isinstance(value, bool) or value is None:
        return None
    try:
        value = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    # Outside what the BigIntegerField holds is no time Clerk sends.
    return value if 0 <= value < 2**63 else None


def _locked_link(clerk_id: str) -> ClerkUserLink:
    """The link row for ``clerk_id``, created if new, locked for this transaction."""
    queryset = ClerkUserLink.objects.select_related("user")
    connection = connections[router.db_for_write(ClerkUserLink)]
    if connection.features.has_select_for_update_of:
        queryset = queryset.select_for_update(of=("self",))
    else:
        queryset = ClerkUserLink.objects.select_for_update()
    # get_or_create survives a concurrent insert of the same id (it re-reads).
    link, _ = queryset.get_or_create(clerk_id=clerk_id)
    return link


def get_user(clerk_id: str) -> _User | None:
    """The Django user linked to ``clerk_id``; ``None`` if unknown or deleted."""
    link = (
        ClerkUserLink.objects.select_related("user")
        .filter(clerk_id=clerk_id, deleted_at__isnull=True)
        .first()
    )
    return link.user if link else None


def _from_clerk_ms(value: int, field: Field[Any, Any]) -> date | datetime:
    """A Clerk time (Unix milliseconds) as the date or datetime ``field`` stores."""
    epoch = datetime(1970, 1, 1, tzinfo=dt_timezone.utc)
    moment = epoch + timedelta(milliseconds=value)
    if not isinstance(field, DateTimeField):
        return moment.date()
    return moment if settings.USE_TZ else timezone.make_naive(moment)


# Answers whether a login value is held by another user: (user_model, user, candidate).
_TakenCheck = Callable[[Any, Any, str], bool]
# Told of a signal receiver that raised: (clerk_id, exception).
_OnError = Callable[[str, Exception], None]


class _Unusable(Exception):
    """A mapped value the field cannot hold: the field is left as it is."""


def _clean_text(value: str) -> str:
    # Lone surrogates (valid JSON escapes) and NUL cannot be stored by every database.
    value = value.replace("\x00", "")
    return value.encode("utf-8", "replace").decode("utf-8")


def _coerce(field: Field[Any, Any], value: Any, clerk_id: str) -> Any:
    """``value`` as ``field`` stores it; raises :class:`_Unusable`."""
    is_ms = isinstance(value, int) and not isinstance(value, bool)
    if isinstance(field, DateField) and is_ms:
        # Clerk's times (created_at, last_sign_in_at, ...) are Unix milliseconds.
        try:
            return _from_clerk_ms(value, field)
        except (OverflowError, ValueError):
            raise _Unusable("not a representable time")
    if isinstance(field, (CharField, TextField)):
        if value is None:
            return None if field.null else ""
        if not isinstance(value, str):
            value = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
        value = _clean_text(value)
        if field.max_length and len(value) > field.max_length:
            if isinstance(field, EmailField):
                # A cut address is another address (maybe another domain): refuse it.
                raise _Unusable(f"{len(value)} characters, over max_length")
            logger.warning(
                "Clerk user %s: value for %r is %d characters, truncated to the "
                "field's max_length %d",
                clerk_id,
                field.name,
                len(value),
                field.max_length,
                extra={
                    "clerk_id": clerk_id,
                    "field": field.name,
                    "reason": "truncated",
                },
            )
            value = value[: field.max_length]
        return value
    if value is None:
        return None
    try:
        value = field.to_python(value)
    except (ValidationError, TypeError, ValueError, OverflowError):
        raise _Unusable(f"not a valid {field.get_internal_type()}")
    if isinstance(value, datetime) and settings.USE_TZ and timezone.is_naive(value):
        value = timezone.make_aware(value, dt_timezone.utc)
    return value


def _taken_in_database(user_model: Any, user: Any, candidate: str) -> bool:
    field = user_model.USERNAME_FIELD
    # LOWER(), as the page check compares: one index on LOWER(username) serves both.
    others = user_model._default_manager.annotate(_login=Lower(field)).filter(
        _login=Lower(Value(candidate))
    )
    if user.pk is not None:
        others = others.exclude(pk=user.pk)
    return others.exists()


class _TakenUsernames:
    """The login values a page of users may want, looked up in one query.

    Case-insensitive, like the per-user check; values chosen during the page are
    remembered so two new users in one page never get the same one.
    """

    def __init__(self, user_model: Any, candidates: Iterable[Any]) -> None:
        field = user_model.USERNAME_FIELD
        # Only values a database can compare (no NUL, no lone surrogate).
        lowered = {
            c.lower()
            for c in candidates
            if isinstance(c, str) and c and c == _clean_text(c)
        }
        rows = (
            user_model._default_manager.annotate(_login=Lower(field))
            .filter(_login__in=lowered)
            .values_list("_login", "pk")
        )
        self.holders = {login: ("pk", pk) for login, pk in rows}

    @staticmethod
    def _owner(user: Any) -> tuple[str, Any]:
        return ("pk", user.pk) if user.pk is not None else ("new", id(user))

    def __call__(self, user_model: Any, user: Any, candidate: str) -> bool:
        holder = self.holders.get(candidate.lower())
        return holder is not None and holder != self._owner(user)

    def claim(self, user: Any, value: Any) -> None:
        if isinstance(value, str) and value:
            self.holders[value.lower()] = self._owner(user)


def _free_username(
    user_model: Any,
    user: Any,
    wanted: Any,
    clerk_id: str,
    taken_check: _TakenCheck | None = None,
) -> Any:
    """The Clerk username when set and free, otherwise one derived from the Clerk id."""
    field = user_model.USERNAME_FIELD
    current = getattr(user, field, None)
    check = taken_check or _taken_in_database

    def taken(candidate: str) -> bool:
        return check(user_model, user, candidate)

    if wanted and (wanted == current or not taken(wanted)):
        return wanted
    max_length = user_model._meta.get_field(field).max_length or 255
    candidate, n = clerk_id[:max_length], 1
    while candidate != current and taken(candidate):
        n += 1
        suffix = f"-{n}"
        candidate = clerk_id[: max_length - len(suffix)] + suffix
    return candidate


def _held_by_another_clerk_user(user_model: Any, user: Any) -> bool:
    """Does another Clerk-linked user hold one of ``user``'s unique values?

    Clerk keeps emails and usernames unique within an instance, so such a clash is
    a change still on its way (a swap delivered out of order, two syncs racing for
    one username): a retry resolves it. A clash with a local user outside Clerk
    does not resolve itself.
    """
    for field in user_model._meta.concrete_fields:
        if not field.unique or field.primary_key:
            continue
        value = getattr(user, field.attname)
        if value in (None, ""):
            continue
        holders = user_model._default_manager.filter(**{field.attname: value})
        if user.pk is not None:
            holders = holders.exclude(pk=user.pk)
        if holders.filter(
            clerk_link__isnull=False, clerk_link__deleted_at__isnull=True
        ).exists():
            return True
    return False


def email_is_username(user_model: type[_User]) -> bool:
    return user_model.USERNAME_FIELD == user_model.get_email_field_name()


def _apply_fields(
    user_model: Any,
    user: Any,
    clerk_user: ClerkUser,
    clerk_id: str,
    taken_check: _TakenCheck | None = None,
    field_map: FieldMap | None = None,
) -> list[str]:
    """Set the mapped fields on ``user``; return the names of those that changed.

    ``taken_check(user_model, user, candidate)`` answers whether a login value is
    held by another user (default: one query per candidate). ``field_map`` is
    :func:`~.field_map.current_map`, when the caller has it already.
    """
    opts = user_model._meta
    values = mapped_values(clerk_user, field_map)
    username_field = user_model.USERNAME_FIELD
    changed = []
    for name, value in values.items():
        field = opts.get_field(name)
        try:
            value = _coerce(field, value, clerk_id)
        except _Unusable as reason:
            # One odd value must not stop the rest of the user from syncing.
            logger.warning(
                "Clerk user %s: the value mapped to %r is unusable (%s); field left "
                "unchanged",
                clerk_id,
                name,
                reason,
                extra={"clerk_id": clerk_id, "field": name, "reason": str(reason)},
            )
            if user.pk is not None or name != username_field:
                continue
            value = None
        if name == username_field:
            if email_is_username(user_model):
                # Email-as-username models: a user without an email still needs a
                # unique, non-empty login value.
                value = value or clerk_id
            else:
                value = _free_username(user_model, user, value, clerk_id, taken_check)
        if getattr(user, field.attname) != value:
            setattr(user, field.attname, value)
            changed.append(name)
    if username_field not in values and not getattr(user, username_field, None):
        setattr(
            user,
            username_field,
            _free_username(user_model, user, None, clerk_id, taken_check),
        )
        changed.append(username_field)
    return changed


def _send_after_commit(
    signal: Signal, on_error: _OnError | None = None, **kwargs: Any
) -> None:
    """Send ``signal`` once the transaction commits. A raising receiver raises
    :class:`SignalReceiverError` there, or, given ``on_error``, is reported to it
    and the remaining signals of the transaction are still sent."""

    def send() -> None:
        try:
            signal.send(**kwargs)
        except Exception as exc:
            error = SignalReceiverError(
                f"a {signal_name(signal)} receiver raised {type(exc).__name__}: {exc}"
            )
            if on_error is None:
                raise error from exc
            on_error(kwargs.get("clerk_id") or kwargs["clerk_user"].get("id"), exc)

    transaction.on_commit(send, using=router.db_for_write(ClerkUserLink))


def signal_name(signal: Signal) -> str:
    return "clerk_user_deleted" if signal is clerk_user_deleted else "clerk_user_synced"


def announce(
    result: SyncResult,
    *,
    clerk_user: ClerkUser | None = None,
    source: str,
    on_error: _OnError | None = None,
) -> None:
    """Send the signal for an effective change once the transaction commits."""
    user_model = get_user_model()
    if result.outcome == DELETED:
        _send_after_commit(
            clerk_user_deleted,
            on_error,
            sender=user_model,
            user=result.user,
            clerk_id=result.clerk_id,
            source=source,
        )
    elif result.outcome in (CREATED, UPDATED):
        _send_after_commit(
            clerk_user_synced,
            on_error,
            sender=user_model,
            user=result.user,
            clerk_user=clerk_user,
            created=result.outcome == CREATED,
            source=source,
        )


def sync_user(clerk_user: ClerkUser, *, source: str) -> SyncResult:
    """Create or update the Django user for one Clerk user object.

    Raises :class:`InvalidClerkUser` for a payload without an id and
    :class:`SyncConflict` when the user row cannot be saved.
    """
    if not isinstance(clerk_user, dict):
        raise InvalidClerkUser("the Clerk user is not an object")
    clerk_id = clean_clerk_id(clerk_user.get("id"))
    updated_at = _updated_at_ms(clerk_user)
    user_model = get_user_model()

    with transaction.atomic(using=router.db_for_write(ClerkUserLink)):
        link = _locked_link(clerk_id)
        if link.is_tombstone:
            logger.info(
                "Clerk user %s is deleted; %s update skipped",
                clerk_id,
                source,
                extra={"clerk_id": clerk_id, "source": source, "outcome": TOMBSTONED},
            )
            return SyncResult(clerk_id, TOMBSTONED, link.user)
        if link.clerk_updated_at is not None and (
            updated_at is None or updated_at < link.clerk_updated_at
        ):
            logger.info(
                "Clerk user %s: stale %s update (updated_at %s < applied %s) skipped",
                clerk_id,
                source,
                updated_at,
                link.clerk_updated_at,
                extra={"clerk_id": clerk_id, "source": source, "outcome": STALE},
            )
            return SyncResult(clerk_id, STALE, link.user)

        user: Any = link.user
        created = user is None
        if created:
            user = user_model()
        changed = _apply_fields(user_model, user, clerk_user, clerk_id)
        try:
            with transaction.atomic(using=router.db_for_write(user_model)):
                if created:
                    if hasattr(user, "set_unusable_password"):
                        user.set_unusable_password()
                    user.save()
                elif changed:
                    user.save(update_fields=changed)
        except IntegrityError as exc:
            if _held_by_another_clerk_user(user_model, user):
                raise  # transient: Svix's retry applies it once the other change lands
            # The database's message (in last_error's traceback) can quote the
            # clashing email: it stays out of this message, which is shown and printed.
            raise SyncConflict(
                f"Clerk user {clerk_id}: the Django user could not be saved "
                f"({type(exc).__name__}): a unique value is held by a local user "
                "outside Clerk, or a required field has no value; resolve it, then "
                "replay the event."
            ) from exc

        if updated_at is not None:
            link.clerk_updated_at = updated_at
        if created or link.user_id != user.pk:
            link.user = user
        link.save()

        outcome = CREATED if created else (UPDATED if changed else UNCHANGED)
        result = SyncResult(clerk_id, outcome, user)
        announce(result, clerk_user=clerk_user, source=source)
        logger.info(
            "Clerk user %s %s (%s)",
            clerk_id,
            outcome,
            source,
            extra={"clerk_id": clerk_id, "source": source, "outcome": outcome},
        )
        return result


def _apply_delete_policy(user: Any) -> None:
    policy = clerk_settings.ON_DELETE
    if policy == "deactivate":
        if user.is_active:
            user.is_active = False
            user.save(update_fields=["is_active"])
    elif policy == "delete":
        user.delete()
    else:
        handler = import_callable(policy) if isinstance(policy, str) else policy
        handler(user)


def delete_user(clerk_id: str, *, source: str) -> SyncResult:
    """Tombstone ``clerk_id`` and apply ``CLERK_SYNC_ON_DELETE`` to its Django user.

    Deleting an id never seen still writes the tombstone, so a late
    ``user.created`` for it is ignored.
    """
    clerk_id = clean_clerk_id(clerk_id)
    with transaction.atomic(using=router.db_for_write(ClerkUserLink)):
        link = _locked_link(clerk_id)
        if link.is_tombstone:
            return SyncResult(clerk_id, ALREADY_DELETED, link.user)
        user = link.user
        link.deleted_at = timezone.now()
        if user is not None and clerk_settings.ON_DELETE == "delete":
            link.user = None  # the row goes; the tombstone stays
        link.save()
        if user is not None:
            _apply_delete_policy(user)
        result = SyncResult(clerk_id, DELETED, user)
        announce(result, source=source)
        logger.info(
            "Clerk user %s deleted (%s)",
            clerk_id,
            source,
            extra={"clerk_id": clerk_id, "source": source, "outcome": result.outcome},
        )
        return result


# Bulk: a page of users (the backfill) in a bounded number of queries.


def _newest_per_id(
    clerk_users: Iterable[Any],
) -> tuple[dict[str, ClerkUser], list[SyncResult]]:
    """Valid users by Clerk id (the newest when an id repeats), and results for the
    records that cannot be synced at all."""
    valid: dict[str, ClerkUser] = {}
    invalid: list[SyncResult] = []
    for position, clerk_user in enumerate(clerk_users):
        try:
            if not isinstance(clerk_user, dict):
                raise InvalidClerkUser("the Clerk user is not an object")
            clerk_id = clean_clerk_id(clerk_user.get("id"))
        except InvalidClerkUser as exc:
            invalid.append(SyncResult(f"#{position}", FAILED, detail=str(exc)))
            continue
        kept = valid.get(clerk_id)
        if kept is None or (_updated_at_ms(clerk_user) or 0) >= (
            _updated_at_ms(kept) or 0
        ):
            valid[clerk_id] = clerk_user
    return valid, invalid


def _locked_links(clerk_ids: list[str], lock: bool) -> dict[str, ClerkUserLink]:
    queryset = ClerkUserLink.objects.filter(clerk_id__in=clerk_ids)
    if lock:
        connection = connections[router.db_for_write(ClerkUserLink)]
        if connection.features.has_select_for_update_of:
            queryset = queryset.select_for_update(of=("self",)).select_related("user")
        else:
            # No FOR UPDATE OF: a join would lock the user rows too; fetch them apart.
            queryset = queryset.select_for_update().prefetch_related("user")
    else:
        queryset = queryset.select_related("user")
    return {link.clerk_id: link for link in queryset}


class _SlowPathNeeded(Exception):
    """The page's bulk write hit a conflict: apply its users one by one instead."""


# One random byte from the OS per letter, mapped onto Django's 62 letters and digits;
# the bytes 248-255 are dropped so that each letter is exactly as likely (248 = 4 * 62).
_RANDOM_LETTER = bytes(
    ord(RANDOM_STRING_CHARS[byte % len(RANDOM_STRING_CHARS)]) if byte < 248 else 0
    for byte in range(256)
)
_OUT_OF_RANGE = bytes(range(248, 256))


def _has_djangos_set_unusable_password(user: Any) -> bool:
    from django.contrib.auth.base_user import AbstractBaseUser

    method = getattr(type(user), "set_unusable_password", None)
    return method is AbstractBaseUser.set_unusable_password


def _set_unusable_passwords(users: list[Any]) -> None:
    """What Django's ``set_unusable_password()`` does, for a page of users at once.

    Django's method (``"!"`` and 40 random letters and digits) reads the OS's random
    source once per letter, 40 system calls a user: the largest single cost of a bulk
    page. Here the same value comes from one read for the page.
    """
    from django.contrib.auth.hashers import (
        UNUSABLE_PASSWORD_PREFIX,
        UNUSABLE_PASSWORD_SUFFIX_LENGTH,
    )

    length = UNUSABLE_PASSWORD_SUFFIX_LENGTH
    random_bytes = b""
    while len(random_bytes) < length * len(users):
        chunk = secrets.token_bytes(length * len(users) - len(random_bytes) + 16)
        random_bytes += chunk.translate(_RANDOM_LETTER, _OUT_OF_RANGE)
    letters = random_bytes.decode("ascii")
    for n, user in enumerate(users):
        user.password = (
            UNUSABLE_PASSWORD_PREFIX + letters[n * length : (n + 1) * length]
        )


def _plan_one(
    user_model: Any,
    clerk_id: str,
    clerk_user: ClerkUser,
    link: ClerkUserLink | None,
    taken: _TakenUsernames | None,
    new_users: list[tuple[str, Any, ClerkUserLink | None]],
    touched_links: list[ClerkUserLink],
    field_map: FieldMap | None,
) -> tuple[SyncResult, list[str]]:
    """Decide (and prepare in memory) what one user of a page needs; return the
    result and the names of the fields that changed."""
    updated_at = _updated_at_ms(clerk_user)
    if link is not None and link.is_tombstone:
        return SyncResult(clerk_id, TOMBSTONED, link.user), []
    if (
        link is not None
        and link.clerk_updated_at is not None
        and (updated_at is None or updated_at < link.clerk_updated_at)
    ):
        return SyncResult(clerk_id, STALE, link.user), []
    user: Any = link.user if link is not None else None
    created = user is None
    if created:
        user = user_model()
    changed = _apply_fields(user_model, user, clerk_user, clerk_id, taken, field_map)
    if taken is not None:
        taken.claim(user, getattr(user, user_model.USERNAME_FIELD))
    if created:
        if hasattr(user, "set_unusable_password") and not (
            _has_djangos_set_unusable_password(user)
        ):
            user.set_unusable_password()  # the model's own; Django's is set per page
        new_users.append((clerk_id, user, link))
    if (
        link is not None
        and updated_at is not None
        and (link.clerk_updated_at is None or updated_at > link.clerk_updated_at)
    ):
        link.clerk_updated_at = updated_at
        touched_links.append(link)
    outcome = CREATED if created else (UPDATED if changed else UNCHANGED)
    return SyncResult(clerk_id, outcome, user), changed


def _link_new_users(links: list[ClerkUserLink]) -> None:
    """Write the ``user`` of links inserted earlier in this transaction."""
    if not links:
        return
    using = router.db_for_write(ClerkUserLink)
    connection = connections[using]
    if connection.vendor == "postgresql":
        # One UPDATE ... FROM (VALUES ...) per 1,000 links: a few parameters a row,
        # where bulk_update builds a CASE per row and an upsert sends every column.
        opts = ClerkUserLink._meta
        user_field = opts.get_field("user")
        quote = connection.ops.quote_name
        user_type = user_field.db_type(connection)
        with connection.cursor() as cursor:
            for start in range(0, len(links), 1000):
                chunk = links[start : start + 1000]
                rows = ", ".join([f"(%s, %s::{user_type})"] * len(chunk))
                cursor.execute(
                    f"UPDATE {quote(opts.db_table)} AS link "
                    f"SET {quote(user_field.column)} = new.user_id "
                    f"FROM (VALUES {rows}) AS new (clerk_id, user_id) "
                    f"WHERE link.{quote(opts.get_field('clerk_id').column)} = new.clerk_id",
                    [
                        value
                        for link in chunk
                        for value in (link.clerk_id, link.user_id)
                    ],
                )
    elif connection.features.supports_update_conflicts_with_target:
        # An upsert onto those rows: one statement, a fraction of the cost of
        # bulk_update's CASE per row.
        ClerkUserLink.objects.bulk_create(
            links,
            update_conflicts=True,
            unique_fields=["clerk_id"],
            update_fields=["user"],
        )
    else:
        ClerkUserLink.objects.bulk_update(links, ["user"])


def _plan_and_apply_page(
    valid: dict[str, ClerkUser],
    *,
    source: str,
    dry_run: bool,
    on_receiver_error: _OnError,
) -> list[SyncResult]:
    user_model = get_user_model()
    links = _locked_links(list(valid), lock=not dry_run)
    taken = None
    if not email_is_username(user_model):
        wanted = [u.get("username") for u in valid.values()] + list(valid)
        taken = _TakenUsernames(user_model, wanted)

    try:
        field_map = current_map()  # read once per page, still live between pages
    except Exception:
        field_map = None  # an unusable source fails each user, as sync_user does
    results: list[SyncResult] = []
    new_users: list[tuple[str, Any, ClerkUserLink | None]] = []
    updated_users: list[Any] = []
    changed_fields: set[str] = set()
    touched_links: list[ClerkUserLink] = []
    for clerk_id, clerk_user in valid.items():
        link = links.get(clerk_id)
        try:
            planned, changed = _plan_one(
                user_model,
                clerk_id,
                clerk_user,
                link,
                taken,
                new_users,
                touched_links,
                field_map,
            )
        except Exception as exc:  # one bad record is reported, not fatal to the page
            results.append(_failed(clerk_id, source, exc))
            continue
        results.append(planned)
        if planned.outcome == UPDATED:
            updated_users.append(planned.user)
            changed_fields.update(changed)

    if dry_run:
        return results

    using = router.db_for_write(user_model)
    if new_users and not connections[using].features.can_return_rows_from_bulk_insert:
        raise _SlowPathNeeded("this database cannot return ids from a bulk insert")
    _set_unusable_passwords(
        [user for _, user, _ in new_users if _has_djangos_set_unusable_password(user)]
    )
    try:
        with transaction.atomic(using=using):
            new_links = [
                ClerkUserLink(
                    clerk_id=clerk_id, clerk_updated_at=_updated_at_ms(valid[clerk_id])
                )
                for clerk_id, _, link in new_users
                if link is None
            ]
            # Where writers lock rows, new links first, then their users: the order
            # sync_user takes them in. Users first deadlocked with a webhook or a
            # first sight creating the same user, each waiting for the other's row
            # (the link, the username). SQLite locks the whole database instead, so
            # there the links are written once, after their users.
            links_first = connections[using].features.has_select_for_update
            if links_first:
                ClerkUserLink.objects.bulk_create(new_links)
            user_model._default_manager.bulk_create([user for _, user, _ in new_users])
            inserted = iter(new_links)
            for _, user, link in new_users:
                if link is None:
                    next(inserted).user = user
                else:  # the Django user was removed locally: link the new one
                    link.user = user
                    touched_links.append(link)
            if links_first:
                _link_new_users(new_links)
            else:
                ClerkUserLink.objects.bulk_create(new_links)
            if updated_users:
                user_model._default_manager.bulk_update(
                    updated_users, sorted(changed_fields)
                )
            if touched_links:
                now = timezone.now()
                for link in touched_links:
                    link.synced_at = now
                ClerkUserLink.objects.bulk_update(
                    touched_links, ["user", "clerk_updated_at", "synced_at"]
                )
    except IntegrityError as exc:
        # The type only: PostgreSQL's message quotes the clashing value (an email).
        raise _SlowPathNeeded(type(exc).__name__) from exc

    for result in results:
        announce(
            result,
            clerk_user=valid.get(result.clerk_id),
            source=source,
            on_error=on_receiver_error,
        )
    return results


def _sync_one(clerk_user: ClerkUser, clerk_id: str, source: str) -> SyncResult:
    try:
        return sync_user(clerk_user, source=source)
    except Exception as exc:  # one bad user is reported, not fatal to the page
        return _failed(clerk_id, source, exc)


def _failed(clerk_id: str, source: str, exc: Exception) -> SyncResult:
    """Log one user of a page that could not be synced; its ``FAILED`` result."""
    # The exception's text can hold user data (a database error quoting an email),
    # so only its type is reported.
    detail = type(exc).__name__
    if isinstance(exc, SyncConflict):
        detail += (
            ": a unique value is held by a local user outside Clerk, or a "
            "required field has no value"
        )
    logger.warning(
        "Clerk user %s could not be synced (%s)",
        clerk_id,
        source,
        extra={
            "clerk_id": clerk_id,
            "source": source,
            "outcome": FAILED,
            "error": type(exc).__name__,
        },
    )
    return SyncResult(clerk_id, FAILED, detail=detail)


def sync_users(
    clerk_users: Iterable[Any], *, source: str, dry_run: bool = False
) -> list[SyncResult]:
    """Apply a page of Clerk user objects with the same rules as :func:`sync_user`.

    Existing links are read and locked in one query, usernames checked in one,
    new links and new users inserted in one each (on databases with row locks,
    links first, the order :func:`sync_user` locks in, then pointed at their users
    in one more), changed users and links updated in one each: a handful of queries
    per page, however large. A page whose bulk
    write conflicts (a unique value, a concurrent webhook) is applied user by user
    instead, and a user that still fails is reported as ``failed``. With
    ``dry_run`` nothing is written and the results say what would happen.
    Returns one :class:`SyncResult` per input record.
    """
    valid, results = _newest_per_id(clerk_users)
    if not valid:
        return results
    receiver_errors: dict[str, str] = {}

    def on_receiver_error(clerk_id: str, exc: Exception) -> None:
        logger.error(
            "Clerk user %s: a signal receiver raised %s (%s); the change is kept",
            clerk_id,
            type(exc).__name__,
            source,
            extra={"clerk_id": clerk_id, "source": source, "error": type(exc).__name__},
        )
        receiver_errors[clerk_id] = f"a signal receiver raised {type(exc).__name__}"

    try:
        with transaction.atomic(using=router.db_for_write(ClerkUserLink)):
            page = _plan_and_apply_page(
                valid,
                source=source,
                dry_run=dry_run,
                on_receiver_error=on_receiver_error,
            )
    except _SlowPathNeeded as reason:
        logger.info(
            "Bulk sync fell back to one user at a time: %s",
            reason,
            extra={"source": source, "reason": str(reason)},
        )
        page = [
            _sync_one(clerk_user, clerk_id, source)
            for clerk_id, clerk_user in valid.items()
        ]
    else:
        # The line sync_user writes for each user (the fallback above gets it there).
        if not dry_run and logger.isEnabledFor(logging.INFO):
            for r in page:
                if r.outcome != FAILED:
                    logger.info(
                        "Clerk user %s %s (%s)",
                        r.clerk_id,
                        r.outcome,
                        source,
                        extra={
                            "clerk_id": r.clerk_id,
                            "source": source,
                            "outcome": r.outcome,
                        },
                    )
    # Signals are sent on commit: a receiver that raised turns its user's result
    # into a failure (the change itself is committed and stays).
    return results + [
        SyncResult(r.clerk_id, FAILED, r.user, receiver_errors[r.clerk_id])
        if r.clerk_id in receiver_errors
        else r
        for r in page
    ]
