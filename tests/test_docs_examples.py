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
