"""The JWKS cooldown shared by worker processes through ``CLERK_JWKS_CACHE``.

Real OS processes, each a Django process with the middleware's verifier, all on one
real ``redis-server`` (Django's ``RedisCache``) and one JWKS endpoint on loopback
(the Clerk simulator, or ``JWKSServer``), which counts the fetches. Whatever the
workers see at the same moment (no keys yet, a forged or new ``kid``, a key rotated
under the same ``kid``, keys past their TTL), the endpoint sees one fetch per
cooldown. With Redis down or frozen, every worker still verifies on its own.

Skipped, saying why, without the ``redis-server`` binary or the ``redis`` package.
"""

import json
import os
import queue
import subprocess
import sys
import threading
import time

import pytest

from django_clerk_sync import jwks, tokens
from django_clerk_sync.simulator import ClerkSimulator

from .test_faults import redis_server  # noqa: F401  (fixture)
from .token_support import FRONTEND, JWKSServer, eventually, fresh_verifiers  # noqa: F401

JWKS = "/.well-known/jwks.json"
REDIS_DB = 8
CACHE_OPTIONS = {"socket_connect_timeout": 0.5, "socket_timeout": 0.5}

# One worker process: configures Django as a deployment would (the verifier's
# settings, CLERK_JWKS_CACHE on Redis), then answers one JSON command per line.
WORKER = """
import json, logging, sys

import django
from django.conf import settings

config = json.loads(sys.argv[1])
settings.configure(
    CACHES={
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "clerk": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": config["redis_url"],
            "OPTIONS": config["cache_options"],
        },
    },
    CLERK_JWKS_CACHE="clerk",
    **config["settings"],
)
django.setup()
from django_clerk_sync import tokens

warnings = []


class Keep(logging.Handler):
    def emit(self, record):
        warnings.append(record.getMessage())


logging.getLogger("django_clerk_sync").addHandler(Keep(logging.WARNING))
verifier = tokens.get_verifier()
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    command = json.loads(line)
    if command["op"] == "verify":
        try:
            answer = {"user": verifier.verify(command["token"]).user_id}
        except tokens.TokenRejected as rejected:
            answer = {"rejected": rejected.reason}
    elif command["op"] == "settle":
        answer = {"settled": verifier.keys.settle(timeout=30)}
    else:
        answer = {"warnings": warnings}
    print(json.dumps(answer), flush=True)
"""


class Workers:
    """``n`` worker processes, started and ready (Django set up, verifier built,
    no keys yet). ``ask`` sends one command to each worker before reading any
    answer, so they all work at the same moment."""

    ANSWER_TIMEOUT = 120  # a guard against a hung worker, not a speed check

    def __init__(self, n, *, redis_url, settings, directory, cache_options=None):
        config = json.dumps(
            {
                "redis_url": redis_url,
                "cache_options": cache_options or CACHE_OPTIONS,
                "settings": settings,
            }
        )
        env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
        self.processes, self._answers, self._stderr = [], [], []
        for index in range(n):
            stderr = open(directory / f"worker-{index}.stderr", "w+")
            process = subprocess.Popen(
                [sys.executable, "-c", WORKER, config],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env=env,
            )
            answers = queue.Queue()
            threading.Thread(
                target=self._read, args=(process.stdout, answers), daemon=True
            ).start()
            self.processes.append(process)
            self._answers.append(answers)
            self._stderr.append(stderr)
        for index in range(n):
            assert self._answer(index) == {"ready": True}

    @staticmethod
    def _read(stream, answers):
        for line in stream:
            answers.put(json.loads(line))
        answers.put(None)  # the worker exited

    def _answer(self, index):
        try:
            answer = self._answers[index].get(timeout=self.ANSWER_TIMEOUT)
        except queue.Empty:
            answer = None
        if answer is None:
            self._stderr[index].seek(0)
            pytest.fail(f"worker {index} gave no answer:\n{self._stderr[index].read()}")
        return answer

    def send(self, index, command):
        self.processes[index].stdin.write(json.dumps(command) + "\n")
        self.processes[index].stdin.flush()

    def ask(self, commands, indices=None):
        indices = list(range(len(self.processes)) if indices is None else indices)
        for index, command in zip(indices, commands, strict=True):
            self.send(index, command)
        return [self._answer(index) for index in indices]

    def verify(self, tokens_, indices=None):
        """Each worker verifies its token; the user ids, or the rejection reasons."""
        answers = self.ask([{"op": "verify", "token": t} for t in tokens_], indices)
        return [answer.get("user", answer.get("rejected")) for answer in answers]

    def settle(self):
        assert self.ask([{"op": "settle"}] * len(self.processes)) == [
            {"settled": True}
        ] * len(self.processes)

    def warnings(self):
        answers = self.ask([{"op": "warnings"}] * len(self.processes))
        return [answer["warnings"] for answer in answers]

    def kill(self, index):
        self.processes[index].kill()
        self.processes[index].wait(10)

    def close(self):
        for process in self.processes:
            if process.poll() is None:
                process.kill()  # nothing to finish: a worker holds no state of note
            process.wait(10)
            process.stdin.close()
        for stderr in self._stderr:
            stderr.close()


