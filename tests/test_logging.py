"""What the app logs: read from the source, held to docs/logging.md, and seen on real
requests.

The first half walks the package's syntax trees: every ``getLogger`` and every
logging call (logger, level, message format, ``extra`` keys) is collected and checked
against the rules and the page, so neither can drift. The second half sends real
requests (a signed webhook, rejected deliveries, a rejected session token) and looks
at the records they produce.
"""

import ast
import json
import logging
import logging.config
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

import django_clerk_sync
from django_clerk_sync import sync

from .conftest import SECRET, load_event
from .test_webhook_http import unique_email_index  # noqa: F401  (fixture)
from .token_support import (  # noqa: F401  (fixtures)
    clerk_env,
    fresh_verifiers,
    sim,
    token_views,
)

PACKAGE = Path(django_clerk_sync.__file__).resolve().parent
DOCS = PACKAGE.parent / "docs" / "logging.md"
LEVELS = {
    "debug": "DEBUG",
    "info": "INFO",
    "warning": "WARNING",
    "error": "ERROR",
    "exception": "ERROR",
    "critical": "CRITICAL",
}
#: Attributes every LogRecord has: an ``extra`` key among them raises KeyError.
RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
#: Where printing is the interface: the commands and the simulator's command line
#: (its banner, and its request log, which only the CLI turns on).
PRINT_ALLOWED = {("simulator.py", "main"), ("simulator.py", "log_message")}


@dataclass
class LogCall:
    where: str
    logger: str
    level: str
    message: object  # the format string, or the AST node when it is not a literal
    extra: list | None  # the keys; None when absent or not literal


def _literal(node):
    """The string a literal (or implicitly concatenated literal) holds, else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        yield path, ast.parse(path.read_text(), filename=str(path))


def _module_name(path):
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)


def _loggers(path, tree):
    """``{variable: logger name}`` for the module's ``getLogger`` assignments."""
    found = {}
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and getattr(node.value.func, "attr", getattr(node.value.func, "id", None))
            == "getLogger"
        ):
            continue
        args = node.value.args
        if args and isinstance(args[0], ast.Name) and args[0].id == "__name__":
            name = _module_name(path)
        else:
            name = _literal(args[0]) if args else ""  # the root logger: refused below
        for target in node.targets:
            found[target.id] = name
    return found


def _extra_keys(extra, scope):
    """The literal keys of ``extra={...}``, following ``**name`` into a dict literal
    assigned to ``name`` in the same function; ``None`` if any key is not literal."""
    if not isinstance(extra, ast.Dict):
        return None
    keys = []
    for key, value in zip(extra.keys, extra.values, strict=True):
        if key is not None:
            if _literal(key) is None:
                return None
            keys.append(key.value)
            continue
        spread = [
            node.value
            for node in ast.walk(scope)
            if isinstance(node, ast.Assign)
            and isinstance(value, ast.Name)
            and any(getattr(t, "id", None) == value.id for t in node.targets)
        ]
        if len(spread) != 1:
            return None
        inner = _extra_keys(spread[0], scope)
        if inner is None:
            return None
        keys += inner
    return keys


def _scopes(tree):
    """Each node with the innermost function (or the module) around it."""
    stack = [(tree, tree)]
    while stack:
        node, scope = stack.pop()
        yield node, scope
        inner = (
            node if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else scope
        )
        stack.extend((child, inner) for child in ast.iter_child_nodes(node))


def logging_calls():
    calls = []
    for path, tree in _modules():
        loggers = _loggers(path, tree)
        for node, scope in _scopes(tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in LEVELS
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id in loggers | {"logging": "root"}
            ):
                continue
            owner = node.func.value.id
            extra = next((k.value for k in node.keywords if k.arg == "extra"), None)
            extra = _extra_keys(extra, scope)
            message = _literal(node.args[0]) if node.args else None
            calls.append(
                LogCall(
                    where=f"{path.relative_to(PACKAGE.parent)}:{node.lineno}",
                    logger="root" if owner == "logging" else loggers[owner],
                    level=LEVELS[node.func.attr],
                    message=message if message is not None else node.args[:1],
                    extra=extra,
                )
            )
    return calls


def logger_names():
    return {name for path, tree in _modules() for name in _loggers(path, tree).values()}


def documented_rows():
    """``{(logger, message): (level, extra keys)}`` from the tables of docs/logging.md."""
    rows, logger = {}, None
    for line in DOCS.read_text().splitlines():
        heading = re.fullmatch(r"## `(django_clerk_sync[\w.]*)`", line)
        if heading:
            logger = heading.group(1)
            continue
        if line.startswith("## "):
            logger = None
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if logger and len(cells) == 4 and cells[0] in LEVELS.values():
            message = re.fullmatch(r"`(.*)`", cells[1])
            keys = re.findall(r"`(\w+)`", cells[2])
            if message:
                rows[(logger, message.group(1))] = (cells[0], keys)
    return rows


# --- the rules, from the source --------------------------------------------------


