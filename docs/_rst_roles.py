"""A griffe extension for the API pages: read the package's reST-flavoured docstrings.

The docstrings are Google style, but use a few reStructuredText habits that
Markdown would show literally:

* roles such as ``:class:`~aiodicomnet.storage.Storage``` become plain code
  (`` `Storage` ``; the last dotted component when the target starts with ``~``
  or ``.``);
* a paragraph ending in ``::`` before an indented literal block ends in ``:``
  (the indented block is already a code block in Markdown);
* an ``Args:`` or ``Attributes:`` entry naming several at once
  (``host, port: ...``) becomes one entry per name, as the Google style
  parser expects.

Loaded from mkdocs.yml (``extensions:`` of the Python handler); not part of
the package.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|meth|func|attr|mod|data|exc|obj|const):`([^`]+)`")
_LITERAL = re.compile(r"::[ \t]*$", re.MULTILINE)
_SECTIONS = re.compile(
    r"( *)(?:Args|Arguments|Parameters|Keyword Args|Keyword Arguments|Attributes):[ \t]*"
)
_GROUPED = re.compile(r"( +)(\*{0,2}\w+(?:, *\*{0,2}\w+)+)(:.*)$")


def _role(match: re.Match[str]) -> str:
    target = match.group(1)
    if target.startswith(("~", ".")):
        target = target.lstrip("~.").rsplit(".", 1)[-1]
    return f"`{target}`"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _split_grouped(text: str) -> str:
    """``a, b: text`` in an Args or Attributes section -> ``a: text`` and ``b: text``."""
    lines = text.splitlines()
    out: list[str] = []
    section: int | None = None  # indentation of the current section header
    i = 0
    while i < len(lines):
        line = lines[i]
        header = _SECTIONS.fullmatch(line)
        if header:
            section = len(header.group(1))
            out.append(line)
            i += 1
            continue
        if section is not None and line.strip() and _indent(line) <= section:
            section = None
        grouped = _GROUPED.fullmatch(line) if section is not None else None
        if grouped is None:
            out.append(line)
            i += 1
            continue
        indent, names, rest = grouped.groups()
        block = [rest]
        i += 1
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > len(indent)):
            block.append(lines[i])
            i += 1
        for name in (n.strip() for n in names.split(",")):
            out.append(f"{indent}{name}{block[0]}")
            out.extend(block[1:])
    return "\n".join(out)


def convert(text: str) -> str:
    """The docstring with reST habits made Markdown- and Google-style-friendly."""
    text = _ROLE.sub(_role, text)
    text = _LITERAL.sub(":", text)
    return _split_grouped(text)


class RstRoles(griffe.Extension):
    """Rewrite each docstring once, when griffe loads the object."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = convert(obj.docstring.value)
