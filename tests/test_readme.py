"""Every command the README and the docs show exists as shown: make targets in the Makefile, `dtrepro` commands
that its parser accepts, `dvc` commands and options that DVC accepts; the cheap ones are run."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest

from dtrepro.pipeline.cli import parser

from helpers import ROOT, run

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CHEAP = {("dtrepro", "list"), ("dtrepro", "show")}  # run for real below


def commands() -> list[tuple[str, list[str]]]:
    """(page, argv) of every command line in the pages' sh blocks, comments and continuations joined."""
    found = []
    for page in PAGES:
        for block in re.findall(r"```sh\n(.*?)```", page.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split("  #")[0].strip()
                if line.startswith("#"):
                    continue
                for part in re.split(r"\s*(?:&&|;)\s*", line):
                    if part:
                        found.append((page.name, shlex.split(part)))
    return found


def _dvc_accepts(argv: list[str]) -> bool:
    """DVC's own parser accepts the command and its options (parsed, not run)."""
    code = "import sys; from dvc.cli.parser import get_main_parser; get_main_parser().parse_args(sys.argv[1:])"
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True).returncode == 0


@pytest.mark.parametrize("page,argv", commands(), ids=lambda x: " ".join(x) if isinstance(x, list) else x)
def test_a_shown_command_exists(page, argv):
    tool, args = argv[0], argv[1:]
    if tool == "make":
        targets = [a for a in args if "=" not in a]
        proc = run(["make", "-n", *targets], ROOT, env={"PROFILE": "demo"})
        assert proc.returncode == 0, f"{page}: make {' '.join(args)}: {proc.stderr}"
    elif tool == "dtrepro":
        parser().parse_args(args)  # exits (fails the test) on an unknown command or option
        if tuple(argv[:2]) in CHEAP:
            proc = run([sys.executable, "-m", "dtrepro.pipeline.cli", *args], ROOT)
            assert proc.returncode == 0, proc.stderr
    elif tool == "dvc":
        assert _dvc_accepts(args), f"{page}: DVC does not accept: {' '.join(argv)}"
    elif tool in ("docker", "git", "source", "pip", "torchrun", "apt-get", "python", "huggingface-cli"):
        pass  # other programs' commands, run where they are tested (make docker-test, the cluster and DDP tests)
    else:
        pytest.fail(f"{page}: a command of an unknown program: {' '.join(argv)}")


def test_the_readme_layout_is_the_tree_of_the_library_s_packages():
    """One line a folder, each package of src/dtrepro named once: fails when a package is added, moved or renamed
    without the README's layout following."""
    readme = (ROOT / "README.md").read_text()
    tree = re.search(r"## Layout\n\n.*?```text\n(.*?)```", readme, re.S).group(1).splitlines()
    packages = sorted(p.parent.name for p in (ROOT / "src/dtrepro").glob("*/__init__.py"))
    shown = sorted(line.split()[0].rstrip("/") for line in tree if line.startswith("  "))
    assert shown == packages
    assert all(len(line) <= 120 for line in tree)


def test_the_development_page_names_every_top_level_module():
    """The README's tree shows the packages; docs/development.md (which includes that tree) names each module
    beside them, so that a new one is placed as it is added."""
    page = (ROOT / "docs/development.md").read_text()
    assert '--8<-- "README.md:layout"' in page
    modules = [p.name for p in (ROOT / "src/dtrepro").glob("*.py") if p.name != "__init__.py"]
    assert [m for m in modules if f"`{m}`" not in page] == []


def test_the_extending_page_s_new_env_is_an_env_family_as_the_registry_defines_it():
    from dtrepro.registry.datasets import FAMILIES, EnvFamily

    line = re.search(r'^"ant": (EnvFamily\(.*\)),$', (ROOT / "docs" / "extending.md").read_text(), re.M).group(1)
    ant = eval(line, {"EnvFamily": EnvFamily})  # the page's own example, built with the registry's class
    assert ant.gym_name == "Ant" and ant.ref_scores == (-325.6, 3879.7)
    assert [type(getattr(ant, k)) for k in vars(ant)] == [type(getattr(FAMILIES["hopper"], k)) for k in vars(ant)]


def test_every_figure_the_pages_show_is_a_png_here_and_every_named_run_states_its_time():
    """The README leads with a figure: it (and any other page's) must be a committed PNG; each named run says how
    long it takes on a CPU and a GPU, and whether that was measured or is expected."""
    for page in PAGES:
        for target in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page.read_text()):
            image = (page.parent / target).resolve()
            assert image.is_file() and image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", (page.name, target)
    for profile in sorted((ROOT / "profiles").glob("*.yaml")):
        times = [line for line in profile.read_text().splitlines() if line.startswith("# time: ")]
        assert len(times) == 1 and "CPU" in times[0] and "GPU" in times[0], profile.name
        assert re.search(r"measured|expected|not measured", times[0]), profile.name


QUICK = (  # the README's commands that finish in minutes on a smoke run, in the README's order
    *("dtrepro list", "dtrepro show", "dtrepro compare", "dtrepro verify", "dvc metrics diff", "dvc exp show"),
    *("dvc exp run", "git checkout params.yaml"),
)


@pytest.mark.slow
def test_the_readmes_quick_commands_run_on_a_smoke_run(copy_done):
    """The README's commands that take under five minutes (after `dtrepro run smoke`, its first quickstart, which
    the smoke fixture runs on a fresh copy) succeed there as shown."""
    readme = [argv for page, argv in commands() if page == "README.md"]
    quick = [argv for argv in readme if " ".join(argv).startswith(QUICK)]
    assert {" ".join(argv[:2]) for argv in quick} >= {"dtrepro compare", "dtrepro verify", "dvc metrics", "dvc exp"}
    assert ["dtrepro", "run", "smoke"] in readme
    for argv in quick:
        argv = [sys.executable, "-m", "dtrepro.pipeline.cli", *argv[1:]] if argv[0] == "dtrepro" else argv
        argv = [re.sub(r"^eval\.episodes=\d+$", "eval.episodes=4", a) for a in argv]  # a smoke-sized evaluation
        proc = run(argv, copy_done, timeout=300)
        assert proc.returncode == 0, (argv, proc.stdout, proc.stderr)
