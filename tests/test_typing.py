"""The type hints hold for users: mypy with django-stubs, as a project would run it.

One mypy run (the project's own configuration in pyproject.toml) checks the package
and two small user modules: one that uses the public API correctly must pass, one
that misuses it must fail with exactly the errors marked on its lines. Skipped where
the ``types`` extra (mypy, django-stubs) is not installed.
"""

import hashlib
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip(
    "mypy", reason='mypy is not installed: pip install -e ".[types]" (in this checkout)'
)
pytest.importorskip(
    "mypy_django_plugin",
    reason='django-stubs is not installed: pip install -e ".[types]" (in this checkout)',
)

ROOT = Path(__file__).resolve().parent.parent

CORRECT_USE = """
from typing import Any

from django.http import HttpRequest, HttpResponse

from django_clerk_sync import get_user
from django_clerk_sync.backend_api import BackendAPI, BackendAPIError
from django_clerk_sync.backends import ClerkRequest, authenticate_token
from django_clerk_sync.backfill import BackfillReport, run_backfill
from django_clerk_sync.middleware import ClerkAuthenticationMiddleware
from django_clerk_sync.signals import clerk_user_synced
from django_clerk_sync.simulator import ClerkSimulator
from django_clerk_sync.sync import (
    CREATED,
    InvalidClerkUser,
    SyncConflict,
    SyncResult,
    delete_user,
    sync_user,
    sync_users,
)
from django_clerk_sync.tokens import (
    Reason,
    SessionClaims,
    TokenRejected,
    get_verifier,
    token_from_request,
)


def email_of(clerk_id: str) -> str | None:
    user = get_user(clerk_id)
    # The plugin resolves the user type to the project's AUTH_USER_MODEL.
    return user.email if user is not None else None


def whoami(request: ClerkRequest) -> HttpResponse:
    claims: SessionClaims | None = request.clerk
    if claims is None:
        return HttpResponse(request.clerk_rejection or "anonymous", status=401)
    org: str | None = claims.org_id
    expires: float = claims.expires_at
    return HttpResponse(f"{claims.user_id} {org} {expires}")


def apply(payload: dict[str, Any]) -> bool:
    try:
        result: SyncResult = sync_user(payload, source="import")
    except (InvalidClerkUser, SyncConflict):
        return False
    return result.outcome == CREATED and result.changed


def apply_page(payloads: list[dict[str, Any]]) -> list[str]:
    return [r.clerk_id for r in sync_users(payloads, source="import", dry_run=True)]


def forget(clerk_id: str) -> bool:
    return delete_user(clerk_id, source="gdpr").changed


def bearer(request: HttpRequest) -> str | None:
    token, where = token_from_request(request)
    return token if where == "header" else None


def verify(token: str) -> str:
    try:
        return get_verifier().verify(token).user_id
    except TokenRejected as rejected:
        if rejected.reason == Reason.EXPIRED:
            return "expired"
        return rejected.reason


def login_user(token: str) -> int | None:
    outcome = authenticate_token(token)
    return outcome.user.pk if outcome.user is not None else None


def simulated() -> str:
    with ClerkSimulator(rate_limit=None) as sim:
        user = sim.add_user(email="ada@example.com")
        sim.fail_next(1, status=503)
        return sim.mint_session_token(user["id"], lifetime=30) + sim.url


def backfill() -> int:
    try:
        report: BackfillReport = run_backfill(BackendAPI(), page_size=100)
    except BackendAPIError as error:
        return error.status or 0
    return report.seen + report.failed


def on_synced(sender: type, **kwargs: Any) -> None:
    pass


clerk_user_synced.connect(on_synced)
middleware = ClerkAuthenticationMiddleware(lambda request: HttpResponse())
"""

# Each misuse carries the mypy error code it must raise on its line.
MISUSE = """
from django_clerk_sync import get_user
from django_clerk_sync.backfill import run_backfill
from django_clerk_sync.backend_api import BackendAPI
from django_clerk_sync.simulator import ClerkSimulator
from django_clerk_sync.sync import delete_user, sync_user
from django_clerk_sync.tokens import get_verifier

get_user(123)  # error: arg-type
get_user("user_2abc").email  # error: union-attr
sync_user({"id": "user_2abc"})  # error: call-arg
delete_user("user_2abc", source="x").outcome + 1  # error: operator
get_verifier().verify(b"header.payload.signature")  # error: arg-type
ClerkSimulator(port="8765")  # error: arg-type
run_backfill(BackendAPI(), page_size="500")  # error: arg-type
"""


def _expected_errors(source):
    return {
        (number, match.group(1))
        for number, line in enumerate(source.splitlines(), start=1)
        if (match := re.search(r"# error: ([a-z-]+)$", line))
    }


def _write_if_changed(path, text):
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


@pytest.fixture(scope="module")
def mypy_run(request, tmp_path_factory):
    """Run mypy once over the package and the two user modules; ``{path: [(line,
    code, message)]}`` for every error it reported."""
    # In pytest's cache directory, mypy's cache and the user modules keep their paths
    # from run to run: a warm run takes seconds (mypy reports a module it did not
    # need to check again from its cache, under the path it had then).
    cache = getattr(request.config, "cache", None)
    if cache is not None:
        work = cache.mkdir("django_clerk_sync_typing")
    else:  # -p no:cacheprovider
        work = tmp_path_factory.mktemp("typing")
    _write_if_changed(work / "correct_use.py", textwrap.dedent(CORRECT_USE))
    _write_if_changed(work / "misuse.py", textwrap.dedent(MISUSE))
    # One mypy cache per environment (a tox env and the project's venv differ).
    mypy_cache = (
        work / f"mypy_cache_{hashlib.sha1(sys.prefix.encode()).hexdigest()[:8]}"
    )
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(mypy_cache),
            "--no-error-summary",
            "--show-absolute-path",
            "django_clerk_sync",
            str(work / "correct_use.py"),
            str(work / "misuse.py"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    # Exit status 2 is mypy itself failing (bad configuration, a crash).
    assert completed.returncode in (0, 1), completed.stdout + completed.stderr
    errors = {}
    for line in completed.stdout.splitlines():
        match = re.match(r"(.+?):(\d+): error: (.*?)(?:  \[([a-z-]+)\])?$", line)
        if match:
            path, number, message, code = match.groups()
            errors.setdefault(Path(path).resolve(), []).append(
                (int(number), code, message)
            )
    return work, errors


def test_the_package_passes_mypy(mypy_run):
    _, errors = mypy_run
    package = (ROOT / "django_clerk_sync").resolve()
    in_package = {
        path: found for path, found in errors.items() if package in path.parents
    }
    assert in_package == {}


def test_correct_use_of_the_public_api_type_checks(mypy_run):
    work, errors = mypy_run
    assert errors.get((work / "correct_use.py").resolve(), []) == []


def test_misuse_of_the_public_api_is_reported(mypy_run):
    work, errors = mypy_run
    found = {
        (number, code)
        for number, code, _ in errors.get((work / "misuse.py").resolve(), [])
    }
    expected = _expected_errors(textwrap.dedent(MISUSE))
    assert len(expected) == 7
    assert found == expected
