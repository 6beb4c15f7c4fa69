#!/usr/bin/env python
"""How fast ``clerk_backfill`` applies users, against the loop people write by hand.

Run on demand (it is not part of the test suite)::

    python benchmarks/bench_backfill.py --users 100000 --db sqlite
    python benchmarks/bench_backfill.py --users 100000 --db postgres

A Clerk simulator holding ``--users`` (N) Clerk-shaped users runs in a child process
(so its CPU and memory stay out of the figures), with no rate limit, and both sides
read it through the package's ``BackendAPI`` client with pacing off. Measured in one
run:

(a) ``run_backfill(api, page_size=500)``: the command's bulk path, all N users, each
    time on a freshly migrated database;
(b) the naive loop: the same pages (``offset``, oldest first), then one
    ``User.objects.update_or_create(username=clerk_id, defaults={email, first_name,
    last_name})`` per user and nothing else, in autocommit as such loops run;
(c) with ``--per-user``: our one-user path, ``sync.sync_user`` per user, for reference.

(a) and (b) take turns, ``--rounds`` times: each round runs (a) over all N users, then
(b) over the next N/rounds users (the naive loop fills its own database, so over all
rounds it also applies N users). A busy machine thus slows both alike, and the ratio is
taken per round (the median is shown). Then, once each: (a) again over the same data
(nothing changes: a reconciliation run), the same after ``ANALYZE`` (PostgreSQL's
statistics, which autovacuum gathers about a minute after a table fills; without them
the planner scans whole tables), and (a) on a database with an index on
``LOWER(username)``, which the page's case-insensitive username check can use; without
it that check reads the whole user table once per page.

Rates are wall-clock users per second, HTTP included. Queries are the statements sent
through Django's cursor (``connection.execute_wrapper``: savepoints included, the
driver's BEGIN/COMMIT not). Peak memory is Python's (``tracemalloc``), in separate
passes so that tracing does not slow the timed ones: (a) at N and at N/10 should be
about the same.

SQLite: temporary files with Django's default settings. PostgreSQL: the script creates
its own scratch databases (``--pg-database``, default ``bench_clerk``, plus
``_naive`` and ``_template``), refuses to touch existing ones, and drops them at the
end. Host, port and user: ``--pg-host`` / ``--pg-port`` / ``--pg-user`` (default
``PGHOST``, ``PGPORT``, ``PGUSER``, else 127.0.0.1, 5432, postgres).
"""

import argparse
import cProfile
import datetime
import gc
import multiprocessing
import os
import platform
import pstats
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SECRET_KEY = "sk_test_benchmark"
PAGE_SIZE = 500
UNLIMITED = (10**9, 1)  # no pacing: the simulator has no rate limit either
OURS, NAIVE = "default", "naive"  # database aliases
# The index docs/performance.md suggests for large user tables (same SQL on both).
LOWER_USERNAME_INDEX = (
    'CREATE INDEX auth_user_username_lower ON auth_user (LOWER("username"))'
)


# The simulator, in a child process.


def _serve_simulator(conn, users, seed):
    from django_clerk_sync.simulator import ClerkSimulator

    with ClerkSimulator(secret_key=SECRET_KEY, rate_limit=None) as sim:
        sim.add_users(users, seed=seed)
        conn.send(sim.url)
        conn.recv()  # until the parent is done


@contextmanager
def simulator(users, seed=0):
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_serve_simulator, args=(child, users, seed))
    process.start()
    try:
        if not parent.poll(600):
            raise RuntimeError("the simulator did not start within 10 minutes")
        yield parent.recv()
    finally:
        try:
            parent.send("stop")
        except OSError:
            pass
        process.join(30)
        if process.is_alive():
            process.terminate()
            process.join()


# Databases: one migrated template, copied fresh for every measurement.


