"""The musician's guide served by the hub at /connect: docs/connect.md, rendered with
raw HTML off, anchors that work, no links into docs the hub does not serve."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import aiohttp

from midihub.web.guard import SECURITY_HEADERS
from midihub.web.guide import guide_source, render, slug
from tests.support import free_ports, serving

ROOT = Path(__file__).resolve().parent.parent
CONNECT = ROOT / "docs" / "connect.md"


def markdown_headings(text: str) -> list[tuple[int, str]]:
    """(level, text) of the Markdown file's ATX headings, outside fenced code."""
    headings: list[tuple[int, str]] = []
    fenced = False
    for line in text.splitlines():
        if line.startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced and (found := re.fullmatch(r"(#{1,6}) +(.+?) *#* *", line)):
            headings.append((len(found[1]), found[2]))
    return headings


class Page(HTMLParser):
    """What a rendered guide holds: its headings (level, id, text) inside the article,
    the hrefs of its links, every element's tag and attribute names."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.headings: list[tuple[int, str | None, str]] = []
        self.hrefs: list[str] = []
        self.tags: set[str] = set()
        self.attributes: set[str] = set()
        self._article = False
        self._heading: tuple[int, str | None] | None = None
        self._text = ""
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attributes.update(name for name, _ in attrs)
        found = dict(attrs)
        if tag == "article":
            self._article = True
        if self._article and tag == "a" and found.get("href"):
            self.hrefs.append(str(found["href"]))
        if self._article and re.fullmatch(r"h[1-6]", tag):
            self._heading, self._text = (int(tag[1]), found.get("id")), ""

    def handle_endtag(self, tag: str) -> None:
        if self._heading is not None and tag == f"h{self._heading[0]}":
            self.headings.append((*self._heading, self._text))
            self._heading = None

    def handle_data(self, data: str) -> None:
        self._text += data


def test_a_source_checkout_reads_the_guide_from_docs() -> None:
    assert guide_source() == CONNECT


async def test_the_hub_serves_the_guide_with_its_headings_to_anyone() -> None:
    (port,) = free_ports(1)
    # public = false: read-only pages need the token, but a musician has none.
    async with (
        serving(f"[rooms]\nJam = {port}\n", public=False) as (_, url),
        aiohttp.ClientSession() as client,
    ):
        async with client.get(url + "/connect") as response:
            assert response.status == 200
            assert response.content_type == "text/html"
            for name, value in SECURITY_HEADERS.items():
                assert response.headers[name] == value, name
            body = await response.text()
        async with client.get(url + "/static/guide.css") as response:
            assert response.status == 200
    page = Page(body)
    expected = markdown_headings(CONNECT.read_text(encoding="utf-8"))
    assert len(expected) >= 8  # the guide's title and its sections
    assert [(level, text) for level, _, text in page.headings] == expected
    assert [anchor for _, anchor, _ in page.headings] == [slug(t) for _, t in expected]
    # The guide's own table of contents lands on its headings.
    anchors = {anchor for _, anchor, _ in page.headings}
    local = [href[1:] for href in page.hrefs if href.startswith("#")]
    assert "in-a-browser" in local and "behind-a-home-router" in local
    assert set(local) <= anchors
    # Other docs files are not served: no link into them (their names stay as text).
    assert not [href for href in page.hrefs if href.endswith(".md") or ".md#" in href]
    assert "interop.md" in body
    assert "script" not in page.tags
    assert 'href="/play"' in body and 'href="/connect"' in body  # the pages' navigation


def test_raw_html_in_the_source_never_passes_through() -> None:
    hostile = (
        "# Title <img src=x onerror=alert(1)>\n\n"
        "<script>alert(1)</script>\n\n"
        '<div onclick="alert(2)">block</div>\n\n'
        'inline <a href="https://evil.example">a</a> <iframe src="https://evil.example">\n\n'
        "[click](javascript:alert(3)) [data](data:text/html,<script>alert(4)</script>)\n"
    )
    html = render(hostile)
    page = Page(html)
    assert page.tags.isdisjoint({"script", "img", "div", "iframe"})
    assert page.attributes.isdisjoint({"onerror", "onclick", "src"})
    assert not [h for h in page.hrefs if h.startswith(("javascript:", "data:", "https://evil"))]
    assert "&lt;script&gt;" in html  # shown as text, not run
    assert page.headings[0][2] == "Title <img src=x onerror=alert(1)>"


def test_links_to_other_docs_become_their_text_and_the_rest_stay_links() -> None:
    page = Page(
        render(
            "See [interop.md](interop.md), [the bench](benchmarks.md#results), "
            "[**vps**](../docs/vps.md), [rtpMIDI](https://www.tobias-erichsen.de/), "
            "[mail](mailto:a@example.org) and [below](#below).\n\n## Below\n"
        )
    )
    assert page.hrefs == ["https://www.tobias-erichsen.de/", "mailto:a@example.org", "#below"]
    assert page.headings[-1] == (2, "below", "Below")
