"""The code examples in docs/ run as they are written.

Each ``python`` block of the listed pages is executed into this module, so the
``TestCase`` classes it defines are collected and run like any other test here.
"""

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"
RUNNABLE_PAGES = ["testing.md"]


def python_blocks(page):
    return re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), re.DOTALL)


for _page in RUNNABLE_PAGES:
    for _number, _code in enumerate(python_blocks(_page)):
        exec(compile(_code, f"docs/{_page} (block {_number + 1})", "exec"), globals())


def test_the_runnable_pages_have_examples():
    assert all(python_blocks(page) for page in RUNNABLE_PAGES)


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
