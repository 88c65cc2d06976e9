"""The report as one self-contained HTML page: inline CSS, PNGs embedded as data URIs, every
text escaped; no script, no external resource.

A page is a title, header rows ``(label, value)`` and sections ``{"title": str, "blocks":
[...]}``, where a block is one of ``{"note": text}``, ``{"missing": why}`` (shown as "not
available: why"), ``{"table": {"columns": [...], "rows": [[...]]}, "caption": text,
"footnotes": [...]}`` or ``{"image": path, "caption": text}``; ``{"images": [image blocks]}``
puts several pictures side by side.
"""

from __future__ import annotations

import base64
import io
import os
from html import escape
from typing import Any

#: the longest side of an embedded picture, in pixels (larger ones are scaled down)
MAX_SIDE = 1600
#: an embedded picture larger than this many bytes is scaled down until it is not
MAX_BYTES = 1_500_000
#: pictures narrower than this many pixels are shown at twice their size
SMALL = 400

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
  margin: 0 auto; max-width: 1200px; padding: 1.5em 2em 4em; color: #1d232a;
  background: #fff; line-height: 1.45; }
h1 { font-size: 1.7em; margin-bottom: .3em; }
h2 { font-size: 1.3em; margin-top: 2em; border-bottom: 2px solid #d8dee4;
  padding-bottom: .2em; }
dl.header { display: grid; grid-template-columns: max-content auto; gap: .2em 1.2em;
  margin: 0 0 1em; }
dl.header dt { font-weight: 600; color: #57606a; }
dl.header dd { margin: 0; font-family: ui-monospace, "DejaVu Sans Mono", monospace;
  font-size: .9em; overflow-wrap: anywhere; }
.scroll { overflow-x: auto; margin: .6em 0; }
table { border-collapse: collapse; font-size: .9em; }
th, td { padding: .35em .8em; border-bottom: 1px solid #e5e8eb; text-align: left;
  vertical-align: top; }
th { background: #f3f5f7; font-weight: 600; }
tbody tr:nth-child(even) td { background: #fafbfc; }
td:first-child { white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.ref { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: .9em;
  white-space: nowrap; }
caption { caption-side: top; text-align: left; font-weight: 600; padding: .3em 0; }
p.foot { font-size: .85em; color: #57606a; margin: .2em 0; }
p.missing { color: #8a6d00; background: #fff8e1; border-left: 4px solid #e0b000;
  padding: .4em .8em; }
p.note { color: #57606a; }
.row { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
figure { margin: 1em 0; }
.row figure { flex: 1 1 360px; max-width: 560px; }
figure img { max-width: 100%; height: auto; border: 1px solid #e5e8eb; }
figcaption { font-size: .9em; color: #3d444d; margin-top: .3em; }
"""


def data_uri(path: str | os.PathLike, max_side: int = MAX_SIDE,
             max_bytes: int = MAX_BYTES) -> str:
    """A picture file as ``data:image/png;base64,...``: scaled down to ``max_side`` pixels on
    its longest side, and further while its PNG is over ``max_bytes`` (any image PIL reads is
    re-encoded as PNG; a small PNG is embedded as it is)."""
    from PIL import Image

    with open(path, "rb") as fh:
        data = fh.read()
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        side = max(im.size)
        if im.format != "PNG" or side > max_side or len(data) > max_bytes:
            im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
            side = min(side, max_side)
            while True:
                small = im.copy()
                small.thumbnail((side, side), Image.LANCZOS)
                buf = io.BytesIO()
                small.save(buf, format="PNG", optimize=True)
                data = buf.getvalue()
                if len(data) <= max_bytes or side <= 200:
                    break
                side = int(side / 1.5)
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    kind = "num" if _is_number(text) else "ref" if "/" in text and " " not in text else ""
    return f'<td class="{kind}">{escape(text)}</td>' if kind else f"<td>{escape(text)}</td>"


def _table(block: dict[str, Any]) -> str:
    table = block["table"]
    head = "".join(f"<th>{escape(str(c))}</th>" for c in table["columns"])
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in table["rows"])
    caption = f"<caption>{escape(block['caption'])}</caption>" if block.get("caption") else ""
    foot = "".join(f'<p class="foot">{escape(n)}</p>' for n in block.get("footnotes", ()))
    return (f'<div class="scroll"><table>{caption}<thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>{foot}")


def _image(block: dict[str, Any]) -> str:
    from PIL import Image

    caption = escape(block.get("caption", ""))
    try:
        src = data_uri(block["image"])
        with Image.open(block["image"]) as im:
            width = im.size[0]
    except Exception as exc:  # noqa: BLE001 - an unreadable picture is a note, not a crash
        why = " ".join(str(exc).split()) or type(exc).__name__
        return f'<p class="missing">not available: {caption or "picture"} ({escape(why)})</p>'
    # a small picture (a contact sheet of tiny faces) is shown twice as large
    size = f' style="width: {2 * width}px"' if width < SMALL else ""
    return (f'<figure><img src="{src}" alt="{caption}"{size}>'
            f"<figcaption>{caption}</figcaption></figure>")


def _block(block: dict[str, Any]) -> str:
    if "table" in block:
        return _table(block)
    if "image" in block:
        return _image(block)
    if "images" in block:
        return '<div class="row">' + "".join(_block(b) for b in block["images"]) + "</div>"
    if "missing" in block:
        return f'<p class="missing">not available: {escape(block["missing"])}</p>'
    return f'<p class="note">{escape(block.get("note", ""))}</p>'


def render_html(title: str, header: list[tuple[str, str]],
                sections: list[dict[str, Any]]) -> str:
    """The whole page (see the module doc for the shape of ``sections``)."""
    rows = "".join(f"<dt>{escape(k)}</dt><dd>{escape(str(v))}</dd>" for k, v in header)
    parts = [f'<section><h2>{escape(s["title"])}</h2>'
             + "".join(_block(b) for b in s.get("blocks", ())) + "</section>"
             for s in sections]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{escape(title)}</h1><dl class=\"header\">{rows}</dl>"
            + "".join(parts) + "</body></html>\n")
