"""results/index.html opens offline in a real headless Chromium, every image loaded, the findings there."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from dtrepro.reporting.page import run_facts, write_page  # noqa: E402
from dtrepro.reporting.report import literal, provenance_line  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FINDING = "Achieved return rises with the requested return: yes"


def _plot(path, values):
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot(values)
    fig.savefig(path)
    plt.close(fig)


def open_offline(page_file, scripts: list | None = None):
    """(the page's text, [(src prefix, naturalWidth)] of its images, URLs it asked the network for); `scripts`, if
    given, gets every dialog the page opened and whether any script of it set `window.pwned`."""
    if CHROMIUM is None:
        if os.environ.get("DTREPRO_REQUIRE_BROWSER"):
            pytest.fail("DTREPRO_REQUIRE_BROWSER is set but Debian's chromium is not installed")
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    asked = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(offline=True)
        context.route("http*://**", lambda route: (asked.append(route.request.url), route.abort()))
        page = context.new_page()
        if scripts is not None:
            page.on("dialog", lambda dialog: (scripts.append(dialog.message), dialog.dismiss()))
        page.goto(page_file.resolve().as_uri(), wait_until="load")
        page.wait_for_timeout(200)  # an image's onerror fires after load
        if scripts is not None and page.evaluate("window.pwned !== undefined"):
            scripts.append("window.pwned")
        images = page.eval_on_selector_all("img", "els => els.map(e => [e.src.slice(0, 21), e.naturalWidth])")
        text = page.inner_text("body")
        browser.close()
    return text, images, asked


def write_results(folder, page, facts=()):
    """A report and a suite with their plots (three PNGs) under `folder`, and the page made of them."""
    report, suite = folder / "ablations.md", folder / "suite.md"
    report.write_text(f"# Ablations\n\n- {FINDING} (targets 400 / 3600)\n\n| K | score |\n|---|---|\n| 20 | 102.0 |\n")
    suite.write_text("# Suite\n\n| dataset | ours |\n|---|---|\n| hopper-medium-v2 | 67.1 |\n")
    for name in ("d/return_conditioning.png", "d/context_length.png"):
        _plot(folder / "plots" / name, [1, 3, 2])
    _plot(folder / "suite-plots" / "scores.png", [2, 1])
    write_page(page, [("Ablations", report, folder / "plots"), ("Suite", suite, folder / "suite-plots")], facts)


def test_the_results_page_opens_offline_with_every_image_and_the_findings(tmp_path):
    write_results(tmp_path, tmp_path / "index.html")
    text, images, asked = open_offline(tmp_path / "index.html")
    assert FINDING in text and "hopper-medium-v2" in text and "102.0" in text
    assert len(images) == 3 and all(src == "data:image/png;base64" and width > 0 for src, width in images)
    assert asked == []


HOSTILE = (
    '<img src=x onerror="window.pwned=1;alert(1)">',
    "<script>window.pwned=1;alert('xss')</script>",
    "`<b>`](javascript:window.pwned=1) [x](javascript:window.pwned=1)",
)


def test_strings_from_data_params_and_the_environment_show_as_text_and_run_nothing(tmp_path):
    """Every field the tables take from a source's report (where the data came from, the machine it was collected
    on, the libraries), a plot folder named like markup and raw HTML in the Markdown itself: the page shows them
    as text, opens no dialog and runs no script."""
    fields = ("sha256", "cpu", "numpy_simd", "blas_core", "version/mujoco", "version/gymnasium", "workers", "url")
    lines = []
    for bad in HOSTILE:
        source = dict.fromkeys(fields, bad)
        lines += [provenance_line({**source, "source": "collect"}), provenance_line(source)]
        lines.append(provenance_line({"sha256": bad, "source": bad}))
        lines.append(f"{bad} and {literal(bad)}")
    report = tmp_path / "ablations.md"
    report.write_text("# Ablations\n\n" + "\n\n".join(lines) + "\n")
    _plot(tmp_path / "plots" / HOSTILE[0] / "scores.png", [1, 2])
    write_page(tmp_path / "index.html", [(HOSTILE[1], report, tmp_path / "plots")])
    scripts = []
    text, images, asked = open_offline(tmp_path / "index.html", scripts)
    assert scripts == [] and asked == []
    assert all(bad in text for bad in HOSTILE[:2]) and "javascript:window.pwned=1" in text
    assert len(images) == 1 and images[0][1] > 0


def test_the_hostile_page_check_sees_a_script_that_runs(tmp_path):
    """The check above can fail: the same strings in a page that does not escape them are caught."""
    (tmp_path / "index.html").write_text(f"<html><body>{HOSTILE[0]}{HOSTILE[1]}</body></html>")
    scripts = []
    open_offline(tmp_path / "index.html", scripts)
    assert "1" in scripts and "xss" in scripts and "window.pwned" in scripts


def test_the_header_names_the_run_the_numbers_are_from(tmp_path, monkeypatch):
    """The experiment, the commit, the date, each dataset by its SHA-256 and the params that define the run head the
    page, each shown as text (an experiment named like markup runs nothing); each section has one heading."""
    import json

    import yaml

    from dtrepro.params import RUN_VALUES

    monkeypatch.setenv("DVC_EXP_NAME", "smoke-pending")  # DVC's name until the named run succeeds
    monkeypatch.setenv(RUN_VALUES, json.dumps({"name": HOSTILE[0], "values": {}}))  # the named run's own
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "0123456789abcdef0123")
    (tmp_path / "sources").mkdir()
    (tmp_path / "sources" / "hopper-medium-v2.json").write_text('{"sha256": "5bdf1bc4aaaabbbbccccdddd"}')
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    facts = dict(run_facts(params, tmp_path / "sources", tmp_path))
    assert facts["experiment"] == HOSTILE[0] and facts["commit"].startswith("0123456789ab")
    assert facts["datasets"] == "hopper-medium-v2 (SHA-256 5bdf1bc4aaaabbbb…)"
    assert facts["model"] == "embed 512, 4 layers, 8 heads" and facts["training"].startswith("2500 steps, batch 4096")
    assert facts["evaluation"] == "targets 3600, 1800, 400, 20 episodes each"  # null: the env's, resolved
    write_results(tmp_path, tmp_path / "index.html", list(facts.items()))
    scripts = []
    text, _, asked = open_offline(tmp_path / "index.html", scripts)
    assert scripts == [] and asked == [] and HOSTILE[0] in text and "5bdf1bc4aaaabbbb" in text
    assert text.count("Ablations") == 2  # the navigation's link and the report's own heading, no second heading


def build_docs(root):
    """mkdocs build --strict of this repository's site with `root` as the checkout; its Results page's path."""
    for name in ("mkdocs.yml", "dvc.yaml", "README.md", "CHANGELOG.md"):
        shutil.copy(ROOT / name, root / name)
    shutil.copytree(ROOT / "docs", root / "docs")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet"], cwd=root, env=env, check=True, timeout=300
    )
    return root / "site" / "results" / "index.html"


@pytest.mark.slow  # two builds of the site
def test_the_docs_results_page_is_this_checkout_s_run_and_opens_offline(tmp_path):
    """Built where the page stage has written results/index.html, the site's Results page holds that run's
    findings and tables with its plots loaded; built where it has not, it says there is no run yet."""
    empty = tmp_path / "empty"
    empty.mkdir()
    text, images, _ = open_offline(build_docs(empty))
    assert "This checkout has no run's results yet" in text and FINDING not in text and images == []
    ran = tmp_path / "ran"
    (ran / "results").mkdir(parents=True)
    write_results(ran / "results", ran / "results" / "index.html")
    text, images, _ = open_offline(build_docs(ran))
    assert FINDING in text and "102.0" in text and "hopper-medium-v2" in text and "no run's results" not in text
    embedded = [w for src, w in images if src == "data:image/png;base64"]
    assert len(embedded) == 3 and all(w > 0 for w in embedded)


def test_a_damaged_image_is_seen_as_not_loaded(tmp_path):
    """The check above can fail: a PNG that is not one loads with no width."""
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "broken.png").write_bytes(b"not a png")
    (tmp_path / "r.md").write_text("# r\n")
    write_page(tmp_path / "index.html", [("r", tmp_path / "r.md", tmp_path / "plots")])
    _, images, _ = open_offline(tmp_path / "index.html")
    assert images == [["data:image/png;base64", 0]]


@pytest.fixture
def video_page(tmp_path) -> Path:
    """A results page with one rendered episode: a looping three-frame WebP, captioned from its videos.json."""
    import json

    from PIL import Image

    videos = tmp_path / "videos" / "hopper-medium-v2"
    videos.mkdir(parents=True)
    frames = [Image.new("RGB", (320, 240), colour) for colour in ("red", "blue", "green")]
    frames[0].save(videos / "target_3600.webp", save_all=True, append_images=frames[1:], duration=150, loop=0)
    entry = {"target": 3600.0, "seed": 1000, "return": 3312.4, "normalized_score": 102.4, "length": 1000}
    listing = {"env_id": "Hopper-v4", "videos": [{**entry, "file": "target_3600.webp"}]}
    (videos / "videos.json").write_text(json.dumps(listing))
    write_results(tmp_path, tmp_path / "index.html")  # the report, the suite and their plots
    report, suite = tmp_path / "ablations.md", tmp_path / "suite.md"
    sections = [("Ablations", report, tmp_path / "plots"), ("Suite", suite, tmp_path / "suite-plots")]
    write_page(tmp_path / "index.html", sections, videos=tmp_path / "videos")
    return tmp_path / "index.html"


CAPTION = "target 3600: return 3312, score 102.4, 1000 steps (reset seed 1000)"


def test_the_episode_videos_play_offline(video_page):
    """The render stage's videos, embedded: each loads, is captioned with its episode's record, and advances."""
    if CHROMIUM is None:
        open_offline(video_page)  # skips, or fails where a browser is required
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_context(offline=True).new_page()
        page.goto(video_page.resolve().as_uri(), wait_until="load")
        video = page.locator("figure.video img")
        seen = {video.screenshot()}
        for _ in range(6):
            page.wait_for_timeout(120)
            seen.add(video.screenshot())
        text = page.inner_text("body")
        assert video.evaluate("el => el.naturalWidth") == 320
        browser.close()
    assert len(seen) > 1  # the frames advance
    assert CAPTION in text and "Episodes" in text


def test_the_episode_videos_play_offline_in_firefox(video_page):
    """The same page in Firefox (Debian's ESR, over WebDriver BiDi): the animated WebP decodes, advances, and the
    page asks the network for nothing."""
    binary = shutil.which("firefox-esr") or shutil.which("firefox")
    if binary is None:
        if os.environ.get("DTREPRO_REQUIRE_BROWSER"):
            pytest.fail("DTREPRO_REQUIRE_BROWSER is set but Debian's firefox-esr is not installed")
        pytest.skip("Debian's firefox-esr is not installed (.ci/run installs it)")
    import json
    import time

    from support.firefox import firefox

    with firefox(binary) as call:
        context = call("browsingContext.getTree")["contexts"][0]["context"]
        call("browsingContext.navigate", context=context, url=video_page.resolve().as_uri(), wait="complete")

        def js(expression: str):
            return call("script.evaluate", expression=expression, target={"context": context}, awaitPromise=True)

        look = "const v = document.querySelector('figure.video img'); v.scrollIntoView(); "
        look += "JSON.stringify([v.naturalWidth, v.getBoundingClientRect(), document.body.innerText, "
        look += "performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith('data:'))])"
        width, box, text, asked = json.loads(js(look)["result"]["value"])
        clip = {"type": "box", **{k: box[k] for k in ("x", "y", "width", "height")}}
        seen = set()
        for _ in range(8):
            seen.add(call("browsingContext.captureScreenshot", context=context, clip=clip)["data"])
            time.sleep(0.12)
    assert width == 320 and len(seen) > 1 and asked == []  # loads, advances, nothing fetched
    assert CAPTION in text
