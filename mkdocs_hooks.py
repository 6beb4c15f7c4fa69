"""MkDocs hooks for the documentation site (mkdocs.yml names this file).

CHANGELOG.md lives at the repository root, so its links to the docs read
``docs/deployment.md``: right on the repository host, one folder too deep for the
site, where the changelog is the page ``changelog.md`` beside the others. The
changelog page includes the file with the snippet line ``--8<-- "CHANGELOG.md"``;
this hook does that inclusion itself, with those links made relative to the page,
so that the strict build checks them like any other link.
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent
SNIPPET = re.compile(r'^--8<-- "(CHANGELOG\.md)"\s*$', re.M)
DOCS_LINK = re.compile(r"\]\(docs/")


def on_page_markdown(markdown, page, config, files):
    def include(match):
        text = (ROOT / match.group(1)).read_text(encoding="utf-8")
        return DOCS_LINK.sub("](", text)

    return SNIPPET.sub(include, markdown)
