"""``manage.py clerk_backfill``: copy (or reconcile) every Clerk user into Django."""

from django.core.management.base import CommandError

from ...backend_api import MAX_PAGE_SIZE, BackendAPI, BackendAPIError, settings_problem
from ...backfill import SUMMARY_LINES, BackfillError, ProgressMeter, run_backfill
from ..options import PARTIAL_FAILURE, DatabaseCommand, milliseconds, verbosity_logging


class Command(DatabaseCommand):
    help = (
        "Copy every Clerk user into Django through the same sync path as the "
        "webhook (Backend API GET /v1/users). Safe to re-run at any time to "
        "reconcile. Exit status 0 when every user was applied, 2 when the listing "
        "finished but some users failed, 1 when it could not run or stopped."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="report what would change; write nothing",
        )
        parser.add_argument(
            "--since",
            metavar="TIME",
            help="only users created after TIME (Unix ms or ISO 8601); also resumes "
            "an interrupted run from the cursor it printed",
        )
        parser.add_argument("--limit", type=int, metavar="N", help="stop after N users")
        parser.add_argument(
            "--page-size",
            type=int,
            default=MAX_PAGE_SIZE,
            metavar="N",
            help=f"users per request, 1 to {MAX_PAGE_SIZE} (default {MAX_PAGE_SIZE})",
        )
        parser.add_argument(
            "--deactivate-missing",
            action="store_true",
            help="after a complete, error-free listing, apply CLERK_SYNC_ON_DELETE to "
            "linked users Clerk no longer has",
        )
        parser.add_argument(
            "--max-missing",
            type=float,
            default=10.0,
            metavar="PERCENT",
            help="with --deactivate-missing: refuse if more than this percentage of "
            "the linked users (and over 10) are missing, a sign of another "
            "instance's key (default 10)",
        )

    def handle(self, *args, **options):
        page_size = options["page_size"]
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            # Clerk would silently answer 10 users per page: refuse instead.
            raise CommandError(
                f"--page-size must be 1 to {MAX_PAGE_SIZE}, not {page_size}"
            )
        if not 0 <= options["max_missing"] <= 100:
            raise CommandError("--max-missing is a percentage, 0 to 100")
        if options["limit"] is not None and options["limit"] < 1:
            raise CommandError("--limit must be at least 1")
        since = milliseconds(options["since"], "--since") if options["since"] else None
        if options["deactivate_missing"] and (since is not None or options["limit"]):
            raise CommandError(
                "--deactivate-missing needs a complete listing: leave out --since and "
                "--limit"
            )
        # Unusable settings stop the command, rather than run it on defaults.
        problem = settings_problem()
        if problem:
            raise CommandError(problem)
        try:
            api = BackendAPI()
        except BackendAPIError as exc:  # its message names the setting and the fix
            raise CommandError(str(exc))

        self.verbosity = options["verbosity"]
        self.live = self.verbosity >= 1 and self.stdout.isatty()
        self.meter = ProgressMeter()
        self.last_width = 0
        if options["dry_run"] and self.verbosity >= 1:
            self.stdout.write("Dry run: nothing will be written.")
        try:
            with verbosity_logging(self, self.verbosity):
                report = run_backfill(
                    api,
                    page_size=page_size,
                    since=since,
                    limit=options["limit"],
                    dry_run=options["dry_run"],
                    deactivate_missing=options["deactivate_missing"],
                    max_missing_fraction=options["max_missing"] / 100,
                    on_page=self._progress,
                )
        except BackfillError as exc:
            self._end_live_line()
            self._summary(exc.report, options)
            raise CommandError(f"stopped: {exc}.{self._resume_hint(exc.report)}")
        except KeyboardInterrupt:
            self._end_live_line()
            raise CommandError("interrupted; users applied so far are kept")
        self._end_live_line()
        self._summary(report, options)
        if report.failed:
            raise CommandError(
                f"{report.failed} user(s) failed; see the lines above",
                returncode=PARTIAL_FAILURE,
            )

    # Output

    def _progress(self, report):
        if self.live:
            line = self.meter.line(report)
            # Pad over the previous, possibly longer, line.
            self.stdout.write(f"\r{line.ljust(self.last_width)}", ending="")
            self.last_width = len(line)
            self.stdout.flush()
        elif self.verbosity >= 1:  # not a terminal: one plain line a page
            self.stdout.write(f"page {report.pages}: {self.meter.line(report)}")

    def _end_live_line(self):
        if self.live:
            self.stdout.write("")

    def _resume_hint(self, report):
        if report.cursor is None or report.complete:
            return ""
        return f" Resume with: manage.py clerk_backfill --since {report.cursor - 1}"

    def _summary(self, report, options):
        for clerk_id, detail in report.failures:
            self.stderr.write(f"failed: Clerk user {clerk_id}: {detail}")
        if self.verbosity < 1:
            return
        verb = "would be " if options["dry_run"] else ""
        lines = [
            f"{report.seen:,} Clerk users read in {report.pages} page(s), "
            f"{report.requests} request(s)"
        ]
        for outcome, label in SUMMARY_LINES:
            lines.append(f"  {label}: {report.counts[outcome]:,}")
        if options["deactivate_missing"]:
            if report.complete and not report.failed:
                lines.append(
                    f"  missing from Clerk, {verb}deactivated: {report.deactivated:,}"
                )
            else:
                lines.append(
                    "  missing from Clerk: not applied (the listing was incomplete)"
                )
        if (
            report.expected is not None
            and report.complete
            and report.expected != report.seen
        ):
            lines.append(
                f"Clerk counted {report.expected:,} users at the start but {report.seen:,} "
                "were listed (users created or deleted during the run); run again to "
                "reconcile."
            )
        self.stdout.write("\n".join(lines))