class SQLiteDatabases:
    def __init__(self):
        self.directory = Path(tempfile.mkdtemp(prefix="bench_clerk_"))
        self.template = self.directory / "template.sqlite3"

    def _path(self, alias):
        return self.directory / f"{alias}.sqlite3"

    def settings(self, alias):
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": str(self._path(alias))}

    def describe(self, connection):
        import sqlite3

        return f"SQLite {sqlite3.sqlite_version} (files in {self.directory})"

    def save_template(self, connection):
        connection.close()
        shutil.copyfile(self._path(connection.alias), self.template)

    def fresh(self, connection):
        connection.close()
        path = self._path(connection.alias)
        for suffix in ("", "-journal", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(self.template, path)

    def analyze(self, connection):
        pass  # SQLite's planner uses the indexes without statistics

    def drop(self, connections):
        for connection in connections:
            connection.close()
        shutil.rmtree(self.directory, ignore_errors=True)


class PostgresDatabases:
    def __init__(self, name, host, port, user):
        self.names = {OURS: name, NAIVE: f"{name}_naive"}
        self.template = f"{name}_template"
        self.host, self.port, self.user = host, port, user
        self.created = []
        for db in [*self.names.values(), self.template]:
            if self._exists(db):
                raise SystemExit(
                    f"database {db} already exists: drop it, or choose another "
                    "--pg-database (this script only uses databases it creates)"
                )
        self._admin(f'CREATE DATABASE "{self.names[OURS]}"')
        self.created.append(self.names[OURS])

    def _admin(self, sql, params=None):
        import psycopg

        with psycopg.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            dbname="postgres",
            autocommit=True,
        ) as conn:
            return conn.execute(sql, params).fetchall() if params else conn.execute(sql)

    def _exists(self, name):
        return bool(self._admin("SELECT 1 FROM pg_database WHERE datname = %s", [name]))

    def settings(self, alias):
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": self.names[alias],
            "HOST": self.host,
            "PORT": str(self.port),
            "USER": self.user,
        }

    def describe(self, connection):
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            version = cursor.fetchone()[0]
        return f"PostgreSQL {version} at {self.host}:{self.port}"

    def save_template(self, connection):
        connection.close()
        self._admin(
            f'CREATE DATABASE "{self.template}" TEMPLATE "{self.names[connection.alias]}"'
        )
        self.created.append(self.template)

    def fresh(self, connection):
        connection.close()
        name = self.names[connection.alias]
        if name in self.created:
            self._admin(f'DROP DATABASE "{name}"')
        else:
            self.created.append(name)
        self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')

    def analyze(self, connection):
        # A table filled within seconds has no statistics yet (autovacuum analyzes it
        # about a minute later), and the planner then scans whole tables.
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")

    def drop(self, connections):
        for connection in connections:
            connection.close()
        for name in reversed(self.created):
            self._admin(f'DROP DATABASE IF EXISTS "{name}"')


def configure_django(databases):
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        SECRET_KEY="benchmark-only",
        USE_TZ=True,
        TIME_ZONE="UTC",
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django_clerk_sync",
        ],
        DATABASES={alias: databases.settings(alias) for alias in (OURS, NAIVE)},
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
    )
    django.setup()


# The contenders. Each reads pages from ``api`` and calls ``on_page`` after each one.


def timed_api(url):
    """A BackendAPI that also adds up the time spent waiting for and parsing pages."""
    from django_clerk_sync.backend_api import BackendAPI

    class TimedBackendAPI(BackendAPI):
        http_seconds = 0.0

        def _get(self, path, params):
            started = time.perf_counter()
            try:
                return super()._get(path, params)
            finally:
                self.http_seconds += time.perf_counter() - started

    return TimedBackendAPI(api_url=url, secret_key=SECRET_KEY, rate_limit=UNLIMITED)


def ours(api, users, start, on_page=None):
    """(a): the backfill's bulk path (``start`` must be 0: it lists from the start)."""
    from django_clerk_sync.backfill import run_backfill

    report = run_backfill(api, page_size=PAGE_SIZE, limit=users, on_page=on_page)
    if report.failed:
        raise RuntimeError(f"{report.failed} users failed: {report.failures[:3]}")
    return report.seen


def _pages(api, users, start, on_page):
    """Page GET /v1/users the way hand-written loops do: offset, oldest first."""
    offset, end = start, start + users
    while offset < end:
        page = api.list_users(limit=PAGE_SIZE, offset=offset, order_by="+created_at")[
            : end - offset
        ]
        yield page
        offset += len(page)
        if on_page:
            on_page(None)
        if len(page) < PAGE_SIZE:
            break


def naive(api, users, start, on_page=None):
    """(b): one update_or_create per user, as people write it."""
    from django.contrib.auth import get_user_model

    manager = get_user_model().objects.db_manager(NAIVE)
    seen = 0
    for page in _pages(api, users, start, on_page):
        for clerk_user in page:
            primary = next(
                (
                    e["email_address"]
                    for e in clerk_user.get("email_addresses") or []
                    if e.get("id") == clerk_user.get("primary_email_address_id")
                ),
                "",
            )
            manager.update_or_create(
                username=clerk_user["id"],
                defaults={
                    "email": primary,
                    "first_name": clerk_user.get("first_name") or "",
                    "last_name": clerk_user.get("last_name") or "",
                },
            )
            seen += 1
    return seen


def per_user(api, users, start, on_page=None):
    """(c): our one-user path (the webhook's), one call per user."""
    from django_clerk_sync import sync

    seen = 0
    for page in _pages(api, users, start, on_page):
        for clerk_user in page:
            sync.sync_user(clerk_user, source="backfill")
            seen += 1
    return seen


