"""The results as one self-contained HTML page: the report's and the suite's tables and findings, every PNG
embedded, no network needed to open it (the offline view of a run; `dvc plots show` loads vega from a CDN).

The Markdown is rendered without raw HTML (markdown-it's commonmark preset passes it through): a string that
came from a data file, params or the environment shows as text, never as markup or script.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from markdown_it import MarkdownIt

from dtrepro.runtime.atomic import atomic_output
from dtrepro.runtime.errors import DtreproError

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; } td, th { border: 1px solid #ccc; padding: 0.2rem 0.6rem; }
th { background: #f3f3f3; } figure { display: inline-block; margin: 0.5rem; } img { max-width: 34rem; }
figcaption { font-size: 0.85rem; color: #555; } nav a { margin-right: 1rem; }
"""


def _markdown(path: Path) -> str:
    try:
        text = path.read_text()
    except OSError as err:
        raise DtreproError(f"The results page reads {path}, which cannot be read ({err.strerror}).") from None
    return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)


def _figures(folder: Path) -> str:
    """Every PNG under `folder`, embedded as a data URI, captioned with its path."""
    parts = []
    for png in sorted(folder.rglob("*.png")):
        data = base64.b64encode(png.read_bytes()).decode()
        caption = html.escape(png.relative_to(folder.parent).as_posix())
        img = f'<img src="data:image/png;base64,{data}" alt="{caption}">'
        parts.append(f"<figure>{img}<figcaption>{caption}</figcaption></figure>")
    return "\n".join(parts)


def write_page(path: Path, sections: list[tuple[str, Path, Path]]) -> None:
    """`sections`: (heading, a markdown file, a folder of PNGs) each, in order."""
    nav = " ".join(f'<a href="#s{i}">{html.escape(h)}</a>' for i, (h, _, _) in enumerate(sections))
    body = [f"<nav>{nav}</nav>"]
    for i, (heading, markdown, plots) in enumerate(sections):
        body += [
            f'<section id="s{i}"><h1>{html.escape(heading)}</h1>',
            _markdown(markdown),
            _figures(plots),
            "</section>",
        ]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>dtrepro results</title>'
        f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
    with atomic_output(path) as tmp:
        tmp.write_text(page)


NO_RUN = (
    "This checkout has no run's results yet: `make demo` (or any `dvc exp run`) writes {page}, and `make docs`"
    " then shows them here."
)


def run_sections(page: Path) -> str:
    """The sections of a page `write_page` wrote (its tables, findings and embedded plots) as an HTML block for
    another page, the docs site's Results: one paragraph saying there is no run when `page` does not exist."""
    if not page.exists():
        return NO_RUN.format(page=page.name)
    body = re.search(r"<body>(.*)</body>", page.read_text(), re.S)
    if body is None:
        raise DtreproError(f"{page} is not a results page written by the page stage; run `dvc repro page` again.")
    sections = re.sub(r"<nav>.*?</nav>", "", body.group(1), count=1, flags=re.S).strip()
    return f'<div class="dtrepro-run">\n{sections}\n</div>'
