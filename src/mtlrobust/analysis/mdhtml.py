"""The Markdown the tables write (``NAME.md``), as a standalone HTML page for ``snakemake --report``.

The report shows HTML inline but offers CSV and Markdown files only as downloads, so the table and claims
rules also write ``NAME.html``: the same text, with the marks (↓st, ↑pgd, ...) and the italic diagonal
visible. Only the Markdown these modules write is supported: ``#`` headings, paragraphs, ``- `` lists, pipe
tables (``\\|`` inside a cell), ``**bold**``, ``*italic*`` and ```code```; no third-party renderer needed.
"""

from __future__ import annotations

import html
import re

STYLE = (
    "body{font-family:sans-serif;font-size:14px;max-width:none;margin:1em}"
    "table{border-collapse:collapse;margin:0.5em 0}th,td{border:1px solid #bbb;padding:2px 6px;"
    "text-align:left;vertical-align:top}th{background:#eee}code{background:#f4f4f4}"
)


def inline(text: str) -> str:
    """Escape, then render code, bold and italic spans."""
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*(?=\S)(.+?)(?<=\S)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"(?<![\w*])\*(?=\S)([^*]+?)(?<=\S)\*(?![\w*])", r"<em>\1</em>", out)


def _cells(line: str) -> list[str]:
    """The cells of a table row: split at the pipes that are not escaped, outer pipes dropped."""
    s = line.strip()
    s = s[1:] if s.startswith("|") else s
    s = s[:-1] if s.endswith("|") and not s.endswith("\\|") else s
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", s)]


def _is_rule(line: str) -> bool:
    return bool(re.fullmatch(r"\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?", line.strip()))


def to_html(md: str, title: str = "") -> str:
    """A whole HTML page of the Markdown text ``md``."""
    lines = md.splitlines()
    body, para, i = [], [], 0

    def flush():
        if para:
            body.append(f"<p>{inline(' '.join(para))}</p>")
            para.clear()

    while i < len(lines):
        line = lines[i]
        s = line.strip()
        if not s:
            flush()
            i += 1
        elif m := re.match(r"(#{1,6})\s+(.*)", s):
            flush()
            n = len(m.group(1))
            body.append(f"<h{n}>{inline(m.group(2))}</h{n}>")
            i += 1
        elif s.startswith("|") and i + 1 < len(lines) and _is_rule(lines[i + 1]):
            flush()
            head = "".join(f"<th>{inline(c)}</th>" for c in _cells(s))
            rows, i = [], i + 2
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in _cells(lines[i])) + "</tr>")
                i += 1
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")
        elif s.startswith("- "):
            flush()
            items = []
            while i < len(lines) and lines[i].strip().startswith("- "):
                item = [lines[i].strip()[2:]]
                i += 1
                while i < len(lines) and lines[i].startswith("  ") and lines[i].strip():  # continuation
                    item.append(lines[i].strip())
                    i += 1
                items.append(f"<li>{inline(' '.join(item))}</li>")
            body.append(f"<ul>{''.join(items)}</ul>")
        else:
            para.append(s)
            i += 1
    flush()
    head = f"<title>{html.escape(title)}</title>" if title else ""
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8">{head}<style>{STYLE}</style></head>\n'
        "<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
