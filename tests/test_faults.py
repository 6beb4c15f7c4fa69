"""Faults in the components around the package, made real: a Redis server that is
killed or frozen under the middleware, a database that cannot be reached, and a
database connection killed in the middle of processing a webhook.

Each test runs where its component exists and skips, saying why, where it does not:
the Redis tests need the ``redis-server`` binary and the ``redis`` package, the
database tests PostgreSQL (``CLERK_SYNC_TEST_DB=postgres``). Requests go over real
HTTP to a live server; the Clerk simulator serves the keys and mints the tokens.
"""

import os
import shutil
import signal
import socket
import subprocess
import time

import pytest
from django.contrib.auth import get_user_model
from django.db import connection, connections
from django.db.models.signals import pre_save

from django_clerk_sync import get_user, sync, tokens
from django_clerk_sync.models import ClerkUserLink, WebhookEvent
from django_clerk_sync.testing import clerk_user, deliver, event

from .conftest import SECRET
from .token_support import (  # noqa: F401
    clerk_env,
    clerk_server,
    fresh_verifiers,
    sim,
    whoami_over_http,
)

JWKS = "/.well-known/jwks.json"
CLERK_ID = "user_2faults"

needs_postgres = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="makes real PostgreSQL connections fail: run with "
    "CLERK_SYNC_TEST_DB=postgres (make test-postgres)",
)


def free_loopback_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- Redis, the shared JWKS cache, failing under the middleware -----------------------


class RedisServer:
    """A real ``redis-server`` on a free loopback port, no persistence, run by the test:
    ``kill()`` it, ``freeze()`` it (SIGSTOP: connections are accepted, nothing is
    answered, as a Redis stuck in a fork or swapping), ``start()`` it again."""

    def __init__(self, binary, directory):
        self.binary = binary
        self.directory = directory
        self.port = free_loopback_port()
        self.process = None
        self.frozen = False

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def start(self):
        import redis

        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(400):  # ~10 s at most
            try:
                if self.client().ping():
                    return self
            except redis.ConnectionError:
                time.sleep(0.025)
        self.kill()
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def jwks_keys(self):
        return self.client().keys("*django_clerk_sync:jwks:*")

    def freeze(self):
        os.kill(self.process.pid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self):
        os.kill(self.process.pid, signal.SIGCONT)
        self.frozen = False

    def kill(self):
        if self.process is not None and self.process.poll() is None:
            if self.frozen:
                self.thaw()
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def redis_server(tmp_path):
    pytest.importorskip(
        "redis",
        reason="needs the redis package (Django's RedisCache uses it): pip install redis",
    )
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip(
            "needs the redis-server binary on PATH: "
            "apt-get install redis-server (Debian), brew install redis (macOS)"
        )
    server = RedisServer(binary, tmp_path).start()
    yield server
    server.kill()


@pytest.fixture
def redis_jwks_cache(clerk_env, redis_server):
    """``CLERK_JWKS_CACHE`` names Django's own RedisCache on that server, with short
    connect and socket timeouts, as a deployment should set them."""
    clerk_env.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "clerk": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis_server.url,
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        },
    }
    clerk_env.CLERK_JWKS_CACHE = "clerk"
    return redis_server


@pytest.fixture
def ada(clerk_server):
    """A Clerk user already synced, so a token of hers is a lookup."""
    return sync.sync_user(clerk_user(CLERK_ID, username="ada"), source="webhook").user


def signed_in_as(server, sim):
    """A request with a fresh valid token: (status, the user the view saw)."""
    status, body = whoami_over_http(server, sim.mint_session_token(CLERK_ID))
    return status, body["user"] if status == 200 else body


def test_keys_are_shared_through_redis_and_requests_survive_redis_being_killed(
    sim, redis_jwks_cache, clerk_server, ada, caplog
):
    redis = redis_jwks_cache
    # Redis up: the first worker fetches the keys from Clerk and shares them.
    assert signed_in_as(clerk_server, sim) == (200, "ada")
    assert sim.request_count(JWKS) == 1
    assert len(redis.jwks_keys()) == 1
    # A second worker starting cold takes them from Redis: no fetch.
    tokens.reset_verifiers()
    assert signed_in_as(clerk_server, sim) == (200, "ada")
    assert sim.request_count(JWKS) == 1

    redis.kill()

    # A warm worker does not even ask Redis: its keys are in the process.
    for _ in range(3):
        assert signed_in_as(clerk_server, sim) == (200, "ada")
    assert sim.request_count(JWKS) == 1
    assert "JWKS shared cache unusable" not in caplog.text
    # A cold worker with Redis down fetches from Clerk and says why.
    tokens.reset_verifiers()
    assert signed_in_as(clerk_server, sim) == (200, "ada")
    assert sim.request_count(JWKS) == 2
    assert "JWKS shared cache unusable (ConnectionError)" in caplog.text

    # Redis back, empty: the next cold worker fetches and shares again.
    redis.start()
    tokens.reset_verifiers()
    assert signed_in_as(clerk_server, sim) == (200, "ada")
    tokens.reset_verifiers()
    assert signed_in_as(clerk_server, sim) == (200, "ada")
    assert sim.request_count(JWKS) == 3
    assert len(redis.jwks_keys()) == 1


