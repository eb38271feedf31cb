"""Pull the message a person sees out of a JupyterHub error page (or JSON error)."""

from __future__ import annotations

import json
from html.parser import HTMLParser


class _ErrorPageParser(HTMLParser):
    """Collects the text of <p> (and <h1>) inside JupyterHub's <div class="error">."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._depth = 0  # div nesting inside the error div; 0 = outside
        self._in: str | None = None
        self.paragraphs: list[str] = []
        self.heading: list[str] = []
        self.title: list[str] = []
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = (dict(attrs).get("class") or "").split()
        if tag == "title":
            self._in_title = True
        if tag == "div":
            if self._depth:
                self._depth += 1
            elif "error" in classes:
                self._depth = 1
        elif self._depth and tag in ("p", "h1"):
            self._in = tag
            if tag == "p":
                self.paragraphs.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        if tag == "div" and self._depth:
            self._depth -= 1
        elif tag == self._in:
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title.append(data)
        if self._in == "p":
            self.paragraphs[-1] += data
        elif self._in == "h1":
            self.heading.append(data)


def _squash(text: str) -> str:
    return " ".join(text.split())


def error_message_from_page(body: str, content_type: str = "") -> str | None:
    """The human message of an error response, or None if there is none."""
    if "json" in content_type or body.lstrip().startswith("{"):
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if isinstance(data, dict) and data.get("message"):
            return _squash(str(data["message"]))
    parser = _ErrorPageParser()
    try:
        parser.feed(body)
        parser.close()
    except (ValueError, AssertionError):  # malformed pages just give no message
        return None
    paragraphs = [_squash(p) for p in parser.paragraphs if _squash(p)]
    if paragraphs:
        return " ".join(paragraphs)
    for chunks in (parser.heading, parser.title):
        text = _squash("".join(chunks))
        if text:
            return text
    text = _squash(body)
    return text[:300] if text else None
