"""The musician's guide (``docs/connect.md``) served as the hub's ``/connect`` page, so a
musician on the play page can open it: the Markdown file stays the one source, rendered
here with raw HTML off (the page carries no markup or script the file did not ask for)."""

from __future__ import annotations

import functools
import html
import re
from importlib import resources
from pathlib import Path

from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore
from markdown_it.token import Token

GUIDE = "connect.md"
SLUG_DROP = re.compile(r"[^\w\- ]")
EXTERNAL = ("http://", "https://", "mailto:", "#")

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>midihub · {title}</title>
<link rel="icon" href="/favicon.ico" type="image/svg+xml">
<link rel="stylesheet" href="/static/style.css">
<link rel="stylesheet" href="/static/guide.css">
</head>
<body>
<header>
  <h1>midihub</h1>
  <nav>
    <a class="tab" href="/">Dashboard</a>
    <a class="tab" href="/play">Play</a>
    <a class="tab active" href="/connect">Connect</a>
  </nav>
</header>
<main class="guide">
<article class="card">
{body}</article>
</main>
</body>
</html>
"""


def guide_source() -> Path:
    """``connect.md``: inside the installed package (the wheel force-includes it as
    ``midihub/docs/``), else in a source checkout's (or editable install's) ``docs/``."""
    packaged = resources.files("midihub").joinpath("docs", GUIDE)
    if isinstance(packaged, Path) and packaged.is_file():
        return packaged
    checkout = Path(__file__).resolve().parents[3] / "docs" / GUIDE
    if checkout.is_file():
        return checkout
    raise FileNotFoundError(f"the musician's guide {GUIDE} is not installed with midihub")


def slug(text: str) -> str:
    """GitHub's heading anchor, so the guide's ``#in-a-browser`` links work here too."""
    return SLUG_DROP.sub("", text.strip().lower()).replace(" ", "-")


def _anchor_and_unlink(state: StateCore) -> None:
    """Headings get their GitHub ids; links to other docs files (not served by the hub)
    become their plain text instead of a link that would 404."""
    tokens = state.tokens
    for index, token in enumerate(tokens):
        if token.type == "heading_open" and index + 1 < len(tokens):
            token.attrSet("id", slug(tokens[index + 1].content))
        if token.type == "inline" and token.children:
            token.children = _unlink(token.children)


def _unlink(children: list[Token]) -> list[Token]:
    kept: list[Token] = []
    dropping: list[bool] = []  # per open link: is it dropped (its close goes with it)
    for child in children:
        if child.type == "link_open":
            dropping.append(not str(child.attrGet("href") or "").startswith(EXTERNAL))
            if dropping[-1]:
                continue
        elif child.type == "link_close" and dropping and dropping.pop():
            continue
        kept.append(child)
    return kept


def renderer() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    md.core.ruler.push("midihub_guide", _anchor_and_unlink)
    return md


def render(markdown: str) -> str:
    """The page around ``markdown`` rendered to HTML (no raw HTML passes through)."""
    body = renderer().render(markdown)
    first = next((line for line in markdown.splitlines() if line.startswith("# ")), "# guide")
    return PAGE.format(title=html.escape(first[2:].strip()), body=body)


@functools.cache
def guide_page() -> str:
    """The rendered guide, read once: the file ships with the hub and does not change."""
    return render(guide_source().read_text(encoding="utf-8"))
