"""docs/api.md and docs/signals.md are checked against the code, so they cannot drift.

- Every name docs/api.md lists exists, and a signature it shows is the code's own
  (parameters, defaults and annotations, as ``inspect.signature`` sees them).
- Every name in a package module's ``__all__``, every public name of the package
  itself, every pytest fixture of the plugin and every management command is listed.
- The argument tables of docs/signals.md name exactly what the signals are sent with,
  and its sources table names exactly the sources the package sends.
"""

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

from django_clerk_sync import sync
from django_clerk_sync.signals import clerk_user_deleted, clerk_user_synced
from django_clerk_sync.testing import clerk_user

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "django_clerk_sync"
API_PAGE = ROOT / "docs" / "api.md"
SIGNALS_PAGE = ROOT / "docs" / "signals.md"

FIXTURES_SECTION = "pytest fixtures"
COMMANDS_SECTION = "Management commands"


# --- Rendering a signature as the page shows it -------------------------------------


class _Text:
    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return self.text


def _annotation(value):
    if value is inspect.Parameter.empty:
        return value
    # Modules with ``from __future__ import annotations`` hold strings: shown bare.
    return _Text(value if isinstance(value, str) else inspect.formatannotation(value))


def _default(value):
    if value is inspect.Parameter.empty:
        return value
    # A sentinel object's repr holds its address, which changes every run.
    return _Text("...") if " at 0x" in repr(value) else value


def render(obj, name, *, method=False):
    signature = inspect.signature(obj)
    params = list(signature.parameters.values())
    if method and params and params[0].name in ("self", "cls"):
        params = params[1:]
    params = [
        p.replace(annotation=_annotation(p.annotation), default=_default(p.default))
        for p in params
    ]
    returns = (
        inspect.Signature.empty if inspect.isclass(obj) else signature.return_annotation
    )
    signature = signature.replace(
        parameters=params, return_annotation=_annotation(returns)
    )
    if inspect.isclass(obj):
        prefix = "class "
    elif inspect.iscoroutinefunction(obj):
        prefix = "async def "
    else:
        prefix = ""
    return f"{prefix}{name}{signature}"


# --- Reading the page -------------------------------------------------------------


def api_entries():
    """[(section, name, code block or None)] in page order."""
    entries, section = [], None
    lines = API_PAGE.read_text().splitlines()
    for number, line in enumerate(lines):
        if line.startswith("## "):
            section = line[3:].strip().strip("`")
        elif line.startswith("### "):
            name = line[4:].strip().strip("`")
            block = None
            for following in lines[number + 1 :]:
                if following.startswith("#"):
                    break
                if following.startswith("```python"):
                    start = lines.index(following, number + 1) + 1
                    end = lines.index("```", start)
                    block = "\n".join(lines[start:end])
                    break
            entries.append((section, name, block))
    return entries


def listed(section):
    return {name for sec, name, _ in api_entries() if sec == section}


def resolve(module, name):
    from .test_docs_examples import import_or_skip

    obj = import_or_skip(module, f"docs/api.md's {module}.{name}")
    owner = None
    for part in name.split("."):
        owner, obj = obj, getattr(obj, part)
    return owner, obj


def module_entries():
    return [
        entry for entry in api_entries() if entry[0].startswith("django_clerk_sync")
    ]


@pytest.mark.parametrize(
    "module,name,block",
    module_entries(),
    ids=[f"{m}.{n}" for m, n, _ in module_entries()],
)
def test_each_listed_name_exists_with_the_signature_shown(module, name, block):
    owner, obj = resolve(module, name)
    is_method = inspect.isclass(owner) and inspect.isfunction(
        inspect.getattr_static(owner, name.split(".")[-1])
    )
    if inspect.isfunction(obj) or is_method:
        assert block, f"docs/api.md: {module}.{name} needs its signature"
    if block is None:
        return
    if block.startswith(f"{name} = "):
        assert block == f"{name} = {obj!r}", f"docs/api.md: {module}.{name}'s value"
    else:
        assert block == render(obj, name, method=is_method), (
            f"docs/api.md shows another signature for {module}.{name}; the code's is\n"
            f"{render(obj, name, method=is_method)}"
        )


def python_modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), ast.parse(path.read_text())


