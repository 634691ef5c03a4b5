"""mkdocs hook: links from a page to repository files outside ``docs/``.

A page may link to a file of the repository that is not part of the site
(``[benchmarks/README.md](../benchmarks/README.md)``): the link works when
the Markdown is read in the repository, but the built site has no such
page, and ``mkdocs build --strict`` would fail. Such a link, when its target
exists, is shown as the file's path in the repository instead. Links to
files that do not exist are left alone, so mkdocs still reports them.

Loaded from mkdocs.yml (``hooks:``); not part of the package.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

_LINK = re.compile(r"(?<!!)\[([^\]\n]+)\]\(([^)\s#]+)(#[^)\s]*)?\)")


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Rewrite links that leave the docs directory into repository paths."""
    docs = Path(config["docs_dir"]).resolve()
    root = docs.parent
    here = posixpath.dirname(page.file.src_uri)

    def replace(match: re.Match[str]) -> str:
        text, target = match.group(1), match.group(2)
        if "://" in target or target.startswith(("/", "mailto:")):
            return match.group(0)
        path = (docs / here / target).resolve()
        if path.is_relative_to(docs) or not path.is_relative_to(root) or not path.exists():
            return match.group(0)
        relative = path.relative_to(root).as_posix()
        shown = text.strip("`")
        if shown == relative:
            return f"`{relative}`"
        return f"{text} (`{relative}` in the repository)"

    return _LINK.sub(replace, markdown)