def redis_url(server):
    return f"redis://127.0.0.1:{server.port}/{REDIS_DB}"


def redis_keys(server, pattern="*"):
    import redis

    client = redis.Redis(host="127.0.0.1", port=server.port, db=REDIS_DB)
    return sorted(key.decode() for key in client.keys(pattern))


def wait_for_the_cooldown_to_end(server):
    """Until Redis has let the fetch claim expire (it lives one cooldown), and a
    moment more for the workers' own clocks, which start at the fetch itself."""
    assert eventually(lambda: not redis_keys(server, "*jwks-claim*"), timeout=60)
    time.sleep(0.3)


@pytest.fixture
def clerk():
    """A Clerk simulator of its own: these tests rotate its key."""
    with ClerkSimulator(rate_limit=None) as simulator:
        yield simulator


@pytest.fixture
def workers(redis_server, tmp_path):
    """``start(n, server=..., **settings)``: ``n`` workers on the Redis server (by
    default the test's), verifying for ``clerk`` (its issuer and JWKS URL)."""
    started = []

    def start(n, clerk, *, server=redis_server, jwks_url=None, **settings):
        settings = {
            "CLERK_JWT_ISSUER": clerk.issuer,
            "CLERK_JWKS_URL": jwks_url or clerk.jwks_url,
            "CLERK_AUTHORIZED_PARTIES": [FRONTEND],
            **settings,
        }
        pool = Workers(
            n, redis_url=redis_url(server), settings=settings, directory=tmp_path
        )
        started.append(pool)
        return pool

    yield start
    for pool in started:
        pool.close()


def test_fifty_workers_starting_cold_fetch_the_keys_once(clerk, workers, redis_server):
    pool = workers(50, clerk, CLERK_JWKS_REFETCH_COOLDOWN=60)
    users = [f"user_{n}" for n in range(50)]

    # A deploy: fifty workers with no keys, a request each at the same moment. One
    # wins the claim and fetches; the others wait for its keys.
    assert pool.verify([clerk.mint_session_token(u) for u in users]) == users
    assert clerk.request_count(JWKS) == 1

    # Forged kids, a different one in every worker: refused, no fetch (the keys
    # fetched within the cooldown are the answer in every process).
    forged = [
        clerk.mint_session_token(u, headers={"kid": f"ins_forged{n}"})
        for n, u in enumerate(users)
    ]
    assert pool.verify(forged) == ["unknown_key"] * 50
    assert clerk.request_count(JWKS) == 1
    # Nothing is written per kid: the keys, the claim and how the fetch ended.
    assert sorted(key.split(":")[3] for key in redis_keys(redis_server)) == [
        "jwks",
        "jwks-claim",
        "jwks-result",
    ]


