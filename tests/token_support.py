"""Fixtures shared by the session-token suites: a Clerk simulator serving the JWKS
over real HTTP, and settings that point the middleware at it.

Import the fixtures into a test module by name.
"""

import json
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pytest_django.live_server_helper import LiveServer

from django_clerk_sync import tokens
from django_clerk_sync.simulator import ClerkSimulator
from django_clerk_sync.testing import TEST_ORIGIN, simulator_settings

FRONTEND = TEST_ORIGIN  # the simulator's default azp

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


def settle_background_refreshes():
    """Wait for the JWKS refreshes running in the background, so none reaches the
    simulator during the next test."""
    for verifier in list(tokens._by_config.values()):
        settle = getattr(verifier.keys, "settle", None)
        if settle is not None:
            settle(timeout=10)


@pytest.fixture(autouse=True)
def fresh_verifiers():
    """Every test starts with no fetched keys and no cached tokens."""
    tokens.reset_verifiers()
    yield
    settle_background_refreshes()
    tokens.reset_verifiers()


class JWKSServer:
    """A JWKS endpoint on loopback whose answer a test controls: ``document`` (bytes),
    sent at once, or, with ``drip``, in ten pieces ``drip`` seconds apart (each gap
    shorter than a socket timeout). ``requests`` counts the answers begun."""

    def __init__(self, document, *, drip=0.0):
        self.document = document
        self.drip = drip
        self.requests = 0
        self._stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests += 1
                body = server.document
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                step = max(1, len(body) // 10) if server.drip else len(body)
                try:
                    for start in range(0, len(body), step):
                        if server.drip and server._stop.wait(server.drip):
                            return
                        self.wfile.write(body[start : start + step])
                        self.wfile.flush()
                except OSError:
                    pass  # the client gave up

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self):
        return f"http://127.0.0.1:{self._server.server_address[1]}/jwks.json"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()


def eventually(condition, timeout=10.0):
    """Whether ``condition()`` becomes true within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def install_token_views(settings):
    """The middleware installed, and tests/token_urls.py's views routed."""
    settings.ROOT_URLCONF = "tests.token_urls"
    settings.MIDDLEWARE = MIDDLEWARE_WITH_CLERK
    return settings


@pytest.fixture
def token_views(settings):
    """The middleware and the views, the keys left to the test (``clerk_keys``...)."""
    return install_token_views(settings)


@pytest.fixture
def clerk_env(sim, settings):
    """The middleware installed, verifying against the simulator's public JWKS."""
    sim.available = True
    sim.delay = 0
    sim.reset_counts()
    install_token_views(settings)
    # What testing.clerk_simulator() sets, without the Backend API: the tests of the
    # "fetch" first sight and of the /v1/jwks source add CLERK_SECRET_KEY themselves.
    # (CLERK_JWT_ISSUER is named: the simulator is http://, its publishable key
    # would give https://.)
    values = simulator_settings(sim, authorized_parties=[FRONTEND])
    del values["CLERK_API_URL"], values["CLERK_SECRET_KEY"]
    for name, value in values.items():
        setattr(settings, name, value)
    return settings


@pytest.fixture
def clerk_server(sim, clerk_env, transactional_db):
    """A live HTTP server (pytest-django's) started for this test, so that it runs the
    middleware ``clerk_env`` installs: the session-wide ``live_server`` built its
    middleware chain once, when it started."""
    clerk_env.ALLOWED_HOSTS = ["127.0.0.1"]
    server = LiveServer("127.0.0.1")
    yield server
    server.stop()


def whoami_over_http(server, token, *, timeout=30):
    """GET /whoami/ on ``server`` with ``token`` as the bearer token:
    ``(status, body)``, the body parsed when it is JSON."""
    request = urllib.request.Request(
        server.url + "/whoami/", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.read()