# Measuring.


class QueryCounter:
    def __init__(self):
        self.count = 0

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        return execute(sql, params, many, context)


def measure(connection, url, approach, users, *, start=0, profile=None):
    """One timed run of ``approach`` against ``connection``'s database as it is."""
    api = timed_api(url)
    counter = QueryCounter()
    page_queries, page_seconds = [], []
    last = [0, 0.0]

    def on_page(_report):
        now = time.perf_counter()
        page_queries.append(counter.count - last[0])
        page_seconds.append(now - last[1])
        last[:] = [counter.count, now]

    profiler = cProfile.Profile() if profile else None
    with connection.execute_wrapper(counter):
        if profiler:
            profiler.enable()
        started = last[1] = time.perf_counter()
        seen = approach(api, users, start, on_page=on_page)
        seconds = time.perf_counter() - started
        if profiler:
            profiler.disable()
    if profiler:
        profiler.dump_stats(profile)
    # Pages that held users (the backfill may read one empty page at the very end).
    full = [(q, t) for q, t in zip(page_queries, page_seconds, strict=False) if q]
    tenth = max(1, len(full) // 10)
    return {
        "users": seen,
        "seconds": seconds,
        "queries": counter.count,
        "page_queries": [q for q, _ in full],
        "page_seconds": [t for _, t in full],
        "first_pages_ms": 1000 * statistics.mean(t for _, t in full[:tenth]),
        "last_pages_ms": 1000 * statistics.mean(t for _, t in full[-tenth:]),
    }


def combined(label, results):
    """One table row from one or more runs (users and time added up)."""
    users = sum(r["users"] for r in results)
    seconds = sum(r["seconds"] for r in results)
    pages = [q for r in results for q in r["page_queries"]]
    times = [t for r in results for t in r["page_seconds"]]
    tenth = max(1, len(times) // 10)
    return {
        "label": label,
        "users": users,
        "seconds": seconds,
        "rate": users / seconds,
        "queries_per_page": statistics.median(pages),
        "queries_per_user": sum(r["queries"] for r in results) / users,
        "first_pages_ms": 1000 * statistics.mean(times[:tenth]),
        "last_pages_ms": 1000 * statistics.mean(times[-tenth:]),
    }


def peak_memory(databases, connection, url, approach, users):
    """Python's peak and retained memory (bytes) over one run, on a fresh database."""
    databases.fresh(connection)
    api = timed_api(url)
    gc.collect()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        approach(api, users, 0)
        gc.collect()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return {"peak": peak - baseline, "retained": current - baseline}


def mb(n):
    return f"{n / 2**20:.1f} MB"


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--users", type=int, default=100_000, help="N")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument(
        "--rounds", type=int, default=5, help="turns of (a) and a share of (b)"
    )
    parser.add_argument(
        "--naive-users",
        type=int,
        help="users for the naive loop over all rounds (default: N)",
    )
    parser.add_argument(
        "--per-user", action="store_true", help="also time (c), sync.sync_user per user"
    )
    parser.add_argument(
        "--per-user-users", type=int, default=10_000, help="users for (c), at most N"
    )
    parser.add_argument(
        "--no-memory", action="store_true", help="skip the tracemalloc passes"
    )
    parser.add_argument(
        "--profile", metavar="FILE", help="cProfile the first run of (a) into FILE"
    )
    parser.add_argument("--seed", type=int, default=0, help="the simulator's users")
    parser.add_argument(
        "--pg-database", default="bench_clerk", help="scratch database to create"
    )
    parser.add_argument("--pg-host", default=os.environ.get("PGHOST", "127.0.0.1"))
    parser.add_argument("--pg-port", default=os.environ.get("PGPORT", "5432"))
    parser.add_argument("--pg-user", default=os.environ.get("PGUSER", "postgres"))
    args = parser.parse_args(argv)
    n = args.users
    rounds = max(1, args.rounds)
    naive_n = min(args.naive_users or n, n)
    per_user_n = min(args.per_user_users, n)

    if args.db == "sqlite":
        databases = SQLiteDatabases()
    else:
        databases = PostgresDatabases(
            args.pg_database, args.pg_host, args.pg_port, args.pg_user
        )
    configure_django(databases)
    import django
    from django.core.management import call_command
    from django.db import connections

    ours_db, naive_db = connections[OURS], connections[NAIVE]
    began = time.monotonic()
    load_before = os.getloadavg()
    try:
        call_command("migrate", verbosity=0)
        database_name = databases.describe(ours_db)
        databases.save_template(ours_db)

        print(f"Starting the Clerk simulator with {n:,} users...", flush=True)
        with simulator(n, seed=args.seed) as url:
            a_runs, b_runs, ratios = [], [], []
            databases.fresh(naive_db)
            shares = [
                naive_n * (r + 1) // rounds - naive_n * r // rounds
                for r in range(rounds)
            ]
            for r in range(rounds):
                databases.fresh(ours_db)
                a = measure(
                    ours_db, url, ours, n, profile=args.profile if r == 0 else None
                )
                b = measure(naive_db, url, naive, shares[r], start=sum(shares[:r]))
                a_runs.append(a)
                b_runs.append(b)
                ratios.append((a["users"] / a["seconds"]) / (b["users"] / b["seconds"]))
                print(
                    f"  round {r + 1}/{rounds}: (a) {a['users'] / a['seconds']:,.0f} "
                    f"users/s, (b) {b['users'] / b['seconds']:,.0f} users/s "
                    f"({b['users']:,} users), ratio {ratios[-1]:.1f}",
                    flush=True,
                )
            median_a = sorted(a_runs, key=lambda r: r["users"] / r["seconds"])[
                len(a_runs) // 2
            ]
            rows = [
                combined("(a) run_backfill (median round)", [median_a]),
                combined("(b) naive update_or_create", b_runs),
            ]
            print("  (a) again over the same data...", flush=True)
            rows.append(
                combined("(a) again, nothing changed", [measure(ours_db, url, ours, n)])
            )
            databases.analyze(ours_db)
            rows.append(
                combined("(a) again, after ANALYZE", [measure(ours_db, url, ours, n)])
            )
            print("  (a) with an index on LOWER(username)...", flush=True)
            databases.fresh(ours_db)
            with ours_db.cursor() as cursor:
                cursor.execute(LOWER_USERNAME_INDEX)
            rows.append(
                combined(
                    "(a) with LOWER(username) index", [measure(ours_db, url, ours, n)]
                )
            )
            if args.per_user:
                print(
                    f"  (c) sync.sync_user per user, {per_user_n:,} users...",
                    flush=True,
                )
                databases.fresh(ours_db)
                rows.append(
                    combined(
                        "(c) sync.sync_user per user",
                        [measure(ours_db, url, per_user, per_user_n)],
                    )
                )

            memory = {}
            if not args.no_memory:
                tenth = max(1, n // 10)
                print("  memory passes (tracemalloc)...", flush=True)
                memory["a"] = peak_memory(databases, ours_db, url, ours, n)
                memory["a_tenth"] = peak_memory(databases, ours_db, url, ours, tenth)
                memory["b"] = peak_memory(
                    databases, naive_db, url, naive, max(1, naive_n // 10)
                )
    finally:
        databases.drop([ours_db, naive_db])

    print()
    print(
        f"{datetime.date.today()}: {os.cpu_count()} CPUs ({platform.machine()}), "
        f"Python {platform.python_version()}, Django {django.__version__}, "
        f"{database_name}"
    )
    print(
        f"N = {n:,} Clerk users, pages of {PAGE_SIZE}, {rounds} rounds; whole run "
        f"{time.monotonic() - began:,.0f} s; load average before "
        + " ".join(f"{x:.2f}" for x in load_before)
        + ", after "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    print()
    header = (
        f"{'':34} {'users':>8} {'seconds':>8} {'users/s':>8} {'queries/page':>12} "
        f"{'queries/user':>12} {'page ms, first/last 10%':>24}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        pages = f"{row['first_pages_ms']:.0f} / {row['last_pages_ms']:.0f}"
        print(
            f"{row['label']:34} {row['users']:>8,} {row['seconds']:>8.1f} "
            f"{row['rate']:>8,.0f} {row['queries_per_page']:>12,.0f} "
            f"{row['queries_per_user']:>12.3f} {pages:>24}"
        )
    print()
    a_rates = ", ".join(f"{r['users'] / r['seconds']:,.0f}" for r in a_runs)
    b_rates = ", ".join(f"{r['users'] / r['seconds']:,.0f}" for r in b_runs)
    print(f"(a) per round: {a_rates} users/s")
    print(f"(b) per round: {b_rates} users/s")
    print(
        f"(a)/(b) per round: {', '.join(f'{x:.1f}' for x in ratios)}; median "
        f"{statistics.median(ratios):.1f}x the naive rate (goal: at least 10x)"
    )
    if memory:
        print(
            f"peak Python memory (tracemalloc): (a) at N = {n:,}: "
            f"{mb(memory['a']['peak'])}, at N/10 = {max(1, n // 10):,}: "
            f"{mb(memory['a_tenth']['peak'])} (retained after the run: "
            f"{mb(memory['a']['retained'])}); (b) at {max(1, naive_n // 10):,}: "
            f"{mb(memory['b']['peak'])}"
        )
    if args.profile:
        print()
        pstats.Stats(args.profile).sort_stats("cumulative").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