def test_a_failing_database_cache_leaves_the_request_transaction_usable(
    sim, clerk_env, transactional_db, caplog
):
    """A ``DatabaseCache`` without its table (``createcachetable`` never run), used
    inside the request's transaction (``ATOMIC_REQUESTS``, a DRF view): on PostgreSQL
    the failed query would abort that transaction and the request would 500 later."""
    from django.db import transaction

    clerk_env.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "jwks": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "no_such_cache_table",
        },
    }
    clerk_env.CLERK_JWKS_CACHE = "jwks"
    tokens.reset_verifiers()
    user = get_user_model().objects.create_user("ada")
    ClerkUserLink.objects.create(clerk_id="user_dbcache", user=user)

    with transaction.atomic():
        claims = tokens.get_verifier().verify(sim.mint_session_token("user_dbcache"))
        # The transaction still works after the cache's failed queries.
        assert get_user("user_dbcache") == user

    assert claims.user_id == "user_dbcache"
    assert sim.request_count(JWKS) == 1
    assert "JWKS shared cache unusable" in caplog.text


def test_a_frozen_redis_costs_a_cold_worker_its_socket_timeouts_not_the_request(
    sim, redis_jwks_cache, clerk_server, ada, caplog
):
    """A Redis that accepts connections and never answers is worse than a dead one:
    without ``socket_timeout`` (redis-py before 8.0 has none by default) the read
    waits for ever. With the recommended OPTIONS the cold worker gives up on Redis,
    fetches from Clerk and answers."""
    redis = redis_jwks_cache
    redis.freeze()

    assert signed_in_as(clerk_server, sim) == (200, "ada")
    assert sim.request_count(JWKS) == 1
    assert "JWKS shared cache unusable (TimeoutError)" in caplog.text
    # The keys are held in the process now: Redis is not asked again.
    caplog.clear()
    assert signed_in_as(clerk_server, sim) == (200, "ada")
    assert "JWKS shared cache unusable" not in caplog.text


# --- the database unreachable, then killed mid-request (PostgreSQL) -------------------


@pytest.fixture
def webhook_url(live_server):
    return live_server.url + "/api/webhooks/clerk/"


@needs_postgres
def test_an_unreachable_database_is_503_and_the_retry_is_processed(
    webhook_url, signals_received, caplog
):
    """New connections go to a loopback port nothing listens on (the database host
    is down). Every delivery is answered 503 at once, so Svix retries it; once the
    database is back the retry of the same svix-id is processed once."""
    body = event("user.created", clerk_user(CLERK_ID, username="ada"))
    settings_dict = connection.settings_dict  # shared by every thread's connection
    real_port = settings_dict["PORT"]
    settings_dict["PORT"] = str(free_loopback_port())
    try:
        answers = [
            deliver(webhook_url, SECRET, body, svix_id="msg_db_down") for _ in range(3)
        ]
    finally:
        settings_dict["PORT"] = real_port

    assert [(status, payload) for status, _, payload in answers] == [
        (503, b'{"status": "error", "reason": "database unavailable"}')
    ] * 3
    assert "Clerk event msg_db_down could not be stored" in caplog.text

    status, _, payload = deliver(webhook_url, SECRET, body, svix_id="msg_db_down")

    assert (status, payload) == (200, b'{"status": "processed", "outcome": "created"}')
    stored = WebhookEvent.objects.get()
    assert (stored.svix_id, stored.status, stored.attempts) == (
        "msg_db_down",
        "processed",
        1,
    )
    assert get_user(CLERK_ID).username == "ada"
    assert [kw["created"] for _, kw in signals_received] == [True]


@needs_postgres
def test_the_connection_killed_mid_processing_is_500_recorded_then_applied_once(
    webhook_url, signals_received
):
    """While the webhook's transaction is saving the user, an operator (or a failover)
    terminates its database connection. The transaction is lost; the failure is
    still recorded, through a new connection, and the answer is 500 so Svix retries;
    the retry with the same svix-id applies the change once."""
    User = get_user_model()
    killed = []

    def kill_the_serving_connection(sender, instance, **kwargs):
        if killed:
            return
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid = cursor.fetchone()[0]
        other = connections.create_connection("default")
        try:
            with other.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
                for _ in range(500):  # until the backend is gone, ~10 s at most
                    cursor.execute(
                        "SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]
                    )
                    if cursor.fetchone() is None:
                        break
                    time.sleep(0.02)
        finally:
            other.close()
        killed.append(pid)

    body = event("user.created", clerk_user(CLERK_ID, username="ada"))
    pre_save.connect(kill_the_serving_connection, sender=User)
    try:
        first = deliver(webhook_url, SECRET, body, svix_id="msg_killed")
    finally:
        pre_save.disconnect(kill_the_serving_connection, sender=User)

    assert len(killed) == 1
    assert (first[0], first[2]) == (500, b'{"status": "failed"}')
    stored = WebhookEvent.objects.get()
    assert (stored.status, stored.attempts) == ("failed", 1)
    assert stored.outcome.startswith("error: OperationalError")
    assert "OperationalError" in stored.last_error
    assert not User.objects.exists() and not ClerkUserLink.objects.exists()
    assert signals_received == []

    retry = deliver(webhook_url, SECRET, body, svix_id="msg_killed")

    assert (retry[0], retry[2]) == (
        200,
        b'{"status": "processed", "outcome": "created"}',
    )
    stored.refresh_from_db()
    assert (stored.status, stored.attempts, stored.last_error) == ("processed", 2, "")
    assert User.objects.get().username == "ada"
    assert [kw["created"] for _, kw in signals_received] == [True]
    again = deliver(webhook_url, SECRET, body, svix_id="msg_killed")
    assert (again[0], b'"duplicate": true' in again[2]) == (200, True)
