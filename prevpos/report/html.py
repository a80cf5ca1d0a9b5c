"""The HTML building blocks of a report (self-contained: images inlined as base64) and the safe writer."""

import base64
import html
from pathlib import Path

from prevpos.errors import ConfigError

MARKER = "<!-- written by prevpos report: safe to overwrite -->"

STYLE = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.9em;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.claim{display:flex;gap:1.5em;align-items:flex-start;border-top:1px solid #eee;padding:1em 0}
.claim .text{flex:0 0 34%}.claim .figs{display:flex;flex-wrap:wrap;gap:.5em}
.note{background:#fff6d6;border-left:4px solid #e0b000;padding:.4em .8em}.missing{color:#888;font-style:italic}
.holds{color:#1a7f37}.fails{color:#c0362c}figure{margin:0}figcaption{font-size:.75em;color:#555}img{max-width:100%}pre{background:#f7f7f7;padding:.8em;overflow:auto}
"""


def esc(value) -> str:
    return html.escape(str(value))


def img(png: bytes, caption: str, width: int | None = None) -> str:
    data = base64.b64encode(png).decode("ascii")
    style = f' style="width:{width}px"' if width else ""
    return (f'<figure><img alt="{esc(caption)}" src="data:image/png;base64,{data}"{style}>'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def table(header: list[str], rows: list[list], numeric_from: int = 1) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="num">{esc(c)}</td>' if i >= numeric_from else f"<td>{esc(c)}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def page(title: str, sections: list[str]) -> str:
    return (f"<!DOCTYPE html>\n{MARKER}\n<html><head><meta charset=\"utf-8\"><title>{esc(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{esc(title)}</h1>\n" + "\n".join(sections) + "\n</body></html>\n")


def written_by_report(file: Path) -> bool:
    """Is `file` a page this command wrote (it starts with MARKER)?"""
    try:
        with open(file, encoding="utf-8", errors="replace") as existing:
            return MARKER in existing.read(len(MARKER) + 64)
    except OSError:
        return False


def write_report(file: Path, text: str, other_file_hint: str = "pass --out FILE") -> None:
    """Write `file`, overwriting only a report this command wrote before."""
    if file.exists():
        if not written_by_report(file):
            raise ConfigError(f"{file} exists and was not written by `prevpos report`: move it, or {other_file_hint}")
    file.write_text(text, encoding="utf-8")