def declared_all(tree):
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
                return ast.literal_eval(node.value)
    return None


def test_every_name_in_a_modules_all_is_listed():
    checked = 0
    for module, tree in python_modules():
        names = declared_all(tree)
        if names is None:
            continue
        missing = set(names) - listed(module)
        assert not missing, f"docs/api.md does not list {module}: {sorted(missing)}"
        checked += 1
    assert checked >= 4  # middleware, contrib.drf, testing, simulator at least


def test_every_public_name_of_the_package_itself_is_listed():
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    public = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            public.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            public.update(t.id for t in targets if isinstance(t, ast.Name))
    public = {n for n in public if not n.startswith("_") or n == "__version__"}
    public.discard("__all__")
    assert {"get_user", "__version__"} <= public
    assert public <= listed("django_clerk_sync")


def test_every_fixture_of_the_pytest_plugin_is_listed():
    path = PACKAGE / "pytest_plugin.py"
    if not path.exists():
        pytest.skip("no pytest plugin in this version")
    fixtures = {
        node.name
        for node in ast.parse(path.read_text()).body
        if isinstance(node, ast.FunctionDef)
        and any("fixture" in ast.unparse(d) for d in node.decorator_list)
    }
    assert fixtures
    assert fixtures == listed(FIXTURES_SECTION)


def test_every_management_command_is_listed():
    commands = {
        path.stem
        for path in (PACKAGE / "management" / "commands").glob("*.py")
        if not path.name.startswith("_")
    }
    assert "clerk_backfill" in commands
    assert commands == listed(COMMANDS_SECTION)


def test_the_page_has_a_section_for_each_public_module():
    sections = {section for section, _, _ in api_entries()}
    for module in (
        "django_clerk_sync",
        "django_clerk_sync.signals",
        "django_clerk_sync.sync",
        "django_clerk_sync.middleware",
        "django_clerk_sync.backends",
        "django_clerk_sync.contrib.drf",
        "django_clerk_sync.testing",
        "django_clerk_sync.simulator",
    ):
        assert module in sections, f"docs/api.md has no section for {module}"


# --- The signals page -------------------------------------------------------------


def table_first_column(page, heading):
    """The backticked first cells of the first table after ``heading``."""
    text = page.read_text()
    start = text.index(heading)
    rows, in_body = [], False
    for line in text[start:].splitlines()[1:]:
        if line.startswith("#") or (in_body and not line.startswith("|")):
            break
        if line.startswith("|---"):
            in_body = True  # the rows after the header's separator
        elif in_body:
            match = re.match(r"\| `([^`]+)` \|", line)
            assert match, f"{page.name}: a row without a name in backticks: {line}"
            rows.append(match.group(1))
    return rows


@pytest.fixture
def sent():
    calls = []

    def on_synced(**kwargs):
        calls.append(("synced", kwargs))

    def on_deleted(**kwargs):
        calls.append(("deleted", kwargs))

    clerk_user_synced.connect(on_synced, weak=False)
    clerk_user_deleted.connect(on_deleted, weak=False)
    yield calls
    clerk_user_synced.disconnect(on_synced)
    clerk_user_deleted.disconnect(on_deleted)


@pytest.mark.django_db(transaction=True)
def test_the_signals_page_names_exactly_the_arguments_sent(sent):
    sync.sync_user(clerk_user("user_docs1", email="ada@example.com"), source="webhook")
    sync.delete_user("user_docs1", source="webhook")

    assert [name for name, _ in sent] == ["synced", "deleted"]
    (_, synced), (_, deleted) = sent
    # Django adds ``signal`` to every receiver's arguments; the page says so.
    assert table_first_column(SIGNALS_PAGE, "## `clerk_user_synced`") == [
        name for name in synced if name != "signal"
    ]
    assert table_first_column(SIGNALS_PAGE, "## `clerk_user_deleted`") == [
        name for name in deleted if name != "signal"
    ]


def test_the_signals_page_names_exactly_the_sources_the_package_sends():
    sources = set()
    for path in PACKAGE.rglob("*.py"):
        sources.update(re.findall(r"""\bsource=["'](\w+)["']""", path.read_text()))
    documented = table_first_column(SIGNALS_PAGE, "## Sources")
    assert {name.strip('"') for name in documented} == sources
