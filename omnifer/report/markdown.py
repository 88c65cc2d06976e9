"""The report's short Markdown summary, for terminals: header lines and a few tables."""

from __future__ import annotations

from typing import Any


def _cell(value: Any) -> str:
    return ("" if value is None else str(value)).replace("|", "\\|").replace("\n", " ")


def markdown_table(columns: list[str], rows: list[list[Any]]) -> list[str]:
    """A GitHub-flavoured Markdown table."""
    return ["| " + " | ".join(_cell(c) for c in columns) + " |",
            "|" + "|".join("---" for _ in columns) + "|",
            *("| " + " | ".join(_cell(v) for v in row) + " |" for row in rows)]


def render_markdown(title: str, header: list[tuple[str, str]],
                    tables: list[dict[str, Any]], footer: list[str] = ()) -> str:
    """``# title``, the header as ``label: value`` lines, each table (``{"title", "columns",
    "rows", "footnotes"}``, or ``{"title", "missing"}`` for one that is not available), then
    the footer lines."""
    lines = [f"# {title}", "", *(f"- {k}: {v}" for k, v in header)]
    for t in tables:
        lines += ["", f"## {t['title']}", ""]
        if "missing" in t:
            lines.append(f"not available: {t['missing']}")
            continue
        lines += markdown_table(t["columns"], t["rows"])
        if t.get("footnotes"):
            lines += ["", *(f"- {n}" for n in t["footnotes"])]
    if footer:
        lines += ["", *footer]
    return "\n".join(lines) + "\n"
