"""Text that came from data, made inert in the markdown the Prefect UI renders.

Class names are folder names, paths and reasons are whatever a data folder holds, and the UI
renders artifacts (and their descriptions) as markdown: a class folder named
`[Sign in](javascript:...)` would otherwise be a link in the evaluation page, `![x](https://...)`
an image the browser fetches as soon as the page is viewed, `<img ...>` raw HTML, and a `|` a
new table cell. Every string from data goes through `text` (or `code` for paths); only links
this pipeline made itself, to http(s) addresses, go through `link`.
"""

from __future__ import annotations

import string
from urllib.parse import quote, urlsplit

# CommonMark lets a backslash escape any ASCII punctuation character, and an escaped one is
# always literal: no link, image, emphasis, HTML, entity, table cell or GFM autolink
# (`www.`, `https://`, `a@b.c`) can form from escaped text.
PUNCTUATION = frozenset(string.punctuation)


def one_line(value: object) -> str:
    """`value` as one line: a line break in a name could start a new block (a heading, a table
    row, a fenced block) in the middle of ours."""
    return " ".join(str(value).splitlines())


def text(value: object) -> str:
    """`value` as literal text: every ASCII punctuation character backslash-escaped."""
    return "".join("\\" + c if c in PUNCTUATION else c for c in one_line(value))


def code(value: object) -> str:
    """`value` as a code span (for paths: readable, and nothing inside a code span is markdown),
    fenced with more backticks than any run of them in it."""
    line = one_line(value)
    longest = run = 0
    for c in line:
        run = run + 1 if c == "`" else 0
        longest = max(longest, run)
    fence = "`" * (longest + 1)
    return f"{fence} {line} {fence}"


def link(label: object, url: str) -> str:
    """A link this pipeline made: `label` as text, `url` only if it is http(s) (else the label
    alone), with the characters that would end a markdown link destination percent-encoded."""
    if urlsplit(url).scheme not in ("http", "https"):
        return text(label)
    return f"[{text(label)}]({quote(url, safe=':/?#[]@!$&*+,;=%-._~')})"
