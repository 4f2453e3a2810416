"""The results as one self-contained HTML page: which run the numbers are from, the report's and the suite's
tables and findings, every PNG embedded, no network needed to open it (the offline view of a run; `dvc plots
show` loads vega from a CDN).

The Markdown is rendered without raw HTML (markdown-it's commonmark preset passes it through): a string that
came from a data file, params or the environment shows as text, never as markup or script.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path

from markdown_it import MarkdownIt

from dtrepro.params import RUN_VALUES, EvalParams
from dtrepro.runtime.atomic import atomic_output
from dtrepro.runtime.errors import DtreproError

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; } td, th { border: 1px solid #ccc; padding: 0.2rem 0.6rem; }
th { background: #f3f3f3; } figure { display: inline-block; margin: 0.5rem; } img { max-width: 34rem; }
figcaption { font-size: 0.85rem; color: #555; } nav a { margin-right: 1rem; }
figure.wide { display: block; } figure.wide img { max-width: 100%; } figure.video img { width: 320px; }
table.run td:first-child { font-weight: 600; background: #f7f7f7; }
"""
WIDE = ("learning_curves.png",)  # plots drawn across the page's width


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
        wide = ' class="wide"' if png.name in WIDE else ""
        parts.append(f"<figure{wide}>{img}<figcaption>{caption}</figcaption></figure>")
    return "\n".join(parts)


def _git(root: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def run_facts(params: Mapping, sources: Path, root: Path = Path(".")) -> list[tuple[str, str]]:
    """What the page's header says of the run its numbers are from: the experiment (a named run's name, else the
    one DVC gives the stages of `dvc exp run`), the commit, when the page was made, each dataset by its SHA-256,
    and the params that define the run (the eval targets as the first dataset's env resolves them)."""
    named = json.loads(os.environ.get(RUN_VALUES) or "{}").get("name")
    commit = os.environ.get("DVC_EXP_BASELINE_REV") or _git(root, "rev-parse", "HEAD")
    changed = _git(root, "status", "--porcelain", "--untracked-files=no")
    study, model, train, evals = (params.get(k) or {} for k in ("study", "model", "train", "eval"))
    datasets = []
    for name in study.get("datasets", []):
        source = sources / f"{name}.json"
        sha = json.loads(source.read_text()).get("sha256", "") if source.exists() else ""
        datasets.append(f"{name} (SHA-256 {sha[:16]}…)" if sha else name)
    first = study.get("datasets", [None])[0]
    targets = EvalParams.from_params(params, first).targets if first else evals.get("targets")
    return [
        ("experiment", named or os.environ.get("DVC_EXP_NAME") or "the workspace (dvc repro)"),
        ("commit", f"{commit[:12]}{' with uncommitted changes' * bool(changed)}" if commit else "not a git checkout"),
        ("made", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("datasets", ", ".join(datasets)),
        ("model", f"embed {model.get('embed_dim')}, {model.get('layers')} layers, {model.get('heads')} heads"),
        ("training", f"{train.get('steps')} steps, batch {train.get('batch_size')}, lr {train.get('lr')}"),
        ("study", f"K {study.get('context_lens')}, seeds {study.get('seeds')}"),
        ("evaluation", f"targets {', '.join(f'{t:g}' for t in targets or [])}, {evals.get('episodes')} episodes each"),
    ]


def _videos(folder: Path | None) -> str:
    """The render stage's videos (`folder`/<dataset>/videos.json and its WebPs), embedded, side by side per
    dataset, each captioned with its episode's return and score as the evaluation recorded them."""
    parts = []
    for listing in sorted(folder.rglob("videos.json")) if folder and folder.is_dir() else []:
        found = json.loads(listing.read_text())
        figures = []
        for v in found["videos"]:
            data = base64.b64encode((listing.parent / v["file"]).read_bytes()).decode()
            caption = (
                f"target {v['target']:g}: return {v['return']:.0f}, score {v['normalized_score']:.1f}, "
                f"{v['length']} steps (reset seed {v['seed']})"
            )
            img = f'<img src="data:image/webp;base64,{data}" alt="{html.escape(caption)}">'
            figures.append(f'<figure class="video">{img}<figcaption>{html.escape(caption)}</figcaption></figure>')
        name = listing.parent.relative_to(folder).as_posix()
        parts.append(f"<h2>{html.escape(name)} ({html.escape(found['env_id'])})</h2>" + "".join(figures))
    if not parts:
        return ""
    lead = "<p>The headline model's first evaluation episode at each target (its <code>last.pt</code>).</p>"
    return '<section id="episodes"><h1>Episodes</h1>' + lead + "\n".join(parts) + "</section>"


def write_page(
    path: Path, sections: list[tuple[str, Path, Path]], facts: list[tuple[str, str]] = (), videos: Path | None = None
) -> None:
    """`sections`: (a name for the navigation, a markdown file, a folder of PNGs) each, in order, under a header
    of `facts` (`run_facts`) and the render stage's `videos`: the markdown's own first heading heads each section."""
    episodes = _videos(videos)
    nav = " ".join(f'<a href="#s{i}">{html.escape(h)}</a>' for i, (h, _, _) in enumerate(sections))
    nav += ' <a href="#episodes">Episodes</a>' if episodes else ""
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in facts)
    body = [f"<nav>{nav}</nav>"] + ([f'<table class="run">{rows}</table>'] if facts else []) + [episodes]
    for i, (_, markdown, plots) in enumerate(sections):
        body += [f'<section id="s{i}">', _markdown(markdown), _figures(plots), "</section>"]
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