def test_after_each_cooldown_one_worker_fetches_for_all(clerk, workers, redis_server):
    pool = workers(8, clerk, CLERK_JWKS_REFETCH_COOLDOWN=3)
    users = [f"user_{n}" for n in range(8)]

    def mint(**kwargs):
        return [clerk.mint_session_token(u, **kwargs) for u in users]

    assert pool.verify(mint()) == users
    assert clerk.request_count(JWKS) == 1

    # A spray of forged kids once the cooldown is over: one fetch for eight
    # workers, then every one of them refuses without another.
    wait_for_the_cooldown_to_end(redis_server)
    forged = [
        clerk.mint_session_token(u, headers={"kid": f"ins_spray{n}"})
        for n, u in enumerate(users)
    ]
    assert pool.verify(forged) == ["unknown_key"] * 8
    assert pool.verify(forged) == ["unknown_key"] * 8
    assert clerk.request_count(JWKS) == 2

    # Clerk rotates to a new kid: one fetch finds it, for all.
    wait_for_the_cooldown_to_end(redis_server)
    clerk.rotate_key(keep_kid=False)
    assert pool.verify(mint()) == users
    assert clerk.request_count(JWKS) == 3

    # Clerk rotates the key under the same kid (the kid is the instance id): the
    # signature fails with the held key, one fetch brings the new one to all.
    wait_for_the_cooldown_to_end(redis_server)
    before = mint()
    clerk.rotate_key(keep_kid=True)
    assert pool.verify(mint()) == users
    assert clerk.request_count(JWKS) == 4
    assert pool.verify(before) == ["bad_signature"] * 8
    assert clerk.request_count(JWKS) == 4


def test_past_the_ttl_one_worker_refreshes_and_the_others_adopt(
    clerk, workers, redis_server
):
    pool = workers(8, clerk, CLERK_JWKS_CACHE_TTL=3, CLERK_JWKS_REFETCH_COOLDOWN=1)
    users = [f"user_{n}" for n in range(8)]
    assert pool.verify([clerk.mint_session_token(u) for u in users]) == users
    assert clerk.request_count(JWKS) == 1

    # The shared keys expire with the TTL; the workers' keys are as old.
    assert eventually(lambda: not redis_keys(redis_server, "*:jwks:*"), timeout=60)
    time.sleep(0.3)
    # Held keys are served at once, past the TTL; each worker starts a refresh in
    # the background, and one of them fetches.
    assert pool.verify([clerk.mint_session_token(u) for u in users]) == users
    pool.settle()
    assert clerk.request_count(JWKS) == 2
    assert len(redis_keys(redis_server, "*:jwks:*")) == 1
    assert pool.verify([clerk.mint_session_token(u) for u in users]) == users
    pool.settle()
    assert clerk.request_count(JWKS) == 2


def test_a_worker_dying_mid_fetch_holds_the_others_up_for_one_cooldown_at_most(
    clerk, workers, redis_server
):
    document = json.dumps({"keys": clerk.jwks_keys()}).encode()
    with JWKSServer(document, drip=0.5) as server:
        pool = workers(
            8,
            clerk,
            jwks_url=server.url,
            CLERK_JWKS_REFETCH_COOLDOWN=5,
            CLERK_HTTP_TIMEOUT=1,
        )
        users = [f"user_{n}" for n in range(8)]
        # Worker 0 claims the fetch, and dies while the answer drips in.
        pool.send(0, {"op": "verify", "token": clerk.mint_session_token(users[0])})
        assert eventually(lambda: server.requests == 1)
        pool.kill(0)
        server.drip = 0

        # The others wait for its answer (CLERK_HTTP_TIMEOUT at most), and do not
        # fetch while its claim lasts.
        others = range(1, 8)
        tokens_ = [clerk.mint_session_token(users[n]) for n in others]
        assert pool.verify(tokens_, others) == ["keys_unavailable"] * 7
        assert server.requests == 1

        # The claim expires with the cooldown: one of them fetches, for all.
        wait_for_the_cooldown_to_end(redis_server)
        assert pool.verify(tokens_, others) == users[1:]
        assert server.requests == 2


