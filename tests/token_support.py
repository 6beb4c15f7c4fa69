"""Fixtures shared by the session-token suites: a Clerk simulator serving the JWKS
over real HTTP, and settings that point the middleware at it.

Import the fixtures into a test module by name.
"""

import pytest

from django_clerk_sync import tokens
from django_clerk_sync.simulator import ClerkSimulator

FRONTEND = "http://localhost:3000"  # the simulator's default azp

MIDDLEWARE_WITH_CLERK = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_clerk_sync.middleware.ClerkAuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]


@pytest.fixture(scope="module")
def sim():
    with ClerkSimulator(secret_key="sk_test_simulator", rate_limit=None) as simulator:
        yield simulator


@pytest.fixture(autouse=True)
def fresh_verifiers():
    """Every test starts with no fetched keys and no cached tokens."""
    tokens.reset_verifiers()
    yield
    tokens.reset_verifiers()


@pytest.fixture
def clerk_env(sim, settings):
    """The middleware installed, verifying against the simulator's public JWKS."""
    sim.available = True
    sim.delay = 0
    sim.reset_counts()
    settings.ROOT_URLCONF = "tests.token_urls"
    settings.MIDDLEWARE = MIDDLEWARE_WITH_CLERK
    settings.CLERK_PUBLISHABLE_KEY = sim.publishable_key
    # The simulator's issuer is http://127.0.0.1:<port>; a publishable key always
    # means https, so the issuer is named explicitly.
    settings.CLERK_JWT_ISSUER = sim.issuer
    settings.CLERK_JWKS_URL = sim.jwks_url
    settings.CLERK_AUTHORIZED_PARTIES = [FRONTEND]
    return settings
