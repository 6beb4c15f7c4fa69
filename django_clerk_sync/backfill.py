"""Copy every Clerk user into Django through the sync path, page by page.

Clerk's webhooks are eventually consistent and not guaranteed, and every project
starts with users that existed before its webhook did: the backfill lists them
from the Backend API and applies each page with :func:`sync.sync_users`, so the
ordering guard and tombstones hold exactly as for webhooks. It can be re-run at
any time (from cron) to reconcile.

Pages are read in ``+created_at`` order with a ``created_at_after`` cursor rather
than ``offset``: offsets shift when users are deleted during the run (a user
would be skipped), and Clerk's default order, newest first, shifts whenever
someone signs up. The cursor is the last ``created_at`` seen, re-read inclusively
(``created_at_after = cursor - 1``) with the users of that millisecond already
applied dropped, so users sharing a millisecond across a page boundary are not
skipped, and a user deleted meanwhile cannot shift the next page. Only when a whole
page holds nothing new (more users in one millisecond than a page) does it step on
with ``offset``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import sync
from .backend_api import BackendAPIError
from .models import ClerkUserLink

if TYPE_CHECKING:
    from .backend_api import BackendAPI

#: --deactivate-missing refuses when more linked users than this (or than the
#: fraction allowed, if larger) are missing: a sign of the wrong instance's key.
MASS_DEACTIVATION_FLOOR = 10

SUMMARY_LINES = (
    (sync.CREATED, "created"),
    (sync.UPDATED, "updated"),
    (sync.UNCHANGED, "unchanged"),
    (sync.STALE, "skipped stale"),
    (sync.TOMBSTONED, "skipped deleted"),
    (sync.FAILED, "failed"),
)


@dataclass
class BackfillReport:
    counts: Counter[str] = field(default_factory=Counter)
    seen: int = 0
    expected: int | None = None  # Clerk's /v1/users/count at the start
    pages: int = 0
    requests: int = 0
    complete: bool = False  # the whole listing was read
    # The last created_at applied: resume with --since cursor - 1.
    cursor: int | None = None
    failures: list[tuple[str, str]] = field(default_factory=list)  # (clerk id, detail)
    # Linked Clerk ids Clerk no longer has.
    missing: list[str] = field(default_factory=list)
    deactivated: int = 0

    @property
    def failed(self) -> int:
        return self.counts[sync.FAILED]


class BackfillError(Exception):
    """The listing stopped; ``report`` holds what was applied before it did."""

    def __init__(self, message: str, report: BackfillReport) -> None:
        super().__init__(message)
        self.report = report


def _created_at(clerk_user: object) -> int | None:
    value = clerk_user.get("created_at") if isinstance(clerk_user, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def run_backfill(
    api: BackendAPI,
    *,
    page_size: int = 500,
    since: int | None = None,
    limit: int | None = None,
    dry_run: bool = False,
    deactivate_missing: bool = False,
    max_missing_fraction: float = 0.1,
    on_page: Callable[[BackfillReport], object] | None = None,
) -> BackfillReport:
    """List Clerk's users through ``api`` (a :class:`BackendAPI`) and sync them.

    ``since``: only users created after this Unix-ms time. ``limit``: stop after
    that many users. ``deactivate_missing``: after a complete, error-free listing,
    apply the deletion policy to linked users Clerk no longer has (refused with
    ``since`` or ``limit``, which never list everyone, and when more than
    ``max_missing_fraction`` of the linked users, and over 10, would go). ``on_page(report)`` is
    called after each page. Raises :class:`BackfillError` if the listing fails.
    """
    if deactivate_missing and (since is not None or limit is not None):
        raise ValueError(
            "deactivate_missing needs a complete listing: no since or limit"
        )
    report = BackfillReport()
    seen_ids: set[Any] | None = set() if deactivate_missing else None
    filters = {"created_at_after": since} if since is not None else {}
    try:
        report.expected = api.count_users(**filters)
        boundary_ids: set[Any]
        last_params: dict[str, int] | None
        cursor, boundary_ids, last_params, skip = since, set(), None, 0
        while True:
            params: dict[str, int] = {}
            if cursor is not None:
                # Re-read the cursor's millisecond and drop the users already
                # applied from it: ties at a page boundary are not lost, and a user
                # deleted meanwhile cannot shift the next page (an offset could).
                params = {"created_at_after": cursor - 1}
            if skip:
                params["offset"] = skip
            page = api.list_users(limit=page_size, order_by="+created_at", **params)
            report.pages += 1
            fresh = [
                u
                for u in page
                if not (
                    isinstance(u, dict)
                    and _created_at(u) == cursor
                    and u.get("id") in boundary_ids
                )
            ]
            if since is not None:
                fresh = [u for u in fresh if (_created_at(u) or 0) > since]
            if limit is not None:
                fresh = fresh[: max(0, limit - report.seen)]
            if len(page) == page_size and not fresh:
                # A whole page of users already applied (more users share one
                # millisecond than a page holds): step over them.
                skip += page_size
                if skip > 100 * page_size:
                    raise BackendAPIError(
                        f"more than {skip:,} users share created_at {cursor}; the "
                        "listing cannot advance"
                    )
                continue
            skip = 0
            if len(page) == page_size and params == last_params:
                # The cursor did not move (users without a created_at): the same
                # page would come back for ever.
                raise BackendAPIError(
                    "the listing made no progress (users without created_at?)"
                )
            last_params = params
            for result in sync.sync_users(fresh, source="backfill", dry_run=dry_run):
                report.counts[result.outcome] += 1
                if result.outcome == sync.FAILED:
                    report.failures.append((result.clerk_id, result.detail))
            report.seen += len(fresh)
            if seen_ids is not None:
                seen_ids.update(u.get("id") for u in fresh if isinstance(u, dict))
            times = [t for t in map(_created_at, fresh) if t is not None]
            if times:
                newest = max(times)
                if newest != cursor:
                    boundary_ids = set()
                cursor = newest
                boundary_ids |= {u.get("id") for u in fresh if _created_at(u) == newest}
            report.cursor = cursor
            report.requests = api.requests_sent
            if on_page:
                on_page(report)
            if len(page) < page_size or (limit is not None and report.seen >= limit):
                break
        report.complete = limit is None or report.seen < limit
    except BackendAPIError as exc:
        report.requests = api.requests_sent
        raise BackfillError(str(exc), report) from exc
    except KeyboardInterrupt:
        report.requests = api.requests_sent
        raise BackfillError("interrupted", report)

    if deactivate_missing and report.complete and not report.failed:
        live = list(
            ClerkUserLink.objects.filter(deleted_at__isnull=True).values_list(
                "clerk_id", flat=True
            )
        )
        assert seen_ids is not None  # deactivate_missing made it
        report.missing = sorted(set(live) - seen_ids)
        allowed = max(MASS_DEACTIVATION_FLOOR, int(len(live) * max_missing_fraction))
        if len(report.missing) > allowed:
            # Another instance's secret key lists other users: everyone would look
            # missing, and tombstones are for ever.
            raise BackfillError(
                f"{len(report.missing):,} of {len(live):,} linked users are missing "
                "from Clerk's listing; refusing to deactivate that many (is "
                "CLERK_SECRET_KEY this instance's key?). Rerun with "
                "--max-missing 100 if it is intended",
                report,
            )
        try:
            # A user may be missing only because the listing raced a sign-up that
            # the webhook delivered first: ask Clerk once more before deleting.
            for clerk_id in report.missing:
                if dry_run:
                    report.deactivated += 1
                elif api.get_user(clerk_id) is None:
                    if sync.delete_user(clerk_id, source="backfill").changed:
                        report.deactivated += 1
        except BackendAPIError as exc:
            raise BackfillError(f"while confirming missing users: {exc}", report)
        finally:
            report.requests = api.requests_sent
    return report


class ProgressMeter:
    """Users done / total, rate and ETA, from a report."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.started = clock()

    def line(self, report: BackfillReport) -> str:
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = report.seen / elapsed
        total = report.expected
        text = f"{report.seen:,}"
        if total:
            text += f" / {total:,} users"
            if rate > 0 and report.seen < total:
                text += f", ETA {int((total - report.seen) / rate)} s"
        else:
            text += " users"
        return f"{text}, {rate:,.0f}/s"
