"""docs/settings.md documents every setting the code reads, and only those.

The settings the code reads are found in the code itself: the properties of
``ClerkSyncSettings`` (each docstring names its setting in double backticks) and every
``getattr(settings, "CLERK_...")`` elsewhere in the package. Each must have a section
on the page, headed by its name, with a Type, a Default and an Example line; an
example must be Python that assigns the setting, and a default written as a Python
literal must be what the code uses while the setting is unset.
"""

import ast
import inspect
import re
from pathlib import Path

import pytest

from django_clerk_sync import conf

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "django_clerk_sync"
PAGE = ROOT / "docs" / "settings.md"

SETTING_READ = re.compile(
    r"""getattr\(\s*(?:django_)?settings\s*,\s*["'](CLERK_\w+)["']""", re.S
)
HEADING = re.compile(r"^## `(CLERK_\w+)`\s*$", re.M)
FIELD = re.compile(r"^- \*\*(Type|Default|Example):\*\* (.+(?:\n  .+)*)", re.M)


def settings_properties():
    """{setting name: property name} from ClerkSyncSettings' docstrings."""
    found = {}
    for name, member in inspect.getmembers(conf.ClerkSyncSettings):
        if isinstance(member, property):
            doc = member.__doc__ or ""
            match = re.match(r"\s*``(CLERK_\w+)``", doc)
            assert match, (
                f"ClerkSyncSettings.{name}'s docstring must start with the setting's "
                "name in double backticks (``CLERK_...``)"
            )
            found[match.group(1)] = name
    return found


def settings_read_by_the_code():
    names = set(settings_properties())
    for path in PACKAGE.rglob("*.py"):
        names.update(SETTING_READ.findall(path.read_text()))
    return names


def documented_sections():
    """{setting name: the text of its section} from docs/settings.md."""
    text = PAGE.read_text()
    matches = list(HEADING.finditer(text))
    sections = {}
    for match, following in zip(matches, [*matches[1:], None], strict=False):
        end = following.start() if following else len(text)
        # A section ends at the next second-level heading of any kind.
        rest = text[match.end() : end]
        other = re.search(r"^## ", rest, re.M)
        sections[match.group(1)] = rest[: other.start()] if other else rest
    return sections


def fields(section):
    return {key: value.strip() for key, value in FIELD.findall(section)}


def test_the_code_reads_settings_that_the_scan_finds():
    # The derivation itself must not silently find nothing.
    names = settings_read_by_the_code()
    assert {"CLERK_WEBHOOK_SECRET", "CLERK_SYNC_FIELD_MAP", "CLERK_JWT_KEY"} <= names
    assert len(names) >= 20


def test_every_setting_the_code_reads_is_documented():
    missing = settings_read_by_the_code() - set(documented_sections())
    assert not missing, (
        f"docs/settings.md has no '## `NAME`' section for {sorted(missing)}"
    )


def test_no_setting_is_documented_that_the_code_does_not_read():
    extra = set(documented_sections()) - settings_read_by_the_code()
    assert not extra, (
        f"docs/settings.md documents settings nothing reads: {sorted(extra)}"
    )


def test_the_index_table_lists_every_documented_setting():
    text = PAGE.read_text()
    indexed = set(re.findall(r"^\| \[`(CLERK_\w+)`\]\(#(\w+)\)", text, re.M))
    assert {name for name, _ in indexed} == set(documented_sections())
    assert all(anchor == name.lower() for name, anchor in indexed)


@pytest.mark.parametrize("name", sorted(documented_sections()))
def test_each_setting_has_a_type_a_default_and_an_example(name):
    section = documented_sections()[name]
    found = fields(section)
    assert set(found) == {"Type", "Default", "Example"}, (
        f"{name}: the section must start with '- **Type:**', '- **Default:**' and "
        f"'- **Example:**' lines; found {sorted(found)}"
    )
    line = r"(?: .+)(?:\n  .+)*\n"
    assert re.match(
        rf"\s*- \*\*Type:\*\*{line}- \*\*Default:\*\*{line}- \*\*Example:\*\*",
        section,
    ), f"{name}: the Type, Default and Example lines come first, in that order"
    example = re.fullmatch(r"`([^`]+)`", found["Example"])
    assert example, f"{name}: the example is one line of code in backticks"
    tree = ast.parse(example.group(1))
    targets = [
        target.id
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    ]
    assert targets == [name], f"{name}: the example must assign {name}"


def literal_default(text):
    """The Python value a Default line starts with (in backticks), or a marker."""
    match = re.match(r"`([^`]+)`", text)
    if not match:
        return NotImplemented
    try:
        return ast.literal_eval(match.group(1))
    except (ValueError, SyntaxError):
        return NotImplemented


def settings_with_literal_defaults():
    sections = documented_sections()
    return [
        name
        for name in sorted(settings_properties())
        if name in sections
        and literal_default(fields(sections[name]).get("Default", ""))
        is not NotImplemented
    ]


@pytest.mark.parametrize("name", settings_with_literal_defaults())
def test_a_literal_default_is_what_the_code_uses(name, settings):
    default = literal_default(fields(documented_sections()[name])["Default"])
    if hasattr(settings, name):
        delattr(settings, name)
    value = getattr(conf.clerk_settings, settings_properties()[name])
    if isinstance(value, (list, tuple)):
        value, default = list(value), list(default)
    assert value == default, f"docs/settings.md says {name} defaults to {default!r}"


def test_the_settings_with_literal_defaults_are_checked():
    # Settings whose default is described in words (derived, or "unset") are not.
    assert len(settings_with_literal_defaults()) >= 10
