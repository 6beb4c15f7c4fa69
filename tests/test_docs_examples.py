"""The code examples in docs/ are exercised, so a broken example fails a test.

Every ``python`` block of every page (except api.md, whose blocks are signatures that
tests/test_docs_api.py checks against the code) is:

- compiled;
- checked for imports: each ``import`` resolves, down to the names imported ``from``
  a module, except relative imports and the reader's own project (``myapp``,
  ``myproject``);
- checked for names: every ``"django_clerk_sync...."`` dotted string (a middleware,
  a backend, a DRF class) imports, and every ``CLERK_*`` setting it assigns is one
  docs/settings.md documents (which test_docs_settings.py ties to the code).

A block can be marked by an HTML comment on the line just before its fence:

- ``<!-- docs-test: run NAME -->``: the block is executed by the tests below under
  that name, which use what it defines (the field-map callables of sync-rules.md,
  for instance);
- ``<!-- docs-test: skip -->``: the block is deliberately not Python that compiles
  (a fragment with placeholders); it is only counted.

The blocks of testing.md are all executed into this module (unless marked skip), so
the ``TestCase`` classes they define are collected and run like any other test here.
"""

import ast
import importlib
import re
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.test import override_settings

from django_clerk_sync import conf, get_user, sync
from django_clerk_sync.testing import clerk_user

DOCS = Path(__file__).resolve().parent.parent / "docs"
RUNNABLE_PAGES = ["testing.md"]
NOT_EXAMPLES = {"api.md", "changelog.md"}
# Pages whose examples the task of keeping docs honest names explicitly: each must
# keep at least one Python example.
PAGES_WITH_EXAMPLES = [
    "installation.md",
    "quickstart.md",
    "settings.md",
    "signals.md",
    "sync-rules.md",
    "middleware.md",
    "testing.md",
]
READERS_OWN_MODULES = ("myapp", "myproject")

BLOCK = re.compile(
    r"(?:^<!-- docs-test: (?P<marker>run|skip)(?: (?P<name>[\w-]+))? -->\n)?"
    r"^(?P<indent> *)```python[^\n]*\n(?P<code>.*?)^(?P=indent)```",
    re.S | re.M,
)


def blocks(page, *, names=False):
    """[(number, marker or None, code)] for each python block of ``page``."""
    found = []
    for number, match in enumerate(BLOCK.finditer((DOCS / page).read_text()), 1):
        indent = len(match["indent"])
        code = "\n".join(line[indent:] for line in match["code"].splitlines())
        entry = (number, match["marker"], code + "\n")
        found.append((*entry, match["name"]) if names else entry)
    return found


def example_pages():
    return sorted(p.name for p in DOCS.glob("*.md") if p.name not in NOT_EXAMPLES)


def all_blocks():
    return [
        (page, number, marker, code)
        for page in example_pages()
        for number, marker, code in blocks(page)
    ]


def run_block(page, name):
    """Execute the block marked ``run NAME`` and return what it defined."""
    for number, marker, code, found in blocks(page, names=True):
        if marker == "run" and found == name:
            namespace = {"__name__": f"docs_{name}"}
            exec(compile(code, f"docs/{page} (block {number})", "exec"), namespace)
            return namespace
    raise AssertionError(f"docs/{page} has no block marked 'docs-test: run {name}'")


def documented_settings():
    text = (DOCS / "settings.md").read_text()
    return set(re.findall(r"^## `(CLERK_\w+)`\s*$", text, re.M))


for _page in RUNNABLE_PAGES:
    for _number, _marker, _code in blocks(_page):
        if _marker != "skip":
            exec(compile(_code, f"docs/{_page} (block {_number})", "exec"), globals())


def test_the_runnable_pages_have_examples():
    assert all(blocks(page) for page in RUNNABLE_PAGES)


@pytest.mark.parametrize("page", PAGES_WITH_EXAMPLES)
def test_the_pages_that_teach_by_example_have_examples(page):
    assert blocks(page), f"docs/{page} has no python example any more"


def test_few_examples_are_skipped():
    found = all_blocks()
    skipped = [(page, number) for page, number, marker, _ in found if marker == "skip"]
    assert len(found) > 30
    assert len(skipped) <= 3, f"too many examples marked skip: {skipped}"


#: Packages a docs example may need that the package does not install itself (its
#: extras): without them (tox -e noextras) the example is skipped, saying which.
OPTIONAL_PACKAGES = {
    "rest_framework": "djangorestframework",
    "celery": "celery",
    "django_tasks": "django-tasks",
    "django_tasks_db": "django-tasks-db",
    "redis": "redis",
}


def import_or_skip(module, where):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top in OPTIONAL_PACKAGES:
            pytest.skip(f"{where} needs {OPTIONAL_PACKAGES[top]}, an optional extra")
        raise


def _check_import(module, names, where):
    top = module.split(".")[0]
    if top in READERS_OWN_MODULES:
        return
    imported = import_or_skip(module, where)
    for name in names:
        if name == "*":
            continue
        if not hasattr(imported, name):
            # ``from package import submodule``
            importlib.import_module(f"{module}.{name}")


