"""Send a Svix-signed Clerk webhook to an endpoint, for local development.

    python manage.py clerk_send_webhook http://127.0.0.1:8000/api/webhooks/clerk/ \\
        user.created --clerk-id user_123 --email ada@example.com --first-name Ada

The delivery is built and signed by :mod:`django_clerk_sync.testing` with svix's own
signer, exactly as Clerk sends it, and redirects are not followed (Svix does not
follow them either). The command prints the HTTP status and the response body; it
succeeds whatever the status and fails only when nothing could be sent.
"""

import html
import http
import http.client
import json
import re
import sys
import urllib.error
from pathlib import Path
from urllib.parse import urlsplit

from django.core.management.base import BaseCommand, CommandError

from ...checks import secret_problem
from ...conf import clerk_settings
from ...testing import clerk_user, deleted_user, deliver, event, new_svix_id
from ..options import milliseconds

EVENT_TYPES = ("user.created", "user.updated", "user.deleted")
USER_OPTIONS = ("email", "phone", "first_name", "last_name", "username", "updated_at")
MAX_BODY_SHOWN = 2000
TIMEOUT = 15  # seconds; Svix counts a slower answer as a failed delivery


def _one_line(text):
    return " ".join(str(text).split())


class Command(BaseCommand):
    help = (
        "Send a Clerk webhook signed with svix's signer to URL, as Clerk would: "
        "a user.created / user.updated / user.deleted built from the options, or a "
        "captured payload with --body-file. Prints the HTTP status and the response "
        "body; fails only when nothing could be sent."
    )

    # A client-side tool: the project's own system checks need not pass to use it.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument(
            "url",
            metavar="URL",
            help="the webhook endpoint, e.g. http://127.0.0.1:8000/api/webhooks/clerk/",
        )
        parser.add_argument(
            "event_type",
            nargs="?",
            choices=EVENT_TYPES,
            metavar="EVENT_TYPE",
            help=f"one of {', '.join(EVENT_TYPES)} (leave out with --body-file)",
        )
        parser.add_argument(
            "--clerk-id",
            metavar="ID",
            help="the Clerk user id (user_...); required for user.updated and "
            "user.deleted, generated for user.created",
        )
        parser.add_argument(
            "--email", metavar="ADDRESS", help="primary email address (default: none)"
        )
        parser.add_argument(
            "--phone",
            metavar="NUMBER",
            help="primary phone number, e.g. +15555550100 (default: none)",
        )
        parser.add_argument("--first-name", metavar="NAME")
        parser.add_argument("--last-name", metavar="NAME")
        parser.add_argument("--username", metavar="NAME")
        parser.add_argument(
            "--updated-at",
            metavar="TIME",
            help="the user's updated_at: Unix milliseconds or an ISO 8601 time "
            "(default: now); older than the last one applied is skipped as stale",
        )
        parser.add_argument(
            "--svix-id",
            metavar="MSG_ID",
            help="the message id (default: a new msg_...); repeat one to send a "
            "duplicate, as a Svix retry or a dashboard replay does",
        )
        parser.add_argument(
            "--secret",
            metavar="WHSEC",
            help="the signing secret (whsec_...); default: the first of "
            "settings.CLERK_WEBHOOK_SECRET",
        )
        parser.add_argument(
            "--body-file",
            metavar="FILE",
            help="send this file's bytes as the body, as they are (a payload captured "
            "from the Clerk dashboard); - reads standard input",
        )

    def handle(self, *args, **options):
        url = self._checked_url(options["url"])
        secret = self._secret(options["secret"])
        if options["body_file"]:
            body, what = self._body_from_file(options)
        else:
            body, what = self._body_from_options(options)
        svix_id = options["svix_id"] or new_svix_id()

        verbosity = options["verbosity"]
        if verbosity >= 1:
            self.stdout.write(f"Sending {what} to {url} with svix-id {svix_id}")
        status, headers, response_body = self._send(url, secret, body, svix_id)
        try:
            phrase = http.HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        line = f"HTTP {status} {phrase}".rstrip()
        if verbosity < 1:
            # Quiet: only an answer Svix would count as failed is worth a line.
            if not 200 <= status < 300:
                self.stderr.write(line)
            return
        style = self.style.SUCCESS if 200 <= status < 300 else self.style.ERROR
        self.stdout.write(style(line))
        text = self._shown_body(headers, response_body)
        if text:
            self.stdout.write(text)
        for hint in self._hints(status, headers, response_body):
            self.stdout.write(self.style.WARNING(hint))

    # Input

    def _checked_url(self, url):
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError as exc:
            raise CommandError(f"bad URL {url!r}: {exc}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CommandError(
                f"bad URL {url!r}: give an http:// or https:// URL with a host, e.g. "
                "http://127.0.0.1:8000/api/webhooks/clerk/"
            )
        return url

    def _secret(self, secret):
        where = "--secret"
        if secret is None:
            where = "CLERK_WEBHOOK_SECRET"
            secrets = clerk_settings.WEBHOOK_SECRETS
            if not secrets:
                raise CommandError(
                    "no signing secret: set CLERK_WEBHOOK_SECRET in the settings or "
                    "pass --secret whsec_..."
                )
            secret = secrets[0]
        problem = secret_problem(secret)  # never show the secret itself
        if problem:
            raise CommandError(f"the signing secret ({where}) {problem}")
        return secret

    def _body_from_file(self, options):
        given = [name for name in ("clerk_id", *USER_OPTIONS) if options[name]]
        if options["event_type"] or given:
            extra = options["event_type"] or "--" + given[0].replace("_", "-")
            raise CommandError(
                f"--body-file is sent as it is: leave out {extra} (EVENT_TYPE and the "
                "user options build a payload instead)"
            )
        name = options["body_file"]
        try:
            if name == "-":
                body = sys.stdin.buffer.read()
            else:
                body = Path(name).read_bytes()
        except OSError as exc:
            raise CommandError(
                f"cannot read --body-file {name}: {exc.strerror or _one_line(exc)}"
            )
        try:
            event_type = json.loads(body).get("type")
        except (ValueError, AttributeError):
            event_type = None
        label = "standard input" if name == "-" else name
        kind = event_type if isinstance(event_type, str) else "a payload"
        return body, f"{_one_line(kind)} from {label} ({len(body)} bytes)"

    def _body_from_options(self, options):
        event_type = options["event_type"]
        if not event_type:
            raise CommandError(
                f"give an EVENT_TYPE ({', '.join(EVENT_TYPES)}) or --body-file FILE"
            )
        clerk_id = options["clerk_id"]
        if event_type == "user.deleted":
            if not clerk_id:
                raise CommandError("user.deleted needs --clerk-id user_...")
            given = [name for name in USER_OPTIONS if options[name]]
            if given:
                raise CommandError(
                    f"user.deleted carries only the id: leave out --"
                    f"{given[0].replace('_', '-')}"
                )
            return (
                event(event_type, deleted_user(clerk_id)),
                f"{event_type} for {clerk_id}",
            )
        if event_type == "user.updated" and not clerk_id:
            raise CommandError(
                "user.updated needs --clerk-id user_... (the user to update)"
            )
        updated_at = (
            None
            if options["updated_at"] is None
            else milliseconds(options["updated_at"], "--updated-at")
        )
        user = clerk_user(
            clerk_id,
            email=options["email"],
            phone=options["phone"],
            first_name=options["first_name"],
            last_name=options["last_name"],
            username=options["username"],
            updated_at=updated_at,
            created_at=updated_at,
        )
        return event(event_type, user), f"{event_type} for {user['id']}"

    # Delivery

    def _send(self, url, secret, body, svix_id):
        try:
            return deliver(url, secret, body, svix_id=svix_id, timeout=TIMEOUT)
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, TimeoutError):
                raise CommandError(f"{url} did not answer within {TIMEOUT} seconds")
            if isinstance(reason, OSError) and reason.strerror:
                reason = reason.strerror
            raise CommandError(f"could not connect to {url}: {_one_line(reason)}")
        except TimeoutError:
            raise CommandError(f"{url} did not answer within {TIMEOUT} seconds")
        except (OSError, http.client.HTTPException) as exc:
            detail = (
                getattr(exc, "strerror", None) or _one_line(exc) or type(exc).__name__
            )
            raise CommandError(f"sending to {url} failed: {detail}")
        except ValueError as exc:  # e.g. a header value http.client refuses
            raise CommandError(f"cannot send this delivery: {_one_line(exc)}")

    def _shown_body(self, headers, body):
        text = body.decode("utf-8", errors="replace")
        content_type = {k.lower(): v for k, v in headers.items()}.get(
            "content-type", ""
        )
        if content_type.startswith("text/html"):
            # Django's debug pages: the title names the error; the rest is markup.
            title = re.search(r"<title>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
            summary = _one_line(html.unescape(title.group(1))) if title else "no title"
            return f"(an HTML page of {len(body)} bytes: {summary})"
        if len(text) > MAX_BODY_SHOWN:
            more = len(text) - MAX_BODY_SHOWN
            text = f"{text[:MAX_BODY_SHOWN]}\n... ({more} more characters)"
        return text

    def _hints(self, status, headers, body):
        headers = {name.lower(): value for name, value in headers.items()}
        try:
            reason = json.loads(body).get("reason") or ""
        except (ValueError, AttributeError):
            reason = ""
        if 300 <= status < 400:
            yield (
                f"Redirected to {headers.get('location', '?')}: Svix does not follow "
                "redirects, so Clerk would count this delivery as failed. Use the "
                "final URL."
            )
        if status == 404:
            yield (
                "Nothing answers at this URL. include('django_clerk_sync.urls') serves "
                "clerk/ under the prefix it is included at, e.g. "
                "path('api/webhooks/', include(...)) -> /api/webhooks/clerk/."
            )
        if status == 400 and "no signature matches" in str(reason):
            yield (
                "The endpoint uses another signing secret than this command "
                "(--secret, else CLERK_WEBHOOK_SECRET in these settings)."
            )
        if headers.get("webhook-delivery") == "abort-message":
            yield "webhook-delivery: abort-message (Svix stops retrying this message)"
