"""pytest fixtures for projects using django-clerk-sync.

Registered through the ``pytest11`` entry point when the package is installed, so
a project's tests can use them without importing anything. Every fixture name
starts with ``clerk_``, so none can clash with a project's own:

``clerk_webhook_secret``
    Sets ``CLERK_WEBHOOK_SECRET`` to a test secret for the test; the secret.
``clerk_webhook``
    ``clerk_webhook(envelope_or_body, **kwargs) -> response``: a signed delivery
    POSTed through the test client, signals run as on a real commit.
``clerk_keys``
    A :class:`~django_clerk_sync.testing.TestKeys` the middleware trusts.
``clerk_simulator``
    A running :class:`~django_clerk_sync.simulator.ClerkSimulator`, the settings
    pointed at it.
``clerk_user_payload``
    The :func:`~django_clerk_sync.testing.clerk_user` factory.

``clerk_webhook_secret`` and ``clerk_webhook`` need pytest-django (its
``settings``, ``client`` and ``db`` fixtures); the others need only configured
Django settings. With pytest-django, settings are changed through its ``settings``
fixture, so they are undone in the right order with the test's own changes. The
helpers are imported when a fixture runs, not when pytest loads this plugin.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .simulator import ClerkSimulator
    from .testing import TestKeys


def _pytest_django_fixture(
    request: pytest.FixtureRequest, name: str, needed_by: str
) -> Any:
    if not request.config.pluginmanager.hasplugin("django"):
        pytest.fail(
            f"The {needed_by} fixture needs pytest-django (for its {name!r} "
            "fixture): pip install pytest-django.",
            pytrace=False,
        )
    return request.getfixturevalue(name)


@contextlib.contextmanager
def _settings_applied(
    request: pytest.FixtureRequest, values: Mapping[str, Any]
) -> Iterator[None]:
    """``values`` applied for the test, every verifier forgotten before and after."""
    from .testing.keys import _fresh_verifier_override, _reset_verifiers

    if not request.config.pluginmanager.hasplugin("django"):
        with _fresh_verifier_override()(**values):
            yield
        return
    # pytest-django's `settings` undoes every change at its teardown, newest first:
    # an override_settings of our own, undone earlier, would undo the test's
    # later `settings.X = ...` too and then be restored by it.
    settings = request.getfixturevalue("settings")
    for name, value in values.items():
        setattr(settings, name, value)
    _reset_verifiers()
    try:
        yield
    finally:
        _reset_verifiers()


@pytest.fixture
def clerk_webhook_secret(request: pytest.FixtureRequest) -> str:
    """``CLERK_WEBHOOK_SECRET`` set to a test secret for this test; returns it.
    Override this fixture to sign with a secret of your own."""
    from .testing import TEST_WEBHOOK_SECRET

    settings = _pytest_django_fixture(request, "settings", "clerk_webhook_secret")
    settings.CLERK_WEBHOOK_SECRET = TEST_WEBHOOK_SECRET
    return TEST_WEBHOOK_SECRET


@pytest.fixture
def clerk_webhook(
    request: pytest.FixtureRequest, clerk_webhook_secret: str
) -> Callable[..., Any]:
    """``clerk_webhook(envelope_or_body, **kwargs)`` POSTs a signed delivery through
    pytest-django's ``client`` and returns the response. ``kwargs`` are those of
    :func:`~django_clerk_sync.testing.post_webhook` (``svix_id=``,
    ``timestamp=``, ``secret=``, ``url=``, ``headers=``...).

    Enables database access (``db``; mark the test
    ``django_db(transaction=True)`` for real commits). Either way the
    ``on_commit`` callbacks run before the response is returned, so the
    ``clerk_user_synced`` / ``clerk_user_deleted`` signals have fired, as they
    would in production."""
    from django.test import TestCase

    from .testing import post_webhook

    client = _pytest_django_fixture(request, "client", "clerk_webhook")
    _pytest_django_fixture(request, "db", "clerk_webhook")

    def post(envelope_or_body: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("secret", clerk_webhook_secret)
        # Under `db` the test's transaction never commits; under transactional_db
        # the callbacks have already run at the commit, and none is captured.
        with TestCase.captureOnCommitCallbacks(execute=True):
            return post_webhook(client, envelope_or_body, **kwargs)

    return post


@pytest.fixture
def clerk_keys(request: pytest.FixtureRequest) -> Iterator[TestKeys]:
    """A :class:`~django_clerk_sync.testing.TestKeys` whose tokens the middleware
    accepts for this test (``CLERK_JWT_KEY``, ``CLERK_JWT_ISSUER``,
    ``CLERK_AUTHORIZED_PARTIES`` overridden): ``clerk_keys.token("user_...")``."""
    from .testing import TestKeys

    keys = TestKeys()
    with _settings_applied(request, keys.setting_values()):
        yield keys


@pytest.fixture
def clerk_simulator(request: pytest.FixtureRequest) -> Iterator[ClerkSimulator]:
    """A :class:`~django_clerk_sync.simulator.ClerkSimulator` running for this test,
    with ``CLERK_API_URL``, ``CLERK_SECRET_KEY``, ``CLERK_JWKS_URL``,
    ``CLERK_PUBLISHABLE_KEY``, ``CLERK_JWT_ISSUER`` and
    ``CLERK_AUTHORIZED_PARTIES`` pointed at it, so the backfill and the
    middleware use it. Stopped, and the settings restored, after the test."""
    from .simulator import ClerkSimulator
    from .testing import simulator_settings
    from .testing.keys import _test_private_key

    with ClerkSimulator(private_key=_test_private_key()) as sim:
        with _settings_applied(request, simulator_settings(sim)):
            yield sim


@pytest.fixture
def clerk_user_payload() -> Callable[..., dict[str, Any]]:
    """The :func:`~django_clerk_sync.testing.clerk_user` factory:
    ``clerk_user_payload("user_123", email="ada@example.com")``."""
    from .testing import clerk_user

    return clerk_user
