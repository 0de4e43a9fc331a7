"""Checks every report.html test applies: parses, links only existing files by relative path, escapes."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit


class Page(HTMLParser):
    """The parts of a page the tests look at: tags with attributes, item sections, table rows, script count."""

    def __init__(self, path: Path):
        super().__init__(convert_charrefs=True)
        self.path = Path(path)
        self.tags: list[tuple[str, dict]] = []
        self.items: list[str] = []
        self.scripts = 0
        self._table: str | None = None
        self.rows: dict[str, list[list[str]]] = {}
        self._row: list[str] | None = None
        self.feed(self.path.read_text("utf-8"))
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "script":
            self.scripts += 1
        if tag == "section" and "item" in (attrs.get("class") or "").split():
            self.items.append(attrs["id"])
        if tag == "table" and attrs.get("id"):
            self._table = attrs["id"]
            self.rows[self._table] = []
        if tag == "tr" and self._table:
            self._row = []
        if tag == "td" and self._row is not None:
            self._row.append(attrs.get("data-value", ""))

    def handle_endtag(self, tag):
        if tag == "tr" and self._row is not None:
            if self._row:  # header rows hold <th>, not <td>
                self.rows[self._table].append(self._row)
            self._row = None
        if tag == "table":
            self._table = None

    def references(self) -> list[str]:
        return [a[key] for tag, a in self.tags for key in ("src", "href") if a.get(key)]


def check_page(path: Path) -> Page:
    """Parse ``path`` and assert every src/href is relative and points at an existing file (or an anchor)."""
    page = Page(path)
    assert page.scripts == 1, "the page's own sorting script is its only script"
    for ref in page.references():
        parts = urlsplit(ref)
        if not parts.path:  # "#item-3": an anchor on the page itself
            assert parts.fragment, ref
            continue
        assert not parts.scheme and not parts.netloc and not ref.startswith("/"), f"not relative: {ref}"
        assert (path.parent / unquote(parts.path)).is_file(), f"missing: {ref}"
    return page


def images(page: Page) -> list[str]:
    return [a["src"] for tag, a in page.tags if tag == "img"]
