#!/usr/bin/env python
"""Deferred processing: deliveries accepted per second at the endpoint, inline and
deferred, and how fast 1, 2 and 4 workers drain the backlog, on PostgreSQL.

Run on demand (it is not part of the test suite), from the repository root, with
PostgreSQL and Redis running and the engines installed (``pip install -e '.[test]'``)::

    python benchmarks/bench_deferred.py
    python benchmarks/bench_deferred.py --users 2000 --workers 1,2,4 --rounds 2
    python benchmarks/bench_deferred.py --engines celery --conn-max-age 60

The processes are the ones tests/test_workers.py runs (tests/worker_support.py):
Django's threaded development server serving the webhook; workers that run one task
at a time, ``celery -A tests.worker_app worker --pool=solo`` (Redis broker) or
django-tasks-db's ``manage.py db_worker``; one PostgreSQL database. ``--senders``
threads in this process (default 8) POST the deliveries over loopback HTTP, each
signed by svix's signer: ``--users`` Clerk users (default 1,000), each created and
updated three times (4 deliveries a user), shuffled.

Measured, per round:

(a) inline (``CLERK_SYNC_PROCESSING = "inline"``): deliveries per second answered,
    each verified, stored and applied in the request;
(b) for each engine of ``--engines`` and each worker count N of ``--workers``: the
    deliveries per second answered 202 with no worker running (verified, stored and
    enqueued), then that backlog drained by N workers started together, in events
    per second from the first ``processed_at`` to the last (worker start-up
    excluded). Every event is checked processed before the figure counts.

Alongside each rate, the CPU time the server (per delivery) and the workers (per
event) used, from ``/proc``: on a machine shared with other work the wall-clock rates
move with the load, the CPU cost much less. PostgreSQL's and Redis's own CPU is not
in it.

``--conn-max-age`` sets the workers' ``CONN_MAX_AGE`` (default 0, Django's: a new
database connection per task; the development server always opens one per request). The database is
emptied between runs. The script creates its own database (``--pg-database``,
default ``bench_clerk_deferred``; refuses an existing one) and drops it at the end,
interrupted or not; it uses its own Redis database (``--redis``, default
``redis://127.0.0.1:6379/7``), emptied before and after.
"""

import argparse
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--workers", default="1,2,4", help="worker counts, e.g. 1,2,4")
    parser.add_argument(
        "--engines",
        default="celery,django_tasks",
        help="deferred engines: celery (Redis broker), django_tasks (django-tasks-db)",
    )
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--pg-database", default="bench_clerk_deferred")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/7")
    parser.add_argument(
        "--conn-max-age",
        type=int,
        default=0,
        help="the workers' CONN_MAX_AGE (default 0, Django's)",
    )
    return parser.parse_args()


def admin_connection():
    import psycopg

    return psycopg.connect(
        host=os.environ.get("PGHOST", "127.0.0.1"),
        port=os.environ.get("PGPORT", "5432"),
        user=os.environ.get("PGUSER", "postgres"),
        dbname="postgres",
        autocommit=True,
    )


def create_database(name):
    with admin_connection() as conn:
        found = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [name]
        ).fetchone()
        if found:
            sys.exit(f"database {name!r} exists; choose another --pg-database")
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(name):
    with admin_connection() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def versions(redis_client):
    import celery
    import django
    from django.db import connection

    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        postgres = cursor.fetchone()[0]
    return (
        f"{os.cpu_count()} cores ({cpu}), {platform.system()}, "
        f"Python {platform.python_version()}, Django {django.get_version()}, "
        f"PostgreSQL {postgres}, Redis {redis_client.info('server')['redis_version']}, "
        f"Celery {celery.__version__}"
    )


def empty_everything(broker):
    from django.core.management import call_command

    call_command("flush", interactive=False, verbosity=0)
    broker.flushdb()


def accept(harness, history, senders):
    """Send every delivery; return (deliveries per second, server CPU ms per
    delivery, status counts)."""
    from tests.worker_support import send

    server = harness.start_server()
    try:
        cpu = server.cpu_seconds()
        started = time.perf_counter()
        answers = send(harness.url, history.deliveries, senders=senders)
        elapsed = time.perf_counter() - started
        cpu = server.cpu_seconds() - cpu
    finally:
        harness.stop_server()
    n = len(history.deliveries)
    return n / elapsed, 1000 * cpu / n, answers


def drain(harness, workers, expected):
    """Start ``workers`` workers on the backlog; return (events per second, worker
    CPU ms per event). Both are counted from the first event processed, so worker
    start-up is left out."""
    from django.db.models import Max, Min

    from django_clerk_sync.models import WebhookEvent
    from tests.worker_support import wait_until

    started = [harness.start_worker() for _ in range(workers)]
    events = WebhookEvent.objects.all()
    processed = events.filter(status="processed")
    try:
        wait_until(processed.exists, timeout=600, interval=0.02, what="a first event")
        cpu_then = sum(worker.cpu_seconds() for worker in started)
        done_then = processed.count()
        wait_until(
            lambda: not events.exclude(status="processed").exists(),
            timeout=1800,
            interval=0.5,
            what="the backlog to drain",
        )
        cpu = sum(worker.cpu_seconds() for worker in started) - cpu_then
    finally:
        for worker in list(harness.workers):
            worker.stop()
        harness.workers.clear()
    assert events.count() == expected, (events.count(), expected)
    span = events.aggregate(first=Min("processed_at"), last=Max("processed_at"))
    seconds = (span["last"] - span["first"]).total_seconds()
    return expected / seconds, 1000 * cpu / (expected - done_then)


