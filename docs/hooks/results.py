"""mkdocs hook: the Results page shows this checkout's run, taken from the page stage's output (results/index.html),
so that no number on it is typed by hand."""

from __future__ import annotations

from pathlib import Path

import yaml

from dtrepro.reporting.page import run_sections

MARKER = "<!-- this checkout's run -->"


def on_page_markdown(markdown, page, config, files, **kwargs):
    if MARKER not in markdown:
        return markdown
    root = Path(config.config_file_path).parent
    (out,) = (next(iter(o)) for o in yaml.safe_load((root / "dvc.yaml").read_text())["stages"]["page"]["outs"])
    return markdown.replace(MARKER, run_sections(root / out))