def test_the_walk_finds_the_calls_this_page_documents():
    # Guards the walk itself: were it to find nothing, every rule below would pass.
    calls = logging_calls()
    assert len(calls) >= 25
    assert {"django_clerk_sync.sync", "django_clerk_sync.webhooks"} <= logger_names()
    assert any(c.message == "Clerk user %s %s (%s)" for c in calls)


def test_every_logger_is_named_under_the_package():
    for name in logger_names():
        # The package's own logger is configured (by the commands), not logged on.
        assert name == "django_clerk_sync" or name.startswith("django_clerk_sync."), (
            name
        )


def test_nothing_logs_on_the_root_logger():
    assert [c.where for c in logging_calls() if c.logger == "root"] == []


def test_every_logger_is_documented():
    documented = set(
        re.findall(r"^## `(django_clerk_sync\.\w+)`", DOCS.read_text(), re.M)
    )
    logging_on = {call.logger for call in logging_calls()}
    assert logging_on <= documented, logging_on - documented


def test_every_message_is_a_literal_format_string():
    # A literal with %-arguments: handlers group records by it; an f-string would
    # make every record a different message.
    assert [c.where for c in logging_calls() if not isinstance(c.message, str)] == []


def test_every_call_passes_extra_as_a_dict_of_unreserved_names():
    for call in logging_calls():
        assert call.extra, f"{call.where}: pass extra={{...}} with literal keys"
        assert not set(call.extra) & RESERVED, (
            f"{call.where}: {set(call.extra) & RESERVED} would clash with LogRecord"
        )


def test_every_message_is_documented_with_its_level_and_extra_keys():
    rows = documented_rows()
    for call in logging_calls():
        key = (call.logger, call.message)
        assert key in rows, f"{call.where}: {call.message!r} is not in docs/logging.md"
        level, keys = rows[key]
        assert level == call.level, f"{call.where}: documented as {level}"
        assert sorted(keys) == sorted(call.extra), (
            f"{call.where}: docs list {keys}, the code passes {call.extra}"
        )


def test_the_page_documents_no_message_the_code_no_longer_logs():
    logged = {(c.logger, c.message) for c in logging_calls()}
    assert set(documented_rows()) <= logged, set(documented_rows()) - logged


def test_every_extra_key_is_explained():
    text = DOCS.read_text()
    table = text.split("## The `extra` fields", 1)[1].split("\n## ", 1)[0]
    explained = set(re.findall(r"^\| `(\w+)` \|", table, re.M))
    used = {key for call in logging_calls() for key in call.extra or ()}
    assert used <= explained, used - explained


def test_nothing_prints_outside_the_commands_and_the_simulator_cli():
    offenders = []
    for path, tree in _modules():
        if "management" in path.parts:
            continue
        functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
        allowed_lines = set()
        for function in functions:
            if (path.name, function.name) in PRINT_ALLOWED:
                allowed_lines |= {
                    n.lineno for n in ast.walk(function) if hasattr(n, "lineno")
                }
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or node.lineno in allowed_lines:
                continue
            func = node.func
            prints = isinstance(func, ast.Name) and func.id == "print"
            writes = (
                isinstance(func, ast.Attribute)
                and func.attr == "write"
                and isinstance(func.value, ast.Attribute)
                and func.value.attr in ("stdout", "stderr")
                and isinstance(func.value.value, ast.Name)
                and func.value.value.id == "sys"
            )
            if prints or writes:
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []


def test_the_documented_logging_configurations_load():
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.DOTALL)
    formatter_code = next(b for b in blocks if "class JSONFormatter" in b)
    namespace = {}
    exec(compile(formatter_code, "docs/logging.md", "exec"), namespace)
    configs = [b for b in blocks if b.startswith("LOGGING = ")]
    assert len(configs) == 2
    stream = []

    class Capture(logging.Handler):
        def emit(self, record):
            stream.append(self.format(record))

    logger = logging.getLogger("django_clerk_sync")
    saved = logger.handlers[:], logger.level, logger.propagate
    try:
        for code in configs:
            config = {}
            exec(code, {}, config)
            config = config["LOGGING"]
            for formatter in config["formatters"].values():
                if formatter.get("()") == "myproject.logging.JSONFormatter":
                    formatter["()"] = namespace["JSONFormatter"]
            logging.config.dictConfig(config)
            formatter = logger.handlers[0].formatter
            capture = Capture()
            capture.setFormatter(formatter)
            logger.addHandler(capture)
            logging.getLogger("django_clerk_sync.sync").info(
                "Clerk user %s %s (%s)",
                "user_2abc",
                "created",
                "webhook",
                extra={"clerk_id": "user_2abc", "outcome": "created"},
            )
        plain, as_json = stream
        assert plain.endswith(
            "django_clerk_sync.sync: Clerk user user_2abc created (webhook)"
        )
        entry = json.loads(as_json)
        assert entry["message"] == "Clerk user user_2abc created (webhook)"
        assert (entry["clerk_id"], entry["outcome"]) == ("user_2abc", "created")
        assert entry["logger"] == "django_clerk_sync.sync"
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved
        for name in ("django_clerk_sync.auth",):
            logging.getLogger(name).setLevel(logging.NOTSET)


