"""reStructuredText (as the Python docs write it) → readable text with fenced code.

Not a full RST parser: it covers what the Python FAQ uses (sections, paragraphs, lists, `::` literal
blocks, directives, comments and targets, inline roles and links) so that an answer reads like a
markdown-ish assistant reply. Rendering follows Sphinx where it matters to a reader, e.g. :func:`f`
shows as `f()` and :func:`~os.path.join` as `join()`.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass

# A section adornment: one punctuation character repeated (RST allows any of these).
_ADORNMENT = re.compile(r"""^([!-/:-@\[-`{-~])\1{2,}\s*$""")
_DIRECTIVE = re.compile(r"^\s*\.\.\s+([\w:.-]+)::(.*)$")
_EXPLICIT = re.compile(r"^\s*\.\.(\s|$)")  # comments, `.. _label:` targets, substitution definitions
_OPTION = re.compile(r"^:[\w-]+:")
_LIST_ITEM = re.compile(r"^([*+-]|#\.|\d+[.)]|\(\d+\)|[a-zA-Z][.)])\s+")

# fmt: off
_CODE_DIRECTIVES = {"code-block", "code", "sourcecode", "doctest", "testcode", "testoutput"}
# Hidden in the rendered page (test scaffolding) or navigation only.
_DROP_DIRECTIVES = {
    "index", "contents", "toctree", "highlight", "testsetup", "testcleanup", "raw", "image", "figure",
    "tabularcolumns", "sectionauthor", "moduleauthor", "include", "literalinclude", "rubric",
}
_ADMONITIONS = {
    "note": "Note", "warning": "Warning", "seealso": "See also", "tip": "Tip", "hint": "Hint",
    "important": "Important", "caution": "Caution", "attention": "Attention", "danger": "Danger",
    "error": "Error", "impl-detail": "CPython implementation detail",
}
_VERSIONED = {
    "versionadded": "New in version {}", "versionchanged": "Changed in version {}",
    "deprecated": "Deprecated since version {}",
}
# Roles whose text is prose in the rendered page (everything else renders as code).
_TEXT_ROLES = {
    "ref", "doc", "term", "dfn", "abbr", "newsgroup", "menuselection", "guilabel", "emphasis", "strong",
    "title-reference", "numref",
}
# fmt: on

_INLINE = re.compile(
    r"``(?P<literal>.+?)``"
    r"|:(?P<role>[A-Za-z][\w:+.-]*):`(?P<rbody>[^`]+)`"
    r"|`(?P<link>[^`]+)`__?(?![\w])"
    r"|`(?P<default>[^`]+)`"
    r"|\s?\[(?:#\w*|\d+|\*)\]_"  # footnote references: the footnote itself is not kept
    r"|\\(?P<escape>.)",
    re.DOTALL,
)


@dataclass(frozen=True)
class Section:
    title: str  # raw RST title (inline markup not yet converted)
    level: int  # 0 = the first adornment style in the file (the document title)
    body: list[str]  # lines up to the next heading of any level
    has_children: bool


def split_sections(text: str) -> list[Section]:
    """Cut a document at its headings. Levels follow the order in which adornment styles first appear."""
    lines = text.splitlines()
    heads: list[tuple[int, int, str, int]] = []  # (start line, body start, title, level)
    styles: list[tuple[str, bool]] = []
    i = 0
    while i < len(lines) - 1:
        over = i > 0 and _ADORNMENT.match(lines[i - 1]) is not None
        if _is_title(lines, i, over):
            style = (lines[i + 1].strip()[0], over)
            if style not in styles:
                styles.append(style)
            heads.append((i - 1 if over else i, i + 2, lines[i].strip(), styles.index(style)))
            i += 2
            continue
        i += 1
    sections = []
    for k, (_, body_start, title, level) in enumerate(heads):
        end = heads[k + 1][0] if k + 1 < len(heads) else len(lines)
        children = k + 1 < len(heads) and heads[k + 1][3] > level
        sections.append(Section(title, level, lines[body_start:end], children))
    return sections


def _is_title(lines: list[str], i: int, over: bool) -> bool:
    title, under = lines[i], lines[i + 1]
    if not title.strip() or _ADORNMENT.match(title) or not _ADORNMENT.match(under):
        return False
    if over:  # an overlined title may be indented; its overline and underline use the same character
        return lines[i - 1].strip()[0] == under.strip()[0]
    # An underlined title starts at the margin after a blank line, with an underline about as long.
    blank_before = i == 0 or not lines[i - 1].strip()
    return blank_before and not title[0].isspace() and len(under.rstrip()) >= min(len(title.rstrip()), 4)


def rst_to_text(lines: list[str]) -> str:
    """Convert body lines to text: paragraphs unwrapped, lists kept, code as ``` fences."""
    return "\n\n".join(_blocks(lines)).strip()


def inline_to_text(text: str) -> str:
    """Convert inline markup (roles, ``literals``, `links <url>`_, escapes) in one paragraph."""
    return _INLINE.sub(_inline, text)


# --------------------------------------------------------------------------------------------- blocks


def _blocks(lines: list[str]) -> list[str]:
    out: list[str] = []
    i, n = 0, len(lines)
    while i < n:
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        indent = _indent(line)
        directive = _DIRECTIVE.match(line)
        if directive or _EXPLICIT.match(line):
            end, content = _indented_block(lines, i + 1, indent)
            if directive:
                out.extend(_directive(directive.group(1), directive.group(2).strip(), content))
            i = end  # comments and targets vanish with their indented continuation
            continue
        end = i
        while end < n and lines[end].strip() and (end == i or not _EXPLICIT.match(lines[end])):
            end += 1
        para = lines[i:end]
        if para[0].lstrip().startswith(">>>"):  # an RST doctest block
            out.append(_fence(para))
            i = end
            continue
        literal_follows = para[-1].rstrip().endswith("::")
        text = _paragraph(para)
        if text:
            out.append(text)
        i = end
        if literal_follows:  # the block is indented relative to the text of the line holding "::"
            i, content = _indented_block(lines, i, _text_indent(para[-1]))
            if content:
                out.append(_fence(content))
    return out


def _indented_block(lines: list[str], start: int, indent: int) -> tuple[int, list[str]]:
    """Lines from `start` that are blank or indented deeper than `indent`; trailing blanks excluded."""
    end = last = start
    while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > indent):
        end += 1
        if lines[end - 1].strip():
            last = end
    return last, lines[start:last]


def _directive(name: str, arg: str, content: list[str]) -> list[str]:
    name = name.split(":")[-1]  # py:function → function
    body = _strip_options(content)
    if name in _CODE_DIRECTIVES:
        return [_fence(body, arg if name != "doctest" else "")] if any(s.strip() for s in body) else []
    if name in _DROP_DIRECTIVES or (name == "only" and arg != "html"):
        return []
    if name in _ADMONITIONS:
        return _labelled(_ADMONITIONS[name], ([arg] if arg else []) + _dedent(body))
    if name in _VERSIONED:
        version, _, rest = arg.partition(" ")
        return _labelled(_VERSIONED[name].format(version), ([rest] if rest else []) + _dedent(body))
    return _blocks(_dedent(body))  # `only:: html` and unknown containers: keep what they contain


def _labelled(label: str, lines: list[str]) -> list[str]:
    blocks = _blocks(lines)
    if not blocks or blocks[0].startswith("```"):
        return [f"{label}:"] + blocks
    return [f"{label}: {blocks[0]}"] + blocks[1:]


def _strip_options(content: list[str]) -> list[str]:
    body = _dedent(content)
    k = 0
    while k < len(body) and _OPTION.match(body[k].strip()):
        k += 1
    return body[k:]


def _paragraph(lines: list[str]) -> str:
    """Unwrap a paragraph (lines joined by spaces) but keep each list item on its own line."""
    lines = _dedent(lines)
    out: list[str] = []
    for line in lines:
        stripped = line.strip()
        if not out or _LIST_ITEM.match(stripped):
            out.append(" " * _indent(line) + stripped)
        else:
            out[-1] += " " + stripped
    last = out[-1]
    if last.strip() == "::" or last.endswith(" ::"):
        out[-1] = last[:-2].rstrip()  # "text ::" and a bare "::" only announce the code block
    elif last.endswith("::"):
        out[-1] = last[:-1]  # "like this::" renders as "like this:"
    # Sentence spacing ("end.  Next") is a source-file habit, not meaning: one space reads better.
    out = [re.sub(r"(?<=\S) {2,}", " ", inline_to_text(line)) for line in out]
    return "\n".join(line for line in out if line.strip()).strip()


def _fence(lines: list[str], lang: str = "") -> str:
    code = "\n".join(line.rstrip() for line in _dedent(lines)).strip("\n")
    return f"```{lang}\n{code}\n```"


def _dedent(lines: list[str]) -> list[str]:
    return textwrap.dedent("\n".join(lines)).split("\n") if lines else []


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _text_indent(line: str) -> int:
    """Where the text starts: after the marker for a list item ("- foo::" → 2)."""
    item = _LIST_ITEM.match(line.lstrip())
    return _indent(line) + (item.end() if item else 0)


# --------------------------------------------------------------------------------------------- inline


def _inline(m: re.Match) -> str:
    if m.group("literal") is not None:
        return f"`{m.group('literal')}`"
    if m.group("role") is not None:
        return _role(m.group("role"), " ".join(m.group("rbody").split()))
    if m.group("link") is not None:
        title, target = _split_title(" ".join(m.group("link").split()))
        return title or target
    if m.group("default") is not None:
        return f"`{m.group('default')}`"
    if m.group("escape") is not None:
        return "" if m.group("escape").isspace() else m.group("escape")
    return ""  # footnote reference


def _split_title(body: str) -> tuple[str | None, str]:
    """`text <target>` → ("text", "target"); `target` → (None, "target")."""
    m = re.fullmatch(r"(.*?)\s*<([^<>]+)>", body, re.DOTALL)
    if m:
        return (m.group(1) or None), m.group(2)
    return None, body


def _role(role: str, body: str) -> str:
    role = role.split(":")[-1]  # c:func, py:meth → func, meth
    title, target = _split_title(body)
    target = target.lstrip("!")
    if role == "pep":
        return title or f"PEP {target}"
    if role == "rfc":
        return title or f"RFC {target}"
    if role in _TEXT_ROLES:
        text = title or target.lstrip("~")
        if role in ("ref", "doc") and not title:
            text = text.rsplit("/", 1)[-1].replace("-", " ").replace("_", " ")  # a bare label
        return text.replace("-->", "→")
    if title:
        return title if " " in title else f"`{title}`"
    if target.startswith("~"):
        target = target[1:].rsplit(".", 1)[-1]
    target = target.lstrip(".")  # `.Session`: "look in the current module first", shown without the dot
    if role in ("func", "meth") and not target.endswith(")"):
        target += "()"  # Sphinx's add_function_parentheses
    return f"`{target}`"
