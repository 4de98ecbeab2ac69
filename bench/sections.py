"""docs/performance.md is assembled from sections, each written by its own benchmark command.

A section sits between `<!-- section:NAME -->` and `<!-- /section:NAME -->`; rewriting one leaves
the others (measured by other commands, maybe on other days) as they were. Each section says the
command that produced it.
"""

from __future__ import annotations

import re
from pathlib import Path

ORDER = ("bench", "loadtest", "funasr")  # where a section goes when the page does not have it yet
_TITLE = "# Performance\n\nEach section below was measured by the command it names, in one run; rerun it to refresh.\n"


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- section:{name} -->", f"<!-- /section:{name} -->"


def write_section(path: Path | str, name: str, markdown: str) -> None:
    """Replace (or add) the section `name` of the page at `path` with `markdown`."""
    path = Path(path)
    page = path.read_text() if path.exists() else _TITLE
    begin, end = _markers(name)
    block = f"{begin}\n{markdown.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(page):
        page = pattern.sub(lambda _: block, page)
    else:
        page = _insert(page, name, block)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page.rstrip() + "\n")


def _insert(page: str, name: str, block: str) -> str:
    # before the first existing section that comes after `name` in ORDER, else at the end
    later = ORDER[ORDER.index(name) + 1 :] if name in ORDER else ()
    for other in later:
        begin, _ = _markers(other)
        at = page.find(begin)
        if at >= 0:
            return page[:at] + block + "\n\n" + page[at:]
    return page.rstrip() + "\n\n" + block + "\n"