@pytest.mark.parametrize(
    "page,number,marker,code",
    all_blocks(),
    ids=[f"{page}-{number}" for page, number, _, _ in all_blocks()],
)
def test_each_example_compiles_and_its_names_resolve(page, number, marker, code):
    where = f"docs/{page} block {number}"
    if marker == "skip":
        return
    tree = ast.parse(code, filename=where)
    compile(tree, where, "exec")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                _check_import(alias.name, [], where)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            _check_import(node.module, [a.name for a in node.names], where)
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and re.fullmatch(r"django_clerk_sync(\.[a-z_]+)*\.[A-Z]\w*", node.value)
        ):
            # A class named by its dotted path (MIDDLEWARE, AUTHENTICATION_BACKENDS,
            # DRF's classes). Lower-case dotted strings are logger names.
            module, _, name = node.value.rpartition(".")
            assert hasattr(import_or_skip(module, where), name), (
                f"{where}: {node.value!r} does not exist"
            )
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", None) == "include"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            importlib.import_module(
                node.args[0].value
            )  # include("django_clerk_sync.urls")
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            if node.id.startswith("CLERK_"):
                assert node.id in documented_settings(), (
                    f"{where} sets {node.id}, which is not a documented setting"
                )


# --- Examples that run ------------------------------------------------------------


def test_the_default_field_map_shown_is_the_default_for_djangos_user(settings):
    """settings.md shows the default CLERK_SYNC_FIELD_MAP for the default User."""
    shown = run_block("settings.md", "default-field-map")["CLERK_SYNC_FIELD_MAP"]
    if hasattr(settings, "CLERK_SYNC_FIELD_MAP"):
        del settings.CLERK_SYNC_FIELD_MAP
    assert conf.clerk_settings.FIELD_MAP == shown


@pytest.mark.django_db(transaction=True)
def test_the_field_map_callables_of_sync_rules_work_through_the_sync():
    callables = run_block("sync-rules.md", "field-map-callables")
    field_map = run_block("sync-rules.md", "field-map-setting")["CLERK_SYNC_FIELD_MAP"]
    # The settings example names them by "myproject.clerk:..." path; here they are
    # passed as the callables that path would import.
    field_map = {
        field: callables[source.split(":")[1]]
        if source.startswith("myproject.")
        else source
        for field, source in field_map.items()
    }
    staff = clerk_user(
        "user_docs_staff",
        email="ada@example.com",
        first_name="Ada",
        public_metadata={"role": "staff"},
    )
    unverified = clerk_user(
        "user_docs_plain", email="bob@example.com", email_verified=False
    )
    with override_settings(CLERK_SYNC_FIELD_MAP=field_map):
        sync.sync_user(staff, source="webhook")
        sync.sync_user(unverified, source="webhook")

    ada, bob = get_user("user_docs_staff"), get_user("user_docs_plain")
    assert (ada.email, ada.first_name, ada.is_staff) == ("ada@example.com", "Ada", True)
    assert (bob.email, bob.is_staff) == ("", False)  # unverified: no email synced


@pytest.mark.django_db(transaction=True)
def test_the_anonymising_delete_policy_of_settings_works():
    anonymise = run_block("settings.md", "delete-policy")["anonymise"]
    sync.sync_user(
        clerk_user("user_docs_anon", email="ada@example.com"), source="webhook"
    )
    with override_settings(CLERK_SYNC_ON_DELETE=anonymise):
        sync.delete_user("user_docs_anon", source="webhook")
    user = get_user_model().objects.get(clerk_link__clerk_id="user_docs_anon")
    assert (user.email, user.is_active) == ("", False)


def test_every_page_is_in_the_sites_navigation():
    """mkdocs.yml's nav lists each page once; a page left out of it, or a nav entry
    without a page, fails `mkdocs build --strict` too, but this needs no MkDocs."""
    config = (DOCS.parent / "mkdocs.yml").read_text()
    nav = re.findall(r"^\s*- (?:[^:\n]+: )?([\w./-]+\.md)\s*$", config, re.M)
    assert len(nav) == len(set(nav))
    assert set(nav) == {page.name for page in DOCS.glob("*.md")}


def test_the_changelog_page_includes_the_changelog_rather_than_a_copy():
    import mkdocs_hooks

    text = (DOCS / "changelog.md").read_text()
    assert '--8<-- "CHANGELOG.md"' in text
    assert "## [Unreleased]" not in text
    # The site's hook includes it, with its links to docs/ made relative to the page.
    page = mkdocs_hooks.on_page_markdown(text, page=None, config=None, files=None)
    changelog = (DOCS.parent / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in page
    assert "](docs/" not in page
    assert page.count("](") == changelog.count("](")


def test_every_test_the_reliability_page_names_exists():
    """docs/reliability.md names the tests that prove each guarantee: a renamed or
    removed test must not leave the page pointing at nothing."""
    text = (DOCS / "reliability.md").read_text()
    tests_dir = Path(__file__).resolve().parent
    named = re.findall(r"`(test_\w+\.py)(?:::(test_\w+))?`", text)
    # Names after a module in one cell: "`test_x.py::test_a`, `test_b`".
    for cell in re.findall(r"\|([^|\n]*test_\w+\.py[^|\n]*)\|\s*$", text, re.MULTILINE):
        module = None
        for token in re.findall(r"`([^`]+)`", cell):
            if token.endswith(".py") or "::" in token:
                module = token.split("::")[0]
            elif token.startswith("test_") and module:
                named.append((module, token))
    assert len(named) > 20
    for module, name in named:
        source = (tests_dir / module).read_text()
        assert name == "" or re.search(rf"^(async )?def {name}\(", source, re.M), (
            f"docs/reliability.md names {module}::{name}, which does not exist"
        )