def main():
    args = parse_args()
    worker_counts = [int(n) for n in args.workers.split(",")]
    engines = args.engines.split(",")
    if "django_tasks" in engines:
        # Installs django-tasks-db here too, so that migrate makes its table.
        os.environ["CLERK_SYNC_WORKER_PROCESSING"] = "django_tasks"
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.worker_settings"
    os.environ["CLERK_SYNC_WORKER_DB"] = args.pg_database
    os.environ["CLERK_SYNC_WORKER_BROKER"] = args.redis
    os.environ["CLERK_SYNC_WORKER_CONN_MAX_AGE"] = str(args.conn_max_age)

    # SIGTERM too must reach the finally clauses below (processes, database).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    create_database(args.pg_database)
    log_dir = tempfile.mkdtemp(prefix="bench_deferred_")
    harnesses = []
    broker = None
    try:
        import django

        django.setup()
        import redis
        from django.core.management import call_command
        from django.db import connections

        from tests.worker_support import Harness, History

        call_command("migrate", verbosity=0)
        broker = redis.Redis.from_url(args.redis, socket_timeout=5)
        broker.flushdb()
        print(versions(broker))
        print(f"load average (1 min) at the start: {os.getloadavg()[0]:.1f}")
        history = History(args.users, updates=3, delete_every=0, prefix="b")
        n = len(history.deliveries)
        print(
            f"{n} deliveries ({args.users} users x create + 3 updates), "
            f"{args.senders} senders, {args.rounds} round(s), "
            f"CONN_MAX_AGE={args.conn_max_age}\n"
        )

        def harness(processing):
            made = Harness(args.pg_database, args.redis, log_dir, processing=processing)
            harnesses.append(made)
            return made

        results = {"inline": [], "inline cpu": []}
        for engine in engines:
            for key in (engine, f"{engine} cpu"):
                results[key] = []
            for w in worker_counts:
                results[engine, w] = []
                results[engine, w, "cpu"] = []
        for round_ in range(1, args.rounds + 1):
            empty_everything(broker)
            rate, cpu, answers = accept(harness("inline"), history, args.senders)
            assert set(answers) == {200}, answers
            results["inline"].append(rate)
            results["inline cpu"].append(cpu)
            print(
                f"round {round_}: inline accepted {rate:,.0f}/s "
                f"(server CPU {cpu:.1f} ms each)"
            )
            for engine in engines:
                for workers in worker_counts:
                    empty_everything(broker)
                    deferred = harness(engine)
                    rate, cpu, answers = accept(deferred, history, args.senders)
                    assert set(answers) == {202}, answers
                    results[engine].append(rate)
                    results[f"{engine} cpu"].append(cpu)
                    drained, worker_cpu = drain(deferred, workers, n)
                    results[engine, workers].append(drained)
                    results[engine, workers, "cpu"].append(worker_cpu)
                    print(
                        f"round {round_}: {engine} accepted {rate:,.0f}/s (server "
                        f"CPU {cpu:.1f} ms each); {workers} worker(s) drained "
                        f"{drained:,.0f} events/s (worker CPU {worker_cpu:.1f} ms each)"
                    )
            connections.close_all()

        def median(values, unit="/s"):
            runs = ", ".join(f"{v:,.1f}" for v in values)
            return f"{statistics.median(values):,.1f}{unit} (runs: {runs})"

        print(f"\nload average (1 min) at the end: {os.getloadavg()[0]:.1f}")
        print("medians:")
        print(f"  accepted, inline: {median(results['inline'])}")
        print(f"    server CPU per delivery: {median(results['inline cpu'], ' ms')}")
        for engine in engines:
            print(f"  accepted, {engine}: {median(results[engine])}")
            cpu = median(results[f"{engine} cpu"], " ms")
            print(f"    server CPU per delivery: {cpu}")
            for workers in worker_counts:
                rates = results[engine, workers]
                cpu = median(results[engine, workers, "cpu"], " ms")
                print(f"  drained, {engine}, {workers} worker(s): {median(rates)}")
                print(f"    worker CPU per event: {cpu}")
    finally:
        for made in harnesses:
            made.close()
        if broker is not None:
            broker.flushdb()
        try:
            from django.db import connections

            connections.close_all()
        except Exception:
            pass
        drop_database(args.pg_database)
        subprocess.run(["rm", "-rf", log_dir], check=False)


if __name__ == "__main__":
    main()