def test_with_redis_down_every_worker_verifies_on_its_own(clerk, workers, redis_server):
    redis_server.kill()
    pool = workers(8, clerk)
    users = [f"user_{n}" for n in range(8)]

    assert pool.verify([clerk.mint_session_token(u) for u in users]) == users
    assert clerk.request_count(JWKS) == 8  # per-process behaviour: one fetch each
    for lines in pool.warnings():
        assert [line for line in lines if "shared cache" in line] == [
            "JWKS shared cache unusable (ConnectionError); fetching "
            "(CLERK_JWKS_CACHE 'clerk')"
        ]


def test_with_redis_frozen_every_worker_verifies_after_one_socket_timeout(
    clerk, workers, redis_server
):
    """A Redis that accepts connections and answers nothing: each cold worker gives
    up on it after its socket timeout (0.5 s), once, and fetches for itself."""
    redis_server.freeze()
    pool = workers(8, clerk)
    users = [f"user_{n}" for n in range(8)]

    assert pool.verify([clerk.mint_session_token(u) for u in users]) == users
    assert clerk.request_count(JWKS) == 8
    for lines in pool.warnings():
        assert [line for line in lines if "shared cache" in line] == [
            "JWKS shared cache unusable (TimeoutError); fetching "
            "(CLERK_JWKS_CACHE 'clerk')"
        ]


def test_an_unusable_cache_is_reported_once_a_minute_not_once_a_cooldown(
    clerk, redis_server, settings, caplog, monkeypatch
):
    """In one process: Redis gone, a forged kid every cooldown. Each costs a failed
    cache call and a fetch of its own; the log says so once, then with a count."""
    redis_server.kill()
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "clerk": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis_url(redis_server),
            "OPTIONS": CACHE_OPTIONS,
        },
    }
    settings.CLERK_JWKS_CACHE = "clerk"
    settings.CLERK_JWT_ISSUER = clerk.issuer
    settings.CLERK_JWKS_URL = clerk.jwks_url
    verifier = tokens.get_verifier()
    now = [time.time()]
    verifier.keys.clock = lambda: now[0]

    def forged_kid_after_a_cooldown(n):
        now[0] += 10  # CLERK_JWKS_REFETCH_COOLDOWN
        token = clerk.mint_session_token("user_2abc", headers={"kid": f"ins_{n}"})
        with pytest.raises(tokens.TokenRejected) as caught:
            verifier.verify(token)
        assert caught.value.reason == "unknown_key"

    def cache_warnings():
        return [r.getMessage() for r in caplog.records if "shared cache" in r.msg]

    for n in range(20):
        forged_kid_after_a_cooldown(n)
    assert clerk.request_count(JWKS) == 20
    assert cache_warnings() == [
        "JWKS shared cache unusable (ConnectionError); fetching "
        "(CLERK_JWKS_CACHE 'clerk')"
    ]

    monkeypatch.setattr(jwks, "SHARED_CACHE_WARNING_INTERVAL", 0)  # a minute later
    forged_kid_after_a_cooldown(20)
    assert cache_warnings()[1:] == [
        "JWKS shared cache unusable (ConnectionError); fetching "
        "(CLERK_JWKS_CACHE 'clerk'; 19 more failure(s) since the last warning)"
    ]


def test_a_worker_started_within_the_cooldown_takes_the_unknown_kid_from_redis(
    clerk, workers, redis_server
):
    """A cold worker asked about a kid that the fetch made within the cooldown did
    not have refuses it without fetching: the cooldown is shared, not per process."""
    first = workers(1, clerk, CLERK_JWKS_REFETCH_COOLDOWN=60)
    forged = clerk.mint_session_token("user_2abc", headers={"kid": "ins_2forged"})
    assert first.verify([forged]) == ["unknown_key"]
    assert clerk.request_count(JWKS) == 1

    late = workers(4, clerk, CLERK_JWKS_REFETCH_COOLDOWN=60)
    assert late.verify([forged] * 4) == ["unknown_key"] * 4
    assert late.verify([clerk.mint_session_token("user_2abc")] * 4) == ["user_2abc"] * 4
    assert clerk.request_count(JWKS) == 1
