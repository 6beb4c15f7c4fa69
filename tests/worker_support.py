"""Real processes for deferred processing: a web server, workers, senders.

Used by tests/test_workers.py and benchmarks/bench_deferred.py. Every process runs
``tests.worker_settings`` on one PostgreSQL database; the workers are Celery's (Redis
as the broker) or django-tasks-db's ``db_worker``. :class:`Harness` starts them,
kills them and always stops what it started.
"""

import importlib.util
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from django_clerk_sync.testing import clerk_user, deleted_user, deliver, event

ROOT = Path(__file__).resolve().parent.parent
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # as in tests/settings.py
WEBHOOK_PATH = "/api/webhooks/clerk/"


def redis_url(db=6):
    """``CLERK_SYNC_TEST_REDIS`` (the test empties that database), or ``None``: then
    the test starts a ``redis-server`` of its own, never touching a developer's."""
    return os.environ.get("CLERK_SYNC_TEST_REDIS") or None


def missing_services(engine, broker_url):
    """Why the worker tests of ``engine`` (``"celery"`` or ``"django_tasks"``) cannot
    run here, or ``None`` when they can. ``broker_url`` ``None``: a private
    ``redis-server`` will be started."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return (
            "needs PostgreSQL shared by several processes: run with "
            "CLERK_SYNC_TEST_DB=postgres (make test-postgres)"
        )
    if engine == "celery":
        needed = [("celery", "celery[redis]"), ("redis", "redis")]
    else:
        needed = [("django_tasks_db", "django-tasks-db")]
    for module, install in needed:
        if importlib.util.find_spec(module) is None:
            return f"needs the {module} package: pip install '{install}'"
    if engine != "celery":
        return None
    if broker_url is None:
        if shutil.which("redis-server") is None:
            return (
                "needs the redis-server binary on PATH (apt-get install "
                "redis-server), or CLERK_SYNC_TEST_REDIS naming a Redis database "
                "the test may empty"
            )
        return None
    import redis

    try:
        redis.Redis.from_url(broker_url, socket_timeout=2).ping()
    except redis.RedisError as exc:
        return f"needs a Redis server at {broker_url} ({type(exc).__name__})"
    return None


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, *, timeout, interval=0.2, what="the condition"):
    """Poll ``predicate`` until it returns a true value; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Process:
    """One child process in its own process group, its output in a log file."""

    def __init__(self, name, args, env, log_dir):
        self.name = name
        self.log_path = Path(log_dir) / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self):
        return self.popen.pid

    def alive(self):
        return self.popen.poll() is None

    def cpu_seconds(self):
        """User + system CPU time this process has used so far (Linux ``/proc``;
        ``None`` elsewhere or once it has exited)."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2]
        except OSError:
            return None
        utime, stime = fields.split()[11:13]
        return (int(utime) + int(stime)) / os.sysconf("SC_CLK_TCK")

    def kill(self):
        """SIGKILL, as the OOM killer or a lost machine would: no clean-up at all."""
        if self.alive():
            os.killpg(self.pid, signal.SIGKILL)
        self.popen.wait(timeout=30)

    def stop(self, timeout=20):
        """SIGTERM (Celery's warm shutdown), then SIGKILL if it does not exit."""
        if self.alive():
            try:
                os.killpg(self.pid, signal.SIGTERM)
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait(timeout=30)
        self._log.close()

    def tail(self, lines=30):
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Harness:
    """Starts, kills and stops the real processes; ``close()`` stops them all."""

    def __init__(
        self, database, broker_url, log_dir, *, processing="celery", extra_env=None
    ):
        self.broker_url = broker_url
        self.processing = processing
        self.log_dir = Path(log_dir)
        self.queue = f"clerk_sync_{uuid.uuid4().hex[:10]}"
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.worker_settings",
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
            ),
            "PYTHONUNBUFFERED": "1",
            "CLERK_SYNC_WORKER_DB": database,
            # Only Celery has a broker (Django tasks' queue is the database).
            "CLERK_SYNC_WORKER_BROKER": broker_url or "",
            "CLERK_SYNC_WORKER_PROCESSING": processing,
            "CLERK_SYNC_WORKER_QUEUE": self.queue,
            **(extra_env or {}),
        }
        self.processes = []
        self.server = None
        self.workers = []
        self._count = Counter()

    def _start(self, kind, args, **env):
        self._count[kind] += 1
        name = f"{kind}{self._count[kind]}"
        process = Process(name, args, {**self.env, **env}, self.log_dir)
        self.processes.append(process)
        return process

    # --- the web server --------------------------------------------------------

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}{WEBHOOK_PATH}"

    def start_server(self):
        """Django's threaded development server, no autoreloader, on a free port."""
        self.port = free_port()
        self.server = self._start(
            "server",
            [
                sys.executable,
                "-m",
                "django",
                "runserver",
                f"127.0.0.1:{self.port}",
                "--noreload",
            ],
            # The development server runs each request in a new thread: a
            # persistent connection would be left open by every one of them.
            CLERK_SYNC_WORKER_CONN_MAX_AGE="0",
        )

        def listening():
            if not self.server.alive():
                raise AssertionError(f"the server exited:\n{self.server.tail()}")
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", self.port)) == 0

        wait_until(listening, timeout=60, what="the web server to listen")
        return self.server

    def stop_server(self):
        if self.server is not None:
            self.server.stop()
            self.server = None

    # --- Celery workers ----------------------------------------------------------

    def start_worker(self):
        """One worker process running one task at a time, so killing it kills exactly
        the task it holds: ``celery worker --pool=solo``, or django-tasks-db's
        ``db_worker``."""
        n = self._count["worker"] + 1
        if self.processing == "django_tasks":
            args = [
                "db_worker",
                f"--queue-name={self.queue}",
                "--interval=0.05",
                "--no-startup-delay",
                f"--worker-id=worker{n}",
            ]
            worker = self._start("worker", [sys.executable, "-m", "django", *args])
        else:
            args = [
                "-A",
                "tests.worker_app",
                "worker",
                "--pool=solo",
                "--concurrency=1",
                f"--queues={self.queue}",
                f"--hostname=worker{n}@%h",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--loglevel=WARNING",
            ]
            worker = self._start("worker", [sys.executable, "-m", "celery", *args])
        self.workers.append(worker)
        return worker

    def worker_by_pid(self, pid):
        return next(w for w in self.workers if w.pid == pid)

    # --- the queue ----------------------------------------------------------------

    def redis(self):
        import redis

        return redis.Redis.from_url(self.broker_url, socket_timeout=5)

    def _task_rows(self, status):
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM django_tasks_database_dbtaskresult "
                "WHERE status = %s AND queue_name = %s",
                [status, self.queue],
            )
            return cursor.fetchone()[0]

    def queued(self):
        """Tasks waiting for a worker."""
        if self.processing == "django_tasks":
            return self._task_rows("READY")
        return self.redis().llen(self.queue)

    def reserved(self):
        """Tasks a worker took and has not finished: for Celery, messages not
        acknowledged (kombu's Redis transport keeps them in its ``unacked`` hash);
        for django-tasks-db, rows claimed (``RUNNING``)."""
        if self.processing == "django_tasks":
            return self._task_rows("RUNNING")
        return self.redis().hlen("unacked")

    # --- manage.py -------------------------------------------------------------------

    def manage(self, *args, timeout=120):
        """Run ``manage.py <args>`` as an operator or cron would; return its output."""
        done = subprocess.run(
            [sys.executable, "-m", "django", *args],
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode:
            raise AssertionError(
                f"manage.py {' '.join(args)} exited {done.returncode}:\n"
                f"{done.stdout}\n{done.stderr}"
            )
        return done.stdout + done.stderr

    def close(self):
        for process in reversed(self.processes):
            process.stop()

    def logs(self):
        return "\n".join(
            f"--- {p.name} (pid {p.pid}, "
            f"{'running' if p.alive() else f'exit {p.popen.returncode}'})\n{p.tail()}"
            for p in self.processes
        )


def send(url, deliveries, *, senders=8):
    """POST every ``(svix_id, body)`` from ``senders`` concurrent threads over real
    HTTP, each signed afresh by svix's signer (a redelivery gets a new timestamp and
    signature, as Svix's retries do). Returns a Counter of the status codes."""

    def post(delivery):
        svix_id, body = delivery
        status, _, _ = deliver(url, SECRET, body, svix_id=svix_id, timeout=60)
        return status

    with ThreadPoolExecutor(max_workers=senders) as pool:
        return Counter(pool.map(post, deliveries))


class History:
    """Clerk histories for ``users`` users, delivered shuffled and partly duplicated.

    Each user is created, then updated ``updates`` times with increasing
    ``updated_at`` (email, first and last name change every time; the username
    stays); every ``delete_every``-th user (none for 0) is deleted at the end. On top
    of those distinct events come ``redeliveries`` (the same ``svix-id`` again, as
    Svix's retries and dashboard replays send it) and ``copies`` (the same body under
    a new ``svix-id``). ``deliveries`` is the shuffled list of ``(svix_id, body)``.
    """

    def __init__(
        self,
        users,
        *,
        updates=3,
        delete_every=5,
        redeliveries=0,
        copies=0,
        seed=0,
        prefix="w",
    ):
        rng = random.Random(seed)
        self.base = 1_700_000_000_000
        self.updates = updates
        self.prefix = prefix
        self.clerk_ids = [self.clerk_id(n) for n in range(users)]
        deleted = range(0, users, delete_every) if delete_every else ()
        self.deleted = {self.clerk_id(n) for n in deleted}
        distinct, self.owner = [], {}
        for n, clerk_id in enumerate(self.clerk_ids):
            history = [
                (f"msg_{prefix}{n:05d}v{k}", "user.updated" if k else "user.created")
                for k in range(updates + 1)
            ]
            for k, (svix_id, kind) in enumerate(history):
                distinct.append((svix_id, event(kind, self.user(n, k))))
                self.owner[svix_id] = clerk_id
            if clerk_id in self.deleted:
                svix_id = f"msg_{prefix}{n:05d}del"
                distinct.append(
                    (svix_id, event("user.deleted", deleted_user(clerk_id)))
                )
                self.owner[svix_id] = clerk_id
        self.distinct = distinct
        extra = [rng.choice(distinct) for _ in range(redeliveries)]
        for i in range(copies):
            svix_id, body = rng.choice(distinct)
            extra.append((f"msg_{prefix}copy{i:05d}", body))
            self.owner[extra[-1][0]] = self.owner[svix_id]
        self.deliveries = distinct + extra
        rng.shuffle(self.deliveries)
        self.duplicated = {self.owner[svix_id] for svix_id, _ in extra}

    def first_sent_after(self, index):
        """The first Clerk id, neither deleted nor with a duplicated delivery, whose
        first delivery is at or after position ``index`` of :attr:`deliveries`."""
        seen, excluded = set(), self.duplicated | self.deleted
        for position, (svix_id, _) in enumerate(self.deliveries):
            clerk_id = self.owner[svix_id]
            if position >= index and clerk_id not in seen and clerk_id not in excluded:
                return clerk_id
            seen.add(clerk_id)
        raise ValueError("no such Clerk id")

    def clerk_id(self, n):
        return f"user_2{self.prefix}{n:05d}"

    def user(self, n, k):
        return clerk_user(
            self.clerk_id(n),
            email=f"{self.prefix}{n}.v{k}@example.com",
            username=f"{self.prefix}{n}",
            first_name=f"V{k}",
            last_name=f"L{k}",
            created_at=self.base,
            updated_at=self.base + k,
        )

    def newest(self, n):
        """``(updated_at, first name, last name, email)`` of the last version."""
        k = self.updates
        return (self.base + k, f"V{k}", f"L{k}", f"{self.prefix}{n}.v{k}@example.com")