# --- records from real requests --------------------------------------------------

EMAIL = "ada.lovelace@example.com"


def records_of(caplog, prefix="django_clerk_sync"):
    return [r for r in caplog.records if r.name.startswith(prefix)]


def assert_no_personal_data(records, *secrets):
    for record in records:
        text = (
            record.getMessage()
            + " "
            + repr({k: v for k, v in vars(record).items() if k not in RESERVED})
        )
        for secret in (EMAIL, SECRET, *secrets):
            assert secret not in text, f"{record.name}: {record.getMessage()!r}"


def test_a_signed_webhook_logs_the_sync_with_its_fields(deliver, caplog):
    envelope = load_event("user_created", id="user_2logging")
    envelope["data"]["email_addresses"][0]["email_address"] = EMAIL

    with caplog.at_level(logging.INFO, logger="django_clerk_sync"):
        assert deliver(envelope, svix_id="msg_2logging").status_code == 200
        assert deliver(envelope, svix_id="msg_2logging").status_code == 200  # again

    [synced] = records_of(caplog, "django_clerk_sync.sync")
    assert synced.getMessage() == "Clerk user user_2logging created (webhook)"
    assert (synced.clerk_id, synced.source, synced.outcome) == (
        "user_2logging",
        "webhook",
        sync.CREATED,
    )
    [duplicate] = records_of(caplog, "django_clerk_sync.webhooks")
    assert (duplicate.svix_id, duplicate.clerk_id, duplicate.outcome) == (
        "msg_2logging",
        "user_2logging",
        "duplicate",
    )
    assert (duplicate.event_type, duplicate.status) == ("user.created", "processed")
    assert_no_personal_data(records_of(caplog))


def test_a_delivery_with_a_bad_signature_logs_why_with_its_fields(deliver, caplog, db):
    envelope = load_event("user_created")
    envelope["data"]["email_addresses"][0]["email_address"] = EMAIL
    other_secret = "whsec_" + "b3RoZXIgc2VjcmV0IG9mIDI0IGJ5dGVzISE="

    with caplog.at_level(logging.INFO, logger="django_clerk_sync"):
        response = deliver(envelope, svix_id="msg_2forged", secret=other_secret)

    assert response.status_code == 400
    [rejected] = records_of(caplog)
    assert rejected.levelno == logging.WARNING
    assert (rejected.svix_id, rejected.outcome, rejected.http_status) == (
        "msg_2forged",
        "rejected",
        400,
    )
    assert "no signature matches" in rejected.reason
    assert_no_personal_data(records_of(caplog), other_secret)


def test_an_unset_secret_is_logged_as_an_error_naming_the_setting(
    deliver, caplog, settings, db
):
    settings.CLERK_WEBHOOK_SECRET = None

    with caplog.at_level(logging.INFO, logger="django_clerk_sync"):
        assert deliver(load_event("user_created")).status_code == 503

    [refused] = records_of(caplog)
    assert refused.levelno == logging.ERROR
    assert (refused.outcome, refused.http_status) == ("refused", 503)
    assert refused.reason == "CLERK_WEBHOOK_SECRET is not set"


def test_a_failed_event_logs_its_ids_and_error_type_only(
    deliver, unique_email_index, caplog
):
    from django.contrib.auth import get_user_model

    # A local user outside Clerk holds the (unique) email: a permanent conflict,
    # whose database error quotes the email.
    get_user_model().objects.create_user("ada-local", email=EMAIL)
    envelope = load_event("user_created", id="user_2clash")
    envelope["data"]["email_addresses"][0]["email_address"] = EMAIL

    with caplog.at_level(logging.INFO, logger="django_clerk_sync"):
        response = deliver(envelope, svix_id="msg_2clash")

    assert response.status_code == 409
    [failed] = records_of(caplog, "django_clerk_sync.events")
    assert (failed.svix_id, failed.clerk_id, failed.event_type) == (
        "msg_2clash",
        "user_2clash",
        "user.created",
    )
    assert (failed.outcome, failed.permanent, failed.attempt) == ("failed", True, 1)
    assert failed.error == "SyncConflict"
    assert_no_personal_data(records_of(caplog))


def test_a_rejected_session_token_logs_its_reason_without_the_token(
    sim, clerk_env, caplog, db
):
    from django.test import Client

    token = sim.mint_session_token("user_2rejected", azp="https://evil.example.com")

    with caplog.at_level(logging.DEBUG, logger="django_clerk_sync"):
        response = Client().get("/whoami/", HTTP_AUTHORIZATION=f"Bearer {token}")

    assert response.json()["rejection"] == "wrong_party"
    [rejected] = records_of(caplog, "django_clerk_sync.auth")
    assert (rejected.reason, rejected.clerk_id, rejected.outcome) == (
        "wrong_party",
        "user_2rejected",
        "rejected",
    )
    assert rejected.levelno == logging.DEBUG
    assert_no_personal_data(records_of(caplog), token, token.split(".")[1])
